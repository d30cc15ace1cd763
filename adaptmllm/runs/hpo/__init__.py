"""Hyperparameter search with Optuna: the search space (space), the study, its storage, locks and timings
(study), one trial (trial), trials.csv/plots/summary (artefacts), the best model scored into <run>/best
(final) and the driver, run_study (search).

May import: adaptmllm.runs.run_folder/pipeline and everything below runs.
"""
