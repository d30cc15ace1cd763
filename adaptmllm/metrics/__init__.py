"""Metrics: corpus BLEU/chrF++/TER/spBLEU/COMET with sacrebleu signatures (corpus), the paired bootstrap test
(significance) and the per-segment error analysis (analysis).

May import: adaptmllm.config, io, languages, hardware.
"""
