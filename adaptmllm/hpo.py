"""Hyperparameter search with Optuna: each trial is a full fine-tuning run scored on the dev set.

    adaptmllm hpo --config configs/demo.yaml --hpo.n_trials 20 --hpo.timeout 3600

or from Python ``adaptmllm.hpo.run_study(config)``. The study lives in a real database (SQLite in
the run folder by default, any Optuna RDB URL such as PostgreSQL by ``hpo.storage``), so it
survives a kill (rerun the same command: finished trials are kept, a killed trial is failed by
its missing heartbeat and retried) and is shared by every worker process or machine pointed at
the same storage. A run folder ``<runs_dir>/<name>/`` holds::

    data/, tokenizer/        the splits (and the tiny model's vocabulary), shared by the trials
    hpo/study.db             the SQLite study (default storage)
    hpo/study_config.yaml    the config the study was started with
    hpo/trial-<n>/           per trial: config.yaml, history.json, green/emissions.csv,
                             model/ (best trial only; checkpoints are deleted after each trial)
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
import csv
import dataclasses
import gc
import io
import json
import logging
import math
import os
import shutil
import socket
import threading
import time
import traceback
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import optuna
from optuna.trial import TrialState
from transformers import TrainerCallback

from .config import (HPO_DIMENSIONS, Config, ConfigError, config_from_dict, config_to_dict, load_config,
                     mask_storage_url, save_config)
from .config import diff_dicts as _diff
from .io import atomic_write_json, atomic_write_text, spreadsheet_cell, temporary_env
from .run_folder import check_replaceable, mark_run_folder, remove_run_folder
from .translate import generation_settings, set_generation_config

__all__ = ["HPOError", "NoCompletedTrialError", "StudyResult", "suggest", "PruningCallback", "run_study",
           "storage_url", "open_study", "write_study_artefacts", "free_memory", "allowed_precisions",
           "load_study_config", "RankSync"]

log = logging.getLogger("adaptmllm")

_METRIC_NAMES = {"chrf": "chrF++", "bleu": "BLEU", "ter": "TER"}

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
"""Trial states that count towards ``hpo.n_trials``."""

_RUNTIME_KEYS = {"train": ("resume", "report_to", "logging_steps")}
"""Settings that may differ between the runs and workers of one study (they do not change what a trial means)."""


class HPOError(RuntimeError):
    """The study cannot run or continue (storage unreachable, settings differ from the study's);
    the message says the fix."""


class NoCompletedTrialError(HPOError):
    """Every trial of the study was pruned or failed, so there is no best model; the message gives
    the counts and what to change."""


class _TrialFailed(Exception):
    """A trial failed (its traceback is logged); the study goes on with the next trial."""


# ----------------------------------------------------------------------------- search space

_PRECISIONS_HERE: Optional[list[str]] = None


def allowed_precisions() -> list[str]:
    """Precisions this machine can train in: always fp32 and auto; fp16 with a CUDA GPU; bf16 with a
    CUDA GPU that supports it (Ampere or newer). Cached per process."""
    global _PRECISIONS_HERE
    if _PRECISIONS_HERE is None:
        import torch

        allowed = ["auto", "fp32"]
        if torch.cuda.is_available():
            allowed.append("fp16")
            if torch.cuda.is_bf16_supported():
                allowed.append("bf16")
        _PRECISIONS_HERE = allowed
    return list(_PRECISIONS_HERE)


def _precision_choices(choices: list[str]) -> list[str]:
    allowed = allowed_precisions()
    usable = [c for c in choices if c in allowed]
    if len(usable) < len(choices):
        log.debug("hpo.space.precision: %s cannot run here; searching %s", sorted(set(choices) - set(usable)), usable)
    return usable or ["fp32"]


def suggest(trial: Any, config: Config) -> Config:
    """The full config of one trial: ``config`` with every ``hpo.space`` dimension sampled by ``trial``.

    Ranges use ``trial.suggest_float`` (``suggest_int`` for integer fields, and for
    ``num_train_epochs`` with integer bounds), choices ``trial.suggest_categorical``; fixed values
    are set without asking the trial, empty entries keep ``train.<field>``. Precision choices this
    machine cannot run are dropped first (see :func:`allowed_precisions`); a single one left is
    set, not searched. ``train.resume`` is off: every trial trains from the untouched model. Works
    with ``optuna.trial.FixedTrial`` (give the searched dimensions only).

    Raises:
        ConfigError: a sampled value is invalid for ``train`` (naming the field).
        ValueError: a ``FixedTrial`` lacks a searched dimension (Optuna's error).
    """
    space = config.hpo.space
    values: dict[str, Any] = {"resume": False}
    for dim, kind in HPO_DIMENSIONS.items():
        spec = getattr(space, dim)
        if spec is None:
            continue
        if not isinstance(spec, dict):
            values[dim] = spec
            continue
        if "choices" in spec:
            choices = list(spec["choices"])
            if dim == "precision":
                choices = _precision_choices(choices)
            values[dim] = choices[0] if len(choices) == 1 else trial.suggest_categorical(dim, choices)
            continue
        low, high, log_scale, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
        as_int = kind == "int" or (kind == "number" and isinstance(low, int) and isinstance(high, int)
                                   and isinstance(step if step is not None else 1, int))
        if low == high:
            values[dim] = low
        elif as_int:
            values[dim] = trial.suggest_int(dim, int(low), int(high), step=int(step or 1), log=log_scale)
        else:
            values[dim] = trial.suggest_float(dim, float(low), float(high), step=step, log=log_scale)
    train = dataclasses.replace(config.train, **values)
    return dataclasses.replace(config, train=train)


def _max_epochs(config: Config) -> int:
    spec = config.hpo.space.num_train_epochs
    if isinstance(spec, dict):
        top = max(spec["choices"]) if "choices" in spec else spec["high"]
    else:
        top = spec if spec is not None else config.train.num_train_epochs
    return max(1, math.ceil(top / config.train.eval_every_epochs))


# ----------------------------------------------------------------------------- trainer callbacks

class PruningCallback(TrainerCallback):
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


class RankSync:
    """Rank 0 of a multi-process HPO worker telling its other ranks what to do (torch.distributed).

    Every rank constructs it (collective): it joins the launcher's process group (``env://``:
    ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``; gloo without CUDA, NCCL and gloo with)
    unless one exists, and opens a gloo group for small Python messages, whose timeout
    (``timeout_s``, seconds) covers rank 0's work between trials (storage, artefacts, the final test
    scoring). Messages (dicts, ints, None) go from rank 0 to all: :meth:`send` on rank 0,
    :meth:`receive` on the others, in the same order.
    """

    def __init__(self, timeout_s: float = 86_400.0) -> None:
        from datetime import timedelta

        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group()  # the launcher's env://; default backends for this build (gloo, NCCL)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that talks to the storage)."""
        return self.rank == 0

    def send(self, message: Any) -> None:
        """Broadcast ``message`` from rank 0 (call on rank 0 only; the others call :meth:`receive`)."""
        import torch.distributed as dist

        dist.broadcast_object_list([message], src=0, group=self.group)

    def barrier(self) -> None:
        """Wait until every rank got here (e.g. all finished reading a checkpoint before rank 0 deletes it)."""
        import torch.distributed as dist

        dist.barrier(group=self.group)

    def receive(self) -> Any:
        """The next message from rank 0 (blocks until it is sent)."""
        import torch.distributed as dist

        box = [None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]


