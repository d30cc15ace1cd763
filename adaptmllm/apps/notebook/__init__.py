"""The notebook's helpers: the config form's fields, generated from the config dataclasses (fields), the
form itself (forms), the set-up checks: machine, Drive, quiet output, memory plan, data preview (setup), and
the results views, live plot, playground and headless notebook runs (results).

May import: adaptmllm.apps.playground, runs and below.
"""
