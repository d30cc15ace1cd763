"""Data: read parallel text in every corpus format (readers), clean and split it (pairs), the demo corpus (demo),
multilingual direction sampling (directions) and the general-domain test sets (test_sets).

May import: adaptmllm.config, io, languages, hardware. Nothing above (no models, no training).
"""