class _RunName(TrainerCallback):
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


# ----------------------------------------------------------------------------- memory

class _PeakMemory:
    """Peak resident memory (MiB) of this process while the block runs, sampled every ``interval`` s
    in a thread, and the peak CUDA memory allocated by torch (MiB, 0 without a GPU)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_rss_mb = 0.0
        self.peak_cuda_mb = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss_mb = max(self.peak_rss_mb, self._rss())

    def __enter__(self) -> "_PeakMemory":
        import psutil
        import torch

        self._proc = psutil.Process()
        self.peak_rss_mb = self._rss()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._loop, name="adaptmllm-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        import torch

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, self._rss())
        if torch.cuda.is_available():
            self.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
        return False


def free_memory() -> None:
    """Free what a finished trial left behind, before the next trial builds its model: Python garbage
    (``gc.collect()``), the CUDA allocator's cache (``torch.cuda.empty_cache()``) and, when the trial
    ran under DeepSpeed, Accelerate's global DeepSpeed state and transformers' ZeRO-3 config, so that
    the next trial builds a fresh engine from its own config instead of reusing the last one's; on
    Linux the C heap's free pages go back to the OS (``malloc_trim``)."""
    gc.collect()
    try:
        from accelerate.state import AcceleratorState

        shared = AcceleratorState._shared_state
        if shared.get("deepspeed_plugins") or shared.get("deepspeed_plugin"):
            AcceleratorState._reset_state()
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            unset_hf_deepspeed_config()
    except ImportError:  # pragma: no cover - accelerate is a dependency
        pass
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _malloc_trim()


def _malloc_trim() -> None:
    """Give the C heap's free pages back to the OS (glibc only), so that freed tensors leave resident memory."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


# ----------------------------------------------------------------------------- storage and folders

def storage_url(config: Config) -> str:
    """The study's storage URL: ``hpo.storage``, or SQLite in ``<run folder>/hpo/study.db`` (absolute path)."""
    if config.hpo.storage:
        return config.hpo.storage
    return f"sqlite:///{(config.run_dir / 'hpo' / 'study.db').absolute()}"


def _masked(url: str) -> str:
    return mask_storage_url(url)


def _study_name(config: Config) -> str:
    return config.hpo.study_name or config.name


def _comparable(config: Config) -> dict:
    """The settings that define what a trial of the study means (what every run and worker must share)."""
    d = config_to_dict(config)
    out = {"data": d["data"], "model": d["model"], "train": dict(d["train"]),
           "hpo": {k: d["hpo"][k] for k in ("space", "sampler", "pruner", "pruner_startup_trials",
                                             "pruner_warmup_epochs")}}
    for key in _RUNTIME_KEYS["train"]:
        out["train"].pop(key, None)
    return json.loads(json.dumps(out, default=str))


