"""Hyperparameter search with Optuna: each trial is a full fine-tuning run scored on the dev set.

    adaptmllm hpo --config configs/demo.yaml --hpo.n_trials 20 --hpo.timeout 3600

or from Python ``adaptmllm.runs.hpo.search.run_study(config)``. The study lives in a real database (SQLite in
the run folder by default, any Optuna RDB URL such as PostgreSQL by ``hpo.storage``), so it
survives a kill (rerun the same command: finished trials are kept, a killed trial is failed by
its missing heartbeat and retried) and is shared by every worker process or machine pointed at
the same storage. A run folder ``<runs_dir>/<name>/`` holds::

    data/, tokenizer/        the splits (and the tiny model's vocabulary), shared by the trials
    tokenizer-v<size>/       instead of tokenizer/ when hpo.space.vocab_size is set: one
                             SentencePiece model per vocabulary size, shared by the trials of that size
    hpo/study.db             the SQLite study (default storage)
    hpo/study_config.yaml    the config the study was started with
    hpo/trial-<n>/           per trial: config.yaml (its sampled train.* and model.tiny.* values),
                             history.json, green/emissions.csv, model/ (best trial only, with its own
                             tokenizer; checkpoints are deleted after each trial)
    hpo/trials.csv           one row per trial: state, dev score, parameters, time, energy, memory
    hpo/best_params.yaml     the best trial's config (``adaptmllm run --config`` loads it)
    hpo/green.json           energy (kWh) and emissions (kgCO2eq) per trial and the study's total
    hpo/history.png|html     optimisation history; importance.png|html: parameter importance
                             (fANOVA with scikit-learn, else PED-ANOVA); intermediate.html: dev score per epoch
    hpo/summary.json         counts, best trial, timings, total energy
    best/                    the best model scored on the test set against the baseline, laid out
                             as ``adaptmllm run`` lays out a run folder (model/, metrics.json, report.md)

A worker may itself be several processes training each trial together (``torchrun --nproc_per_node
2 -m adaptmllm.cli hpo ...`` or the DeepSpeed launcher): rank 0 alone talks to the Optuna storage and
writes the run folder; it broadcasts each trial's number, parameters and pruning decisions to the
other ranks (:class:`RankSync`), which train alongside it and never open the storage.

Units: seconds, kWh, kgCO2eq, MiB; dev and test scores are sacrebleu's (0-100).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import Config, ConfigError, config_from_dict
from adaptmllm.data.pairs import prepare_data
from adaptmllm.hardware import free_memory, world_size
from adaptmllm.io import atomic_write_json
from adaptmllm.runs.hpo.artefacts import hpo_markdown, write_study_artefacts, write_trials_csv
from adaptmllm.runs.hpo.final import finalize_best, finalized_best, remove_other_models
from adaptmllm.runs.hpo.space import suggest
from adaptmllm.runs.hpo.study import (NoCompletedTrialError, RankSync, Timer, finished_states, locked, masked_url,
                                      open_study, overwrite, prepare_folder, storage_url, study_best)
from adaptmllm.runs.hpo.trial import Objective, PruningCallback, TrialFailed, consolidate, trainer_callback
from adaptmllm.runs.pipeline import run
from adaptmllm.training.setup import prepare_model
from adaptmllm.training.train import fine_tune

__all__ = ["StudyResult", "run_study"]

log = logging.getLogger("adaptmllm")


def _check_multi_process(config: Config) -> None:
    if config.model.name_or_path == "tiny" and config.data.train is not None:
        raise ConfigError("model.name_or_path: multi-process HPO workers need a pretrained model (the demo base or "
                          "an NLLB checkpoint); the tiny model trained from scratch is a single-process CPU demo")


def _follow(config: Config, prepared: Any, sync: RankSync) -> None:
    """What a rank other than 0 of a multi-process HPO worker does: wait for rank 0's messages and train
    each trial alongside it with the same parameters (rebuilt with ``optuna.trial.FixedTrial``), the same
    baseline evaluation and the same pruning decisions; run the final retraining alongside it when rank 0
    retrains the best trial; return at ``stop``. Never opens the Optuna storage and writes nothing of
    the run folder (its own part of each checkpoint aside)."""
    import optuna
    import tempfile

    metric = config.train.metric_for_best_model
    while True:
        msg = sync.receive()
        if msg["action"] == "stop":
            return None
        if msg["action"] == "run":
            run(config_from_dict(msg["config"]), progress=False)
            continue
        cfg = suggest(optuna.trial.FixedTrial(msg["params"], msg["number"]), config)
        with tempfile.TemporaryDirectory(prefix="adaptmllm-rank-") as tok_dir:
            bundle = prepare_model(cfg, prepared.train.src + prepared.train.tgt, tokenizer_dir=tok_dir, progress=False)
        trainer, result = fine_tune(
            bundle.model, bundle.tokenizer, cfg.train, prepared.train.src, prepared.train.tgt, prepared.dev.src,
            prepared.dev.tgt, config.run_dir / "hpo" / f"trial-{msg['number']}" / "checkpoints", cfg.data.tgt_lang,
            cfg.model.max_source_length, cfg.model.max_target_length, progress=False,
            callbacks=[trainer_callback(PruningCallback, None, metric, sync)], score_baseline_dev=msg["baseline"])
        consolidate(trainer, result)
        sync.barrier()  # rank 0 deletes the checkpoints after this
        if getattr(trainer, "is_deepspeed_enabled", False):
            trainer.accelerator.free_memory()
        del trainer, bundle, result
        free_memory()


# ----------------------------------------------------------------------------- progress

class _Progress:
    """Study-level progress bar (trial n of N, best so far) above each trial's own bar; a line per trial."""

    def __init__(self, study: Any, n_trials: int, metric: str, enabled: bool) -> None:
        self.n_trials, self.metric, self.enabled = n_trials, metric, enabled
        self.name = study.study_name
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            done = len(study.get_trials(deepcopy=False, states=finished_states()))
            self.bar = tqdm(total=n_trials, initial=min(done, n_trials), desc=f"study {study.study_name}",
                            unit="trial", position=0, leave=True, dynamic_ncols=True)
            self._postfix(study)

    def _postfix(self, study: Any) -> None:
        number, value = study_best(study)
        if self.bar is not None and value is not None:
            self.bar.set_postfix_str(f"best dev {self.metric} {value:.2f} (trial {number})")

    def start(self, number: int) -> None:
        """A trial starts in this process: show its number and its place among the N."""
        if self.bar is not None:
            self.bar.set_description(f"study {self.name}: trial {number} ({min(self.bar.n + 1, self.n_trials)} "
                                     f"of {self.n_trials})")

    def __call__(self, study: Any, trial: Any) -> None:
        state = trial.state.name.lower()
        score = f"{trial.value:.2f}" if trial.value is not None else "n/a"
        line = f"trial {trial.number} {state}: dev {self.metric} {score} {trial.params}"
        if self.bar is None:
            log.info("%s", line)
            return
        done = len(study.get_trials(deepcopy=False, states=finished_states()))
        self.bar.n = min(done, self.n_trials)
        self._postfix(study)
        self.bar.refresh()
        self.bar.write(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- the study

@dataclass
class StudyResult:
    """What :func:`run_study` produced.

    Attributes:
        study_name: the study's name in its storage; storage: its URL (password hidden).
        counts: trials per state (``complete``, ``pruned``, ``fail``, ``running``, ``waiting``), over all workers.
        best_trial, best_value, best_params: the best completed trial, its dev score (0-100) and searched parameters.
        best_config: the best trial's full :class:`~adaptmllm.config.Config`.
        run: the best model scored on the test set (a :class:`~adaptmllm.runs.run_folder.RunResult` for
            ``<run folder>/best``), None with ``hpo.finalize`` off.
        hpo_dir: the study folder ``<run folder>/hpo``.
        summary: the content of ``hpo/summary.json``.
        timings: seconds of this process per part: the machine-learning work (``data``, ``model``:
            building and saving models, ``training``: fine-tuning with its dev evaluations, ``final``:
            test scoring) and the study's own (``setup``: folders, ``storage_open``, ``storage``: Optuna
            calls of the trials, ``tracking``: energy tracker start/stop, ``cleanup``: freeing memory
            and checkpoints, ``trials_csv``, ``artefacts``: the study folder at the end, of which
            ``artefacts.plots``); ``total``; ``overhead`` = total minus the machine-learning work
            (so Optuna's own sampling and heartbeat count too) and ``overhead_share`` = overhead / total.
        trials_run: trial numbers this process ran.
    """

    study_name: str
    storage: str
    counts: dict
    best_trial: Optional[int]
    best_value: Optional[float]
    best_params: Optional[dict]
    best_config: Optional[Config]
    run: Any
    hpo_dir: Path
    summary: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    trials_run: list = field(default_factory=list)


def run_study(config: Config | dict, progress: bool = True) -> Optional[StudyResult]:
    """Run (or resume, or join) the Optuna study of ``config`` and score its best model.

    Finishes ``hpo.n_trials`` trials (completed or pruned, counted over every run and worker of
    the study; this process tries at most the number still missing, and stops after
    ``hpo.timeout`` seconds). Each trial builds a fresh model and Trainer from its own config
    (:func:`suggest`), reports the dev metric after every epoch to the pruner, is tracked for
    energy, and frees its memory before the next starts. Then (``hpo.finalize``) writes the study
    artefacts (see the module docstring) and scores the best model on the test set against the
    baseline into ``<run folder>/best/``, as ``adaptmllm run`` does.

    Launched as several processes (``torchrun``, ``WORLD_SIZE`` > 1), each trial is trained by all of
    them: rank 0 runs the study as above and returns the result; the other ranks train alongside it
    (:class:`RankSync`) and return None.

    Raises:
        ConfigError, RunFolderError, adaptmllm.data.readers.DataError, adaptmllm.modeling.model.ModelError: bad input.
        HPOError: storage unreachable, or settings that differ from the study's (naming the fields).
        NoCompletedTrialError: every trial was pruned or failed (artefacts are written first).
    """
    import optuna
    from optuna.trial import TrialState

    if isinstance(config, dict):
        config = config_from_dict(config)
    if not isinstance(config, Config):
        raise ConfigError(f"config: expected adaptmllm.Config or a dict, got {type(config).__name__}")

    if config.hpo.space.model_dims() and config.data.train is None and config.model.tiny.pretrain:
        log.warning("hpo.space.%s: the demo's tiny model starts from the demo base, which is pretrained once per "
                    "set of model.tiny sizes (about two minutes each on 2 CPU cores, then cached); set "
                    "model.tiny.pretrain false to train each trial's model from scratch instead",
                    config.hpo.space.model_dims()[0])
    sync = None
    if world_size() > 1:  # several processes train each trial: rank 0 alone talks to the storage
        _check_multi_process(config)
        sync = RankSync()
    timer = Timer()
    t0 = time.perf_counter()
    with timer("data"):
        prepared = prepare_data(config.data)  # bad input fails before the run folder is touched
    if sync is not None and not sync.is_main:
        return _follow(config, prepared, sync)
    with timer("setup"):
        if config.overwrite:
            overwrite(config)
        hpo_dir = prepare_folder(config, prepared)
    with timer("storage_open"):
        study = open_study(config)
        with locked(hpo_dir / ".lock"):
            for params in config.hpo.enqueue:
                study.enqueue_trial(dict(params), skip_if_exists=True)
    metric = config.train.metric_for_best_model
    objective = Objective(config, prepared, hpo_dir, timer, progress)
    objective.sync = sync
    done = len(study.get_trials(deepcopy=False, states=finished_states()))
    remaining = config.hpo.n_trials - done
    trials_run: list[int] = []
    if remaining > 0:
        log.info("study %s: %d of %d trials finished; running up to %d more (storage %s)", study.study_name,
                 done, config.hpo.n_trials, remaining, masked_url(storage_url(config)))
    bar = _Progress(study, config.hpo.n_trials, metric, progress)
    objective.on_start = bar.start

    def after_trial(study_: Any, trial: Any) -> None:
        trials_run.append(trial.number)
        with timer("trials_csv"):
            write_trials_csv(study_, hpo_dir / "trials.csv")
        bar(study_, trial)

    old_verbosity = optuna.logging.get_verbosity()
    if progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The libraries' own objects never become garbage: freeze them, so that the full collection
    # after each trial only walks what the trial created (about 0.6 s less per trial).
    with timer("cleanup"):
        gc.collect()
        gc.freeze()
    try:
        if remaining > 0:
            study.optimize(objective, n_trials=remaining, timeout=config.hpo.timeout, catch=(TrialFailed,),
                           callbacks=[optuna.study.MaxTrialsCallback(config.hpo.n_trials, states=finished_states()),
                                      after_trial])
        else:
            log.info("study %s already has %d finished trials (hpo.n_trials %d): nothing to run", study.study_name,
                     done, config.hpo.n_trials)
    finally:
        bar.close()
        optuna.logging.set_verbosity(old_verbosity)
        gc.unfreeze()

    run_result = None
    summary: dict = {}
    number, value = study_best(study)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    done_before = finalized_best(config, number, counts) if config.hpo.finalize and not trials_run else None
    if done_before is not None:
        log.info("study %s unchanged since it was finalised: %s", study.study_name, done_before.report)
        run_result = done_before
        summary = json.loads((hpo_dir / "summary.json").read_text(encoding="utf-8"))
    elif config.hpo.finalize:
        with locked(hpo_dir / ".lock"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                with contextlib.suppress(Exception):
                    optuna.storages.fail_stale_trials(study)
            with timer("artefacts"):
                summary = write_study_artefacts(study, config, plots=config.hpo.plots, timer=timer)
            if number is not None:
                remove_other_models(study, hpo_dir, number if config.hpo.best_model == "keep" else None)
                hpo = {k: summary[k] for k in ("study_name", "storage", "metric", "counts", "best_trial", "best_value",
                                               "best_params", "baseline_dev", "green_total")}
                run_result = finalize_best(study, config, prepared, progress, timer, sync, hpo=hpo,
                                           hpo_markdown=hpo_markdown(summary, config.run_dir / "best"))
                summary["best_run"] = str(run_result.run_dir)
    if sync is not None:
        sync.send({"action": "stop"})  # the other ranks return
    timings = dict(timer.seconds)
    timings["total"] = time.perf_counter() - t0
    work = sum(timings.get(k, 0.0) for k in ("data", "model", "training", "final"))
    timings["overhead"] = max(0.0, timings["total"] - work)
    timings["overhead_share"] = timings["overhead"] / timings["total"] if timings["total"] > 0 else 0.0
    timings = {k: round(v, 4) for k, v in timings.items()}
    if summary and done_before is None:
        summary["timings_s"] = timings
        atomic_write_json(hpo_dir / "summary.json", summary)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    if number is None:
        raise NoCompletedTrialError(
            f"study {study.study_name!r}: no trial completed ({counts['pruned']} pruned, {counts['fail']} failed, "
            f"{counts['running']} still running elsewhere), so there is no best model. "
            + ("Failed trials logged their errors (see hpo/trials.csv, column error). " if counts["fail"] else "")
            + ("Every finished trial was pruned: use --hpo.pruner none, or raise --hpo.pruner_warmup_epochs / "
               "--hpo.pruner_startup_trials. " if counts["pruned"] and not counts["fail"] else "")
            + "Run the same command again (with a larger --hpo.n_trials) to continue the study.")
    best = next(t for t in trials if t.number == number)
    best_config = suggest(optuna.trial.FixedTrial(best.params, number), config)
    return StudyResult(study.study_name, masked_url(storage_url(config)), counts, number, value, dict(best.params),
                       best_config, run_result, hpo_dir, summary, timings, trials_run)
