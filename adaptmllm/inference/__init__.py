"""Inference: batched translation with transformers (translate) and CTranslate2 (ct2).

May import: adaptmllm.modeling, data, metrics, reporting, config, io, languages, hardware; not training (a
sibling).
"""