def _make_sampler(config: Config, n_existing: int) -> Any:
    hpo = config.hpo
    # A resumed study continues the seeded stream instead of proposing its first trials again.
    seed = None if hpo.seed is None else hpo.seed + n_existing
    if hpo.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: running trials of other workers count as bad, so workers spread out.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _make_pruner(config: Config) -> Any:
    hpo = config.hpo
    if hpo.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=hpo.pruner_startup_trials,
                                           n_warmup_steps=hpo.pruner_warmup_epochs)
    if hpo.pruner == "hyperband":
        top = _max_epochs(config)
        return optuna.pruners.HyperbandPruner(min_resource=max(1, min(hpo.pruner_warmup_epochs, top)),
                                              max_resource=top, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(config: Config, n_existing_hint: int = 0) -> Any:
    """Create or load the study of ``config`` in its storage (see :func:`storage_url`).

    The storage has a heartbeat (``hpo.heartbeat_interval``, ``hpo.grace_period``): a trial whose
    process died is failed once its heartbeat is older than the grace period and retried with
    the same parameters (up to ``hpo.max_retry`` times). The direction follows
    ``train.metric_for_best_model`` (TER is minimised). The first process stores the study's
    settings in the study; later ones must match them.

    Raises:
        HPOError: the storage cannot be opened (with the URL, password hidden, and the fix), or
            the study was started with other settings (naming the fields).
    """
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    hpo = config.hpo
    url = storage_url(config)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=hpo.heartbeat_interval,
                                 grace_period=hpo.grace_period,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=hpo.max_retry))
        except ModuleNotFoundError as e:
            raise HPOError(f"hpo.storage: {_masked(url)} needs the database driver {e.name!r}: "
                           "pip install psycopg2-binary (PostgreSQL) or pymysql (MySQL)") from e
        except Exception as e:
            raise HPOError(f"hpo.storage: cannot open {_masked(url)} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                           "check that the database server runs and the URL, user and password are right") from e
    direction = "minimize" if config.train.metric_for_best_model == "ter" else "maximize"
    study = optuna.create_study(storage=storage, study_name=_study_name(config), direction=direction,
                                sampler=_make_sampler(config, n_existing_hint), pruner=_make_pruner(config),
                                load_if_exists=True)
    mine = _comparable(config)
    theirs = study.user_attrs.get("adaptmllm_config")
    if theirs is None:
        study.set_user_attr("adaptmllm_config", mine)
        study.set_user_attr("metric", config.train.metric_for_best_model)
    elif theirs != mine:
        raise HPOError(f"hpo: the study {study.study_name!r} in {_masked(url)} was started with other settings: "
                       f"{', '.join(_diff(theirs, mine))}. Use the same settings to continue it, another "
                       "--hpo.study_name (or --name) for a new study, or --overwrite true to start it over")
    if study.direction.name.lower() != direction:
        raise HPOError(f"train.metric_for_best_model: the study {study.study_name!r} was created to "
                       f"{study.direction.name.lower()}, not {direction}")
    # The sampler seed should continue after the trials already in the study.
    n_existing = len(study.get_trials(deepcopy=False))
    if n_existing != n_existing_hint and config.hpo.seed is not None:
        study.sampler = _make_sampler(config, n_existing)
    return study


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between the worker processes of this machine (no-op without fcntl)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prepare_folder(config: Config, prepared: Any) -> Path:
    """Create (or reopen) the run folder of a study; refuse a folder that holds something else."""
    from .data import save_splits
    from .pipeline import RunFolderError

    run_dir, hpo_dir = config.run_dir, config.run_dir / "hpo"
    marker = hpo_dir / "study_config.yaml"
    if run_dir.is_dir() and not marker.is_file():
        ours = {"hpo"} | {p.name for p in run_dir.iterdir() if p.name.startswith(".")}
        if not ({p.name for p in run_dir.iterdir()} <= ours
                and (not hpo_dir.is_dir() or {p.name for p in hpo_dir.iterdir()} <= {".lock", "study.db"})):
            raise RunFolderError(f"{run_dir} already holds another run; pass --overwrite true to replace it, or "
                                 "--name NAME for a new run folder")
    if marker.is_file() and not config.overwrite:
        try:
            before = load_config(marker)
        except ConfigError:
            before = None
        where = (_study_name(config), storage_url(config))
        if before is not None and (_study_name(before), storage_url(before)) != where:
            raise RunFolderError(f"{run_dir} holds the study {_study_name(before)!r} ({_masked(storage_url(before))}); "
                                 "use another --name for another study, or --overwrite true to replace it")
    hpo_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, marker)
    mark_run_folder(run_dir)
    if not (run_dir / "data" / "data_report.json").is_file():
        save_splits(prepared, run_dir / "data")
    return hpo_dir


def _overwrite(config: Config) -> None:
    """Delete the study (in its storage) and the run folder, for ``overwrite`` (only an adaptmllm run
    folder: :func:`adaptmllm.run_folder.check_replaceable` refuses anything else before the study is touched)."""
    check_replaceable(config.run_dir)
    url = storage_url(config)
    if config.hpo.storage:
        try:
            optuna.delete_study(study_name=_study_name(config), storage=url)
            log.info("overwrite: deleted study %s from %s", _study_name(config), _masked(url))
        except KeyError:
            pass
        except Exception as e:
            raise HPOError(f"hpo.storage: cannot open {_masked(url)} to delete the old study ({type(e).__name__}: "
                           f"{str(e).splitlines()[0]})") from e
    remove_run_folder(config.run_dir)


# ----------------------------------------------------------------------------- the objective

