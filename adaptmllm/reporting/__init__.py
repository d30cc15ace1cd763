"""Reporting: metrics.json and the verdict (summary), report blocks (blocks), report.md and the model card
(markdown), the self-contained report.html (html), plots (plots).

May import: adaptmllm.config, io, languages, hardware (and adaptmllm.metrics' siblings never).
"""
