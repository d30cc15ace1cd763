"""One trial: the objective that builds a fresh model and Trainer from the trial's config, reports the dev metric
per epoch to the pruner, tracks energy and peak memory, and frees memory before the next trial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Optional

from adaptmllm.config import Config, ConfigError, save_config
from adaptmllm.data.readers import DataError
from adaptmllm.hardware import PeakMemory, free_memory, rss_mb
from adaptmllm.inference.translate import generation_settings
from adaptmllm.io import atomic_write_json, temporary_env
from adaptmllm.modeling.model import ModelError
from adaptmllm.runs.hpo.space import suggest, tokenizer_dir
from adaptmllm.runs.hpo.study import HPOError, RankSync, Timer, locked, study_best
from adaptmllm.runs.run_folder import RunFolderError
from adaptmllm.training.deepspeed import consolidated_model
from adaptmllm.training.green import GreenTracker
from adaptmllm.training.setup import prepare_model
from adaptmllm.training.train import fine_tune

__all__ = ["PruningCallback", "trainer_callback"]

log = logging.getLogger("adaptmllm")


class TrialFailed(Exception):
    """A trial failed (its traceback is logged); the study goes on with the next trial."""


# ----------------------------------------------------------------------------- trainer callbacks

_CALLBACK_CLASSES: dict[type, type] = {}


def trainer_callback(cls: type, *args: Any, **kwargs: Any) -> Any:
    """An instance of ``cls`` (:class:`PruningCallback`, :class:`_RunName`) that is also a
    ``transformers.TrainerCallback`` (whose no-op events the Trainer calls): the subclass is made on first
    use, so that importing this module (and ``adaptmllm.cli``) does not import transformers."""
    if cls not in _CALLBACK_CLASSES:
        from transformers import TrainerCallback

        _CALLBACK_CLASSES[cls] = type(cls.__name__, (cls, TrainerCallback), {"__doc__": cls.__doc__})
    return _CALLBACK_CLASSES[cls](*args, **kwargs)

class PruningCallback:
    """Reports the dev metric to the Optuna ``trial`` after every evaluation and stops a trial the pruner prunes.

    ``trial.report(score, epoch)`` (score in ``metric`` units, 0-100; epoch counted from 1) is
    called on each dev evaluation after the first training step (the untouched model's score,
    at step 0, is not reported). When ``trial.should_prune()``, training stops at once
    (``control.should_training_stop``) so that the Trainer ends cleanly (progress bars, TensorBoard
    and MLflow runs closed, DeepSpeed engine freed by the caller); :attr:`pruned_at` then holds
    the epoch, and the caller raises ``optuna.TrialPruned``.
    """

    def __init__(self, trial: Any, metric: str, sync: Optional["RankSync"] = None) -> None:
        self.trial = trial
        self.metric = metric
        self.sync = sync
        self.pruned_at: Optional[int] = None
        self.reported: dict[int, float] = {}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        """Report ``metrics["eval_<metric>"]`` at the current epoch; stop training if the trial is pruned.

        With a :class:`RankSync` of several ranks, rank 0 decides (it alone holds the trial) and
        broadcasts the decision after every evaluation past step 0; the other ranks (``trial`` None)
        stop when it says so, so that every rank leaves training at the same step."""
        if state.global_step == 0:
            return control
        if self.sync is not None and not self.sync.is_main:
            self.pruned_at = self.pruned_at or self.sync.receive()
        else:
            value = (metrics or {}).get(f"eval_{self.metric}")
            if value is not None and self.pruned_at is None:
                step = max(1, int(round(state.epoch or 0)))
                self.trial.report(float(value), step)
                self.reported[step] = float(value)
                if self.trial.should_prune():
                    self.pruned_at = step
            if self.sync is not None:
                self.sync.send(self.pruned_at)
        if self.pruned_at is not None:
            control.should_training_stop = True
        return control


class _RunName:
    """Names the tracking run (MLflow) after the trial, before any tracking callback starts it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_init_end(self, args, state, control, **kwargs):
        """Set ``args.run_name`` (read by the MLflow callback when training begins)."""
        args.run_name = self.name
        return control