class _Timer:
    """Seconds spent per named part of the study (this process)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - t0


def _study_best(study: Any) -> tuple[Optional[int], Optional[float]]:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None, None
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    best = pick(done, key=lambda t: t.value)
    return best.number, best.value


class _Objective:
    """One trial: suggest -> fresh model -> fine-tune (pruned, green-tracked) -> score -> free memory."""

    def __init__(self, config: Config, prepared: Any, hpo_dir: Path, timer: _Timer, progress: bool) -> None:
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
        from .data import DataError
        from .model import ModelError
        from .pipeline import RunFolderError

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
        raise _TrialFailed(message)

    def _run(self, trial: Any) -> float:
        from .green import GreenTracker
        from .model import prepare_model
        from .train import fine_tune

        t_start = time.perf_counter()
        rss_start = _rss_mb()
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
        with timer("model"), _locked(self.hpo_dir / ".lock"):
            bundle = prepare_model(cfg, prepared.train.src + prepared.train.tgt,
                                   tokenizer_dir=cfg.run_dir / "tokenizer", progress=False, reuse_tokenizer=True)
        pruning = PruningCallback(trial, self.metric, self.sync)
        memory = _PeakMemory()
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
                    callbacks=[pruning, _RunName(f"{trial.study.study_name}-{name}")],
                    score_baseline_dev=need_baseline, generation=generation_settings(cfg))  # dev decoded as the test is
        finally:
            with timer("tracking"):
                green.__exit__(None, None, None)
        _consolidate(trainer, result)
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
            best_number, best_value = (None, None) if pruning.pruned_at is not None else _study_best(trial.study)
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
            info["rss_after_cleanup_mb"] = round(_rss_mb(), 1)
        info["trial_seconds"] = round(time.perf_counter() - t_start, 2)
        with timer("storage"):
            # Two writes: the whole GreenReport (figures, how they were obtained, caveats) and the rest.
            trial.set_user_attr("green", green.report.to_dict() if green.report else {})
            trial.set_user_attr("result", info)
        if pruning.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}: dev {self.metric} "
                                     f"{pruning.reported[pruning.pruned_at]:.2f}")
        if value is None:
            raise _TrialFailed("no dev evaluation happened (train.max_steps shorter than one evaluation period?)")
        return float(value)


def _consolidate(trainer: Any, result: Any) -> None:
    """Under ZeRO-3, gather the trained weights into ``trainer.model`` (collective: every rank calls it)."""
    if (result.memory_plan or {}).get("zero_stage") == 3:
        from .deepspeed import consolidated_model

        consolidated_model(trainer)


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
    import tempfile

    from .model import prepare_model
    from .pipeline import run
    from .train import fine_tune

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
            callbacks=[PruningCallback(None, metric, sync)], score_baseline_dev=msg["baseline"])
        _consolidate(trainer, result)
        sync.barrier()  # rank 0 deletes the checkpoints after this
        if getattr(trainer, "is_deepspeed_enabled", False):
            trainer.accelerator.free_memory()
        del trainer, bundle, result
        free_memory()


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric == "ter" else a > b


# ----------------------------------------------------------------------------- progress

class _Progress:
    """Study-level progress bar (trial n of N, best so far) above each trial's own bar; a line per trial."""

    def __init__(self, study: Any, n_trials: int, metric: str, enabled: bool) -> None:
        self.n_trials, self.metric, self.enabled = n_trials, metric, enabled
        self.name = study.study_name
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            done = len(study.get_trials(deepcopy=False, states=FINISHED))
            self.bar = tqdm(total=n_trials, initial=min(done, n_trials), desc=f"study {study.study_name}",
                            unit="trial", position=0, leave=True, dynamic_ncols=True)
            self._postfix(study)

    def _postfix(self, study: Any) -> None:
        number, value = _study_best(study)
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
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        self.bar.n = min(done, self.n_trials)
        self._postfix(study)
        self.bar.refresh()
        self.bar.write(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- artefacts

def _trial_rows(study: Any) -> list[dict]:
    params = list(dict.fromkeys(p for t in study.get_trials(deepcopy=False) for p in t.params))
    rows = []
    for t in study.get_trials(deepcopy=False):
        g = t.user_attrs.get("green") or {}
        r = t.user_attrs.get("result") or {}
        duration = ((t.datetime_complete - t.datetime_start).total_seconds()
                    if t.datetime_complete and t.datetime_start else None)
        row = {"number": t.number, "state": t.state.name, "value": t.value,
               "last_epoch": max(t.intermediate_values) if t.intermediate_values else None,
               **{f"param_{p}": t.params.get(p) for p in params},
               "duration_s": None if duration is None else round(duration, 2),
               "energy_kwh": g.get("energy_kwh"), "emissions_kg": g.get("emissions_kg"),
               "peak_rss_mb": r.get("peak_rss_mb"), "peak_cuda_mb": r.get("peak_cuda_mb"),
               "rss_after_cleanup_mb": r.get("rss_after_cleanup_mb"),
               "worker": t.user_attrs.get("worker"),
               "retry_of": t.system_attrs.get("failed_trial"),
               "error": t.user_attrs.get("error"),
               "datetime_start": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
               "datetime_complete": t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None}
        rows.append(row)
    return rows


def _write_trials_csv(study: Any, path: Path) -> Path:
    rows = _trial_rows(study)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: spreadsheet_cell(v) for k, v in row.items()} for row in rows)
    return atomic_write_text(path, buf.getvalue())


def _green_summary(study: Any) -> dict:
    per_trial, total = [], defaultdict(float)
    measured = True
    for t in study.get_trials(deepcopy=False):
        g = t.user_attrs.get("green")
        if not g:
            continue
        figures = ("energy_kwh", "emissions_kg", "duration_s", "cpu_energy_kwh", "gpu_energy_kwh", "ram_energy_kwh")
        per_trial.append({"number": t.number, "state": t.state.name, **{k: g.get(k) for k in figures},
                          "measured": bool(g.get("measured")), "tracking": g.get("tracking")})
        for k in figures:
            total[k] += g.get(k) or 0.0
        measured = measured and bool(g.get("measured"))
    note = ("Sum over every trial of the study (completed, pruned and failed): the search's full cost. "
            + ("" if measured and per_trial else "These are estimates, not measurements (see each trial's "
               "green/emissions.csv and the run report's energy section)."))
    return {"units": {"energy": "kWh", "emissions": "kgCO2eq", "duration": "s"}, "trials": per_trial,
            "total": {**dict(total), "n_trials": len(per_trial),
                      "measured": measured and bool(per_trial)},
            "note": note.strip()}


