"""Runs: the drivers that write a run folder. run_folder (prepare and finish: the one end of every run), pipeline
(one direction), multilingual (several), evaluate (re-evaluate a finished run, select a checkpoint),
backtranslate, hpo/ (the Optuna study).

May import: adaptmllm.evaluation and everything below.
"""