@contextlib.contextmanager
def _tracking_env(config: Config, hpo_dir: Path, trial_name: str, study_name: str) -> Iterator[None]:
    """Per-trial TensorBoard log folder (``hpo/tensorboard/trial-<n>``) and a local MLflow store
    (``hpo/mlflow.db``, one run per trial in an experiment named after the study), unless the user set
    MLflow's own variables."""
    env: dict[str, str] = {}
    if config.train.report_to == "tensorboard":
        env["TENSORBOARD_LOGGING_DIR"] = str((hpo_dir / "tensorboard" / trial_name).absolute())
    elif config.train.report_to == "mlflow":
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # a local store, no server (MLflow 3 retired ./mlruns folders)
            env["MLFLOW_TRACKING_URI"] = f"sqlite:///{(hpo_dir / 'mlflow.db').absolute()}"
        if not os.environ.get("MLFLOW_EXPERIMENT_NAME"):
            env["MLFLOW_EXPERIMENT_NAME"] = study_name
    try:
        with temporary_env(env):
            yield
    finally:
        if config.train.report_to == "mlflow":
            _end_mlflow_run()


def _end_mlflow_run() -> None:
    """End an MLflow run a failed trial left active, so that the next trial does not log into it."""
    import sys

    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status="FAILED")


class Objective:
    """One trial: suggest -> fresh model -> fine-tune (pruned, green-tracked) -> score -> free memory."""

    def __init__(self, config: Config, prepared: Any, hpo_dir: Path, timer: Timer, progress: bool) -> None:
        self.config = config
        self.prepared = prepared
        self.hpo_dir = hpo_dir
        self.timer = timer
        self.progress = progress
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.metric = config.train.metric_for_best_model
        self._baseline_known = False
        self.on_start: Any = None  # called with the trial number when a trial starts (progress bar)
        self.sync: Optional[RankSync] = None  # several ranks per trial: rank 0 tells the others (RankSync)

    def __call__(self, trial: Any) -> float:
        import optuna

        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except (ConfigError, DataError, ModelError, RunFolderError, HPOError):
            raise  # bad input: every trial would fail the same way, so stop the study
        except Exception as e:  # noqa: BLE001 - one failed trial (e.g. out of memory) must not end the study
            message = f"{type(e).__name__}: {e}"
            if self.sync is not None:
                # The other ranks may be inside a collective of the failed step: this worker cannot go on.
                # The trial is marked failed; the study goes on with the other workers (or a rerun).
                raise HPOError(f"trial {trial.number} failed on rank 0 of a {self.sync.world_size}-process worker "
                               f"({message}); this worker stops, rerun it to continue the study") from e
            log.warning("trial %d failed: %s\n%s", trial.number, message, traceback.format_exc())
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", message[:2000])
        # Here the exception and its traceback (which holds the Trainer) are gone: free the memory.
        with self.timer("cleanup"):
            free_memory()
        raise TrialFailed(message)

    def _run(self, trial: Any) -> float:
        import optuna

        t_start = time.perf_counter()
        rss_start = rss_mb()
        timer, cfg_base = self.timer, self.config
        if self.on_start is not None:
            self.on_start(trial.number)
        with timer("storage"):
            cfg = suggest(trial, cfg_base)
            name = f"trial-{trial.number}"
            trial_dir = self.hpo_dir / name
            trial.set_user_attr("worker", self.worker)
            if not self._baseline_known:
                self._baseline_known = "baseline_dev" in trial.study.user_attrs
            need_baseline = not self._baseline_known
        if trial_dir.exists():  # a leftover of an older study under the same name
            shutil.rmtree(trial_dir)
        save_config(cfg, trial_dir / "config.yaml")
        prepared = self.prepared
        with timer("model"), locked(self.hpo_dir / ".lock"):
            bundle = prepare_model(cfg, prepared.train.src + prepared.train.tgt,
                                   tokenizer_dir=tokenizer_dir(cfg), progress=False, reuse_tokenizer=True)
        pruning = trainer_callback(PruningCallback, trial, self.metric, self.sync)
        memory = PeakMemory()
        trainer = result = None
        with timer("tracking"):
            green = GreenTracker(cfg.green, trial_dir / "green", f"adaptmllm-{cfg.name}-{name}")
            green.__enter__()
        if self.sync is not None:  # the other ranks train this trial alongside (see _follow)
            self.sync.send({"action": "trial", "number": trial.number, "params": dict(trial.params),
                            "baseline": need_baseline})
        try:
            with _tracking_env(cfg, self.hpo_dir, name, trial.study.study_name), memory, timer("training"):
                trainer, result = fine_tune(
                    bundle.model, bundle.tokenizer, cfg.train, prepared.train.src, prepared.train.tgt,
                    prepared.dev.src, prepared.dev.tgt, trial_dir / "checkpoints", cfg.data.tgt_lang,
                    cfg.model.max_source_length, cfg.model.max_target_length, progress=self.progress,
                    callbacks=[pruning, trainer_callback(_RunName, f"{trial.study.study_name}-{name}")],
                    score_baseline_dev=need_baseline, generation=generation_settings(cfg))  # dev decoded as the test is
        finally:
            with timer("tracking"):
                green.__exit__(None, None, None)
        consolidate(trainer, result)
        if self.sync is not None:
            self.sync.barrier()  # every rank has loaded the best checkpoint before this one deletes them
        value = result.best_metric
        info: dict[str, Any] = {"rss_start_mb": round(rss_start, 1), "peak_rss_mb": round(memory.peak_rss_mb, 1),
                                "peak_cuda_mb": round(memory.peak_cuda_mb, 1), "global_step": result.global_step,
                                "train_runtime_s": round(result.train_runtime_s, 2),
                                "pruned_at_epoch": pruning.pruned_at}
        with timer("storage"):
            if need_baseline and result.baseline_dev is not None:
                trial.study.set_user_attr("baseline_dev", result.baseline_dev)
                self._baseline_known = True
            best_number, best_value = (None, None) if pruning.pruned_at is not None else study_best(trial.study)
        atomic_write_json(trial_dir / "history.json", result.history)
        keep = (pruning.pruned_at is None and value is not None and cfg_base.hpo.best_model == "keep"
                and (best_value is None or _better(self.metric, value, best_value)))
        if keep:  # best so far: keep its model (the others' are removed when the study is finalised)
            with timer("model"):
                trainer.model.save_pretrained(trial_dir / "model")
                bundle.tokenizer.save_pretrained(trial_dir / "model")
            info["model_dir"] = f"{socket.gethostname()}:{(trial_dir / 'model').absolute()}"
        with timer("cleanup"):
            if getattr(trainer, "is_deepspeed_enabled", False):
                trainer.accelerator.free_memory()  # destroys the DeepSpeed engine
            del trainer, bundle, result
            shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)
            free_memory()
            info["rss_after_cleanup_mb"] = round(rss_mb(), 1)
        info["trial_seconds"] = round(time.perf_counter() - t_start, 2)
        with timer("storage"):
            # Two writes: the whole GreenReport (figures, how they were obtained, caveats) and the rest.
            trial.set_user_attr("green", green.report.to_dict() if green.report else {})
            trial.set_user_attr("result", info)
        if pruning.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}: dev {self.metric} "
                                     f"{pruning.reported[pruning.pruned_at]:.2f}")
        if value is None:
            raise TrialFailed("no dev evaluation happened (train.max_steps shorter than one evaluation period?)")
        return float(value)


def consolidate(trainer: Any, result: Any) -> None:
    """Under ZeRO-3, gather the trained weights into ``trainer.model`` (collective: every rank calls it)."""
    if (result.memory_plan or {}).get("zero_stage") == 3:
        consolidated_model(trainer)


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric == "ter" else a > b