def _png(fig: Any, path: Path) -> Path:
    from .io import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _history_png(study: Any, label: str, path: Path) -> Path:
    """Optimisation history: each trial's dev score (pruned: its last reported score), best so far as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    done, line, pruned = _history_points(study)
    if done:
        ax.plot([n for n, _ in done], [v for _, v in done], "o", color="tab:blue", label="completed trial")
        ax.step([n for n, _ in line], [v for _, v in line], where="post", color="tab:red", label="best so far")
    if pruned:
        ax.plot([n for n, _ in pruned], [v for _, v in pruned], "x", color="grey", label="pruned trial (last score)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.set_title("Optimisation history")
    ax.grid(alpha=0.3)
    if done or pruned:
        ax.legend()
    return _png(fig, path)


def _importance_png(importances: dict, method: str, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(importances)[::-1]
    fig = Figure(figsize=(8, 0.5 * len(names) + 1.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(importances[n], i, f" {importances[n]:.2f}", va="center")
    ax.set_xlabel(f"importance for the dev score ({method})")
    ax.set_xlim(0, max(1.0, max(importances.values()) * 1.15))
    ax.set_title("Hyperparameter importance")
    return _png(fig, path)


def _importance_evaluator(notes: list[str]) -> Any:
    """fANOVA (Optuna's default; needs scikit-learn), else PED-ANOVA (no extra dependency), said in ``notes``."""
    try:
        import sklearn  # noqa: F401

        return optuna.importance.FanovaImportanceEvaluator(seed=0)
    except ImportError:
        notes.append("Parameter importance by PED-ANOVA: fANOVA needs scikit-learn (pip install scikit-learn).")
        return optuna.importance.PedAnovaImportanceEvaluator()


def _importances(study: Any, notes: list[str]) -> tuple[Optional[dict], str]:
    """Parameter importances (fANOVA with scikit-learn, else PED-ANOVA), or None with a note."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.params for t in complete):
        notes.append(f"Parameter importance skipped: it needs at least 2 completed trials with searched "
                     f"parameters ({len(complete)} completed).")
        return None, ""
    evaluator = _importance_evaluator(notes)
    method = "fANOVA" if isinstance(evaluator, optuna.importance.FanovaImportanceEvaluator) else "PED-ANOVA"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as e:  # e.g. every completed trial has the same parameters
        notes.append(f"Parameter importance skipped: {type(e).__name__}: {e}")
        return None, ""
    return {k: float(v) for k, v in values.items()}, method


def _history_points(study: Any) -> tuple[list, list, list]:
    """(completed (number, value), best-so-far (number, value), pruned (number, last reported value))."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    done = sorted((t.number, t.value) for t in trials if t.state == TrialState.COMPLETE and t.value is not None)
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in trials
              if t.state == TrialState.PRUNED and t.intermediate_values]
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    best, line = None, []
    for number, value in done:
        best = value if best is None else pick(best, value)
        line.append((number, best))
    return done, line, pruned


def _write_plots(study: Any, hpo_dir: Path, notes: list[str]) -> list[str]:
    """Optimisation history and parameter importance as PNG (matplotlib) and HTML (plotly), and each
    trial's dev score per epoch (the learning curves the pruner saw) as HTML. Returns the file names.

    The figures are drawn here rather than by ``optuna.visualization`` (which also imports pyplot):
    a study's plots then take well under a second. For slice, parallel-coordinate and timeline views,
    open the study with ``optuna-dashboard <storage URL>`` or ``optuna.visualization``."""
    written: list[str] = []
    label = f"dev {_METRIC_NAMES.get(study.user_attrs.get('metric'), 'score')}"
    importances, method = _importances(study, notes)
    try:
        written.append(_history_png(study, label, hpo_dir / "history.png").name)
        if importances:
            written.append(_importance_png(importances, method, hpo_dir / "importance.png").name)
    except Exception as e:  # a plot must never lose the study's results
        notes.append(f"PNG plots skipped: {type(e).__name__}: {e}")
    try:
        import plotly.graph_objects as go
    except ImportError as e:
        notes.append(f"HTML plots skipped: {e.name} is not installed (pip install plotly)")
        return written
    done, line, pruned = _history_points(study)

    def history() -> Any:
        fig = go.Figure(layout={"title": "Optimisation history", "xaxis_title": "trial", "yaxis_title": label})
        fig.add_scatter(x=[n for n, _ in done], y=[v for _, v in done], mode="markers", name="completed trial")
        fig.add_scatter(x=[n for n, _ in line], y=[v for _, v in line], mode="lines", line_shape="hv",
                        name="best so far")
        if pruned:
            fig.add_scatter(x=[n for n, _ in pruned], y=[v for _, v in pruned], mode="markers",
                            marker_symbol="x", name="pruned trial (last score)")
        return fig

    def importance() -> Any:
        names = list(importances)[::-1]
        return go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h"),
                         layout={"title": f"Hyperparameter importance ({method})",
                                 "xaxis_title": f"importance for the {label}"})

    def intermediate() -> Any:
        fig = go.Figure(layout={"title": "Dev score per epoch (what the pruner saw)", "xaxis_title": "epoch",
                                "yaxis_title": label})
        for t in study.get_trials(deepcopy=False):
            if t.intermediate_values:
                steps = sorted(t.intermediate_values)
                fig.add_scatter(x=steps, y=[t.intermediate_values[k] for k in steps], mode="lines+markers",
                                name=f"trial {t.number} ({t.state.name.lower()})")
        return fig

    figures = [("history", history), ("intermediate", intermediate)] + ([("importance", importance)]
                                                                      if importances else [])
    for stem, make in figures:
        try:
            make().write_html(str(hpo_dir / f"{stem}.html"), include_plotlyjs="directory")
            written.append(f"{stem}.html")
        except Exception as e:
            notes.append(f"{stem}.html skipped: {type(e).__name__}: {e}")
    return written


