"""Evaluation: score a model on a set, the forgetting check and per-checkpoint scores (scoring),
significance/error analysis from a run's translations (outputs), the human evaluation store (human) and its
summary (human_report).

May import: adaptmllm.inference, training and everything below them.
"""
