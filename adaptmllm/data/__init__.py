"""Data: load, clean and split parallel text (pairs), the demo corpus (demo), multilingual direction sampling
(directions) and the general-domain test sets (test_sets).

May import: adaptmllm.config, io, languages, hardware. Nothing above (no models, no training).
"""