def _best_params_yaml(study: Any, config: Config, path: Path) -> Optional[Path]:
    import yaml

    number, value = _study_best(study)
    if number is None:
        return None
    best = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    cfg = suggest(optuna.trial.FixedTrial(best.params, number), config)
    cfg = dataclasses.replace(cfg, name=f"{config.name}-best", overwrite=False)
    data = config_to_dict(cfg)
    data.pop("hpo", None)
    head = [f"# Best trial {number} of study {study.study_name!r}: dev "
            f"{_METRIC_NAMES.get(study.user_attrs.get('metric'), 'score')} "
            f"{value:.4f}", "# Searched parameters:"]
    head += [f"#   {k}: {v!r}" for k, v in best.params.items()]
    head += ["# A config: adaptmllm run --config <this file> trains a model with these settings.", ""]
    return atomic_write_text(path, "\n".join(head) + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_study_artefacts(study: Any, config: Config, plots: bool = True, timings: Optional[dict] = None,
                          timer: Optional[_Timer] = None) -> dict:
    """Write the study folder ``<run folder>/hpo/``: ``trials.csv``, ``best_params.yaml`` (when a
    trial completed), ``green.json`` (energy per trial and in total), the plots (``plots``) and
    ``summary.json``. Returns the summary dict (counts per state, best trial and parameters, total
    energy in kWh and emissions in kgCO2eq, written files, notes)."""
    hpo_dir = config.run_dir / "hpo"
    notes: list[str] = []
    _write_trials_csv(study, hpo_dir / "trials.csv")
    best_yaml = _best_params_yaml(study, config, hpo_dir / "best_params.yaml")
    green = _green_summary(study)
    atomic_write_json(hpo_dir / "green.json", green)
    files = ["trials.csv", "green.json"] + (["best_params.yaml"] if best_yaml else [])
    if plots:
        with timer("artefacts.plots") if timer is not None else contextlib.nullcontext():
            files += _write_plots(study, hpo_dir, notes)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    number, value = _study_best(study)
    summary = {
        "study_name": study.study_name, "storage": _masked(storage_url(config)),
        "metric": config.train.metric_for_best_model, "direction": study.direction.name.lower(),
        "n_trials_target": config.hpo.n_trials, "counts": counts,
        "best_trial": number, "best_value": value,
        "best_params": next((t.params for t in trials if t.number == number), None),
        "baseline_dev": study.user_attrs.get("baseline_dev"),
        "green_total": green["total"], "files": files, "notes": notes,
    }
    if timings is not None:
        summary["timings_s"] = timings
    atomic_write_json(hpo_dir / "summary.json", summary)
    return summary


# ----------------------------------------------------------------------------- the best model

def _remove_other_models(study: Any, hpo_dir: Path, keep_number: Optional[int]) -> None:
    """Delete the models of finished trials other than the best one (running trials are left alone)."""
    finished = {t.number for t in study.get_trials(deepcopy=False)
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for folder in hpo_dir.glob("trial-*"):
        try:
            number = int(folder.name.split("-", 1)[1])
        except ValueError:
            continue
        if number in finished:
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            if number != keep_number:
                shutil.rmtree(folder / "model", ignore_errors=True)


def _finalize(study: Any, config: Config, prepared: Any, progress: bool, timer: _Timer,
              sync: Optional[RankSync] = None) -> Any:
    """Score the best trial's model (kept, or retrained) on the test set against the baseline into ``<run>/best/``."""
    import torch

    from .green import GreenReport
    from .model import forced_bos_token_id, load_pretrained, prepare_model
    from .pipeline import RunResult, _dev_better, run, score_model
    from .report import build_metrics, plot_history, write_metrics, write_model_card, write_report

    number, value = _study_best(study)
    best = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    cfg = suggest(optuna.trial.FixedTrial(best.params, number), config)
    hpo_dir, best_dir = config.run_dir / "hpo", config.run_dir / "best"
    trial_model = hpo_dir / f"trial-{number}" / "model"
    here = (trial_model / "config.json").is_file()
    if config.hpo.best_model == "retrain" or not here:
        if not here:
            log.warning("the best trial's model (trial %d, %s) is not on this machine: retraining it with its "
                        "parameters", number, (best.user_attrs.get("result") or {}).get("model_dir", "not kept"))
        final_cfg = dataclasses.replace(cfg, runs_dir=str(config.run_dir), name="best", overwrite=True)
        if sync is not None:  # the other ranks retrain alongside (adaptmllm.pipeline.run on ranks > 0)
            sync.send({"action": "run", "config": config_to_dict(final_cfg)})
        with timer("final"):
            result = run(final_cfg, progress=progress)
        result.metrics["retrained"] = True
        return result
    t0 = time.perf_counter()
    with timer("final"):
        if best_dir.exists():
            shutil.rmtree(best_dir)
        best_dir.mkdir(parents=True)
        save_config(dataclasses.replace(cfg, name="best", runs_dir=str(config.run_dir)), best_dir / "config.yaml")
        from .data import save_splits

        save_splits(prepared, best_dir / "data")
        test_src, test_ref = prepared.test.src, prepared.test.tgt
        device = "cuda" if torch.cuda.is_available() else "cpu"
        texts = prepared.train.src + prepared.train.tgt

        def base_bundle() -> Any:
            return prepare_model(cfg, texts, tokenizer_dir=config.run_dir / "tokenizer", progress=False,
                                 reuse_tokenizer=True)

        base = base_bundle()
        base_model, licence = base.base_model, base.licence
        baseline = None
        if cfg.eval.score_baseline:
            baseline = score_model(base.model.to(device), base.tokenizer, cfg, test_src, test_ref,
                                   best_dir / "baseline.hyp.txt", progress, "baseline: translating the test set")
        del base  # one model in memory at a time
        free_memory()
        baseline_dev = study.user_attrs.get("baseline_dev")
        metric = cfg.train.metric_for_best_model
        kept = "finetuned"
        if baseline_dev is not None and not _dev_better(metric, value, baseline_dev):
            kept = "baseline"
            log.warning("no trial beat the baseline on the dev set (%s %.2f vs %.2f): keeping the baseline",
                        metric, value, baseline_dev)
        model, tokenizer = load_pretrained(str(trial_model), cfg.data.src_lang, cfg.data.tgt_lang,
                                           local_files_only=True)
        finetuned = score_model(model.to(device), tokenizer, cfg, test_src, test_ref, best_dir / "finetuned.hyp.txt",
                                progress, "fine-tuned: translating the test set")
        n_params = sum(p.numel() for p in model.parameters())
        model_dir = best_dir / "model"
        if kept == "baseline":
            del model
            free_memory()
            model = base_bundle().model
        # generation_config.json: the test's decoding and target language, for a plain model.generate(**inputs)
        set_generation_config(model, generation_settings(cfg), forced_bos_token_id(tokenizer, cfg.data.tgt_lang))
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        del model
        history_src = hpo_dir / f"trial-{number}" / "history.json"
        history = json.loads(history_src.read_text()) if history_src.is_file() else []
        atomic_write_json(best_dir / "history.json", history)
        curves = plot_history(history, best_dir / "training_curves.png")
        green = GreenReport.from_dict(best.user_attrs["green"]).to_dict() if best.user_attrs.get("green") else None
        counts = {k: len(getattr(prepared, k)) for k in ("train", "dev", "test")}
        metrics = build_metrics({
            "baseline": baseline, "finetuned": finetuned, "green": green, "kept": kept,
            "best_checkpoint": str(trial_model),
            "dev": {"metric": metric, "baseline": baseline_dev, "best": value},
            "train": {"global_step": (best.user_attrs.get("result") or {}).get("global_step"),
                      "train_runtime_s": (best.user_attrs.get("result") or {}).get("train_runtime_s"),
                      "resumed_from": None,
                      "n_parameters": n_params},
            "data": counts, "total_runtime_s": round(time.perf_counter() - t0, 2),
        })
        write_metrics(best_dir, metrics)
        report = write_report(best_dir, cfg, metrics, prepared.report, str(curves) if curves else None)
        write_model_card(model_dir, cfg, metrics, base_model, licence)
    with timer("cleanup"):
        free_memory()
    return RunResult(best_dir, metrics, model_dir, report)


def _finalized(config: Config, number: Optional[int], counts: dict) -> Any:
    """The RunResult of ``<run>/best`` when it was written for this very state of the study (same best trial
    and trial counts), else None: rerunning a finished study does not score the test set again."""
    from .pipeline import RunResult

    best_dir = config.run_dir / "best"
    try:
        metrics = json.loads((best_dir / "metrics.json").read_text(encoding="utf-8"))
        json.loads((config.run_dir / "hpo" / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    hpo = metrics.get("hpo") or {}
    if number is None or hpo.get("best_trial") != number or hpo.get("counts") != counts:
        return None
    return RunResult(best_dir, metrics, best_dir / "model", best_dir / "report.md")


def _hpo_markdown(summary: dict, best_dir: Path) -> str:
    c = summary["counts"]
    g = summary["green_total"]
    metric = _METRIC_NAMES.get(summary["metric"], summary["metric"])
    lines = ["", "## Hyperparameter search", "",
             f"Optuna study `{summary['study_name']}` ({summary['storage']}): {c.get('complete', 0)} trials completed, "
             f"{c.get('pruned', 0)} pruned, {c.get('fail', 0)} failed; objective: dev {metric} "
             f"({summary['direction']}). This model comes from trial {summary['best_trial']} "
             f"(dev {metric} {summary['best_value']:.2f}"
             + (f"; untouched model: {summary['baseline_dev']:.2f}" if summary.get("baseline_dev") is not None else "")
             + ").", "", "| Parameter | Best value |", "|---|---|"]
    lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in (summary.get("best_params") or {}).items()]
    lines += ["", f"**Energy of the whole search: {g.get('energy_kwh', 0):.3g} kWh, "
                  f"{g.get('emissions_kg', 0):.3g} kgCO2eq "
                  f"over {g.get('n_trials', 0)} trials** (per trial: `hpo/trials.csv`, `hpo/green.json`); the energy "
                  "section above covers the kept trial's fine-tuning only."
                  + ("" if g.get("measured") else " Estimates, not measurements."), ""]
    hpo_rel = os.path.relpath((best_dir.parent / "hpo").absolute(), best_dir.absolute())
    for stem, title in (("history", "Optimisation history"), ("importance", "Parameter importance")):
        if f"{stem}.png" in summary["files"]:
            lines += [f"![{title}]({hpo_rel}/{stem}.png)", ""]
    lines += [f"- {n}" for n in summary.get("notes") or []]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the study

@dataclass
class StudyResult:
    """What :func:`run_study` produced.

    Attributes:
        study_name: the study's name in its storage; storage: its URL (password hidden).
        counts: trials per state (``complete``, ``pruned``, ``fail``, ``running``, ``waiting``), over all workers.
        best_trial, best_value, best_params: the best completed trial, its dev score (0-100) and searched parameters.
        best_config: the best trial's full :class:`~adaptmllm.config.Config`.
        run: the best model scored on the test set (a :class:`~adaptmllm.pipeline.RunResult` for
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
        ConfigError, RunFolderError, adaptmllm.data.DataError, adaptmllm.model.ModelError: bad input.
        HPOError: storage unreachable, or settings that differ from the study's (naming the fields).
        NoCompletedTrialError: every trial was pruned or failed (artefacts are written first).
    """
    from .data import prepare_data

    if isinstance(config, dict):
        config = config_from_dict(config)
    if not isinstance(config, Config):
        raise ConfigError(f"config: expected adaptmllm.Config or a dict, got {type(config).__name__}")
    from .deepspeed import world_size

    sync = None
    if world_size() > 1:  # several processes train each trial: rank 0 alone talks to the storage
        _check_multi_process(config)
        sync = RankSync()
    timer = _Timer()
    t0 = time.perf_counter()
    with timer("data"):
        prepared = prepare_data(config.data)  # bad input fails before the run folder is touched
    if sync is not None and not sync.is_main:
        return _follow(config, prepared, sync)
    with timer("setup"):
        if config.overwrite:
            _overwrite(config)
        hpo_dir = _prepare_folder(config, prepared)
    with timer("storage_open"):
        study = open_study(config)
        with _locked(hpo_dir / ".lock"):
            for params in config.hpo.enqueue:
                study.enqueue_trial(dict(params), skip_if_exists=True)
    metric = config.train.metric_for_best_model
    objective = _Objective(config, prepared, hpo_dir, timer, progress)
    objective.sync = sync
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = config.hpo.n_trials - done
    trials_run: list[int] = []
    if remaining > 0:
        log.info("study %s: %d of %d trials finished; running up to %d more (storage %s)", study.study_name,
                 done, config.hpo.n_trials, remaining, _masked(storage_url(config)))
    bar = _Progress(study, config.hpo.n_trials, metric, progress)
    objective.on_start = bar.start

    def after_trial(study_: Any, trial: Any) -> None:
        trials_run.append(trial.number)
        with timer("trials_csv"):
            _write_trials_csv(study_, hpo_dir / "trials.csv")
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
            study.optimize(objective, n_trials=remaining, timeout=config.hpo.timeout, catch=(_TrialFailed,),
                           callbacks=[optuna.study.MaxTrialsCallback(config.hpo.n_trials, states=FINISHED),
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
    number, value = _study_best(study)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    done_before = _finalized(config, number, counts) if config.hpo.finalize and not trials_run else None
    if done_before is not None:
        log.info("study %s unchanged since it was finalised: %s", study.study_name, done_before.report)
        run_result = done_before
        summary = json.loads((hpo_dir / "summary.json").read_text(encoding="utf-8"))
    elif config.hpo.finalize:
        with _locked(hpo_dir / ".lock"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                with contextlib.suppress(Exception):
                    optuna.storages.fail_stale_trials(study)
            with timer("artefacts"):
                summary = write_study_artefacts(study, config, plots=config.hpo.plots, timer=timer)
            if number is not None:
                _remove_other_models(study, hpo_dir, number if config.hpo.best_model == "keep" else None)
                run_result = _finalize(study, config, prepared, progress, timer, sync)
                with timer("artefacts"):
                    summary["best_run"] = str(run_result.run_dir)
                    run_result.metrics["hpo"] = {k: summary[k] for k in (
                        "study_name", "storage", "metric", "counts", "best_trial", "best_value", "best_params",
                        "baseline_dev", "green_total")}
                    atomic_write_json(run_result.run_dir / "metrics.json", run_result.metrics)
                    text = run_result.report.read_text(encoding="utf-8")
                    atomic_write_text(run_result.report,
                                      text.rstrip("\n") + "\n" + _hpo_markdown(summary, run_result.run_dir))
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
    return StudyResult(study.study_name, _masked(storage_url(config)), counts, number, value, dict(best.params),
                       best_config, run_result, hpo_dir, summary, timings, trials_run)


def load_study_config(run_dir: str | os.PathLike) -> Config:
    """The config a study was started with (``<run_dir>/hpo/study_config.yaml``).

    Raises:
        ConfigError: the file is missing or invalid.
    """
    return load_config(Path(run_dir) / "hpo" / "study_config.yaml")
