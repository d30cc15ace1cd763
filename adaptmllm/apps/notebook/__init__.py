"""The notebook's helpers: the config form (forms) and the results views, live plot and set-up checks (results).

May import: adaptmllm.apps.playground, runs and below.
"""
