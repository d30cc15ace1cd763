"""The study of ``adaptmllm hpo``: its storage (SQLite or a server URL, the password masked), sampler and
pruner, opening or joining it with the same settings, the run folder's file lock, the study folder, the
settings a worker may change (:data:`_RUNTIME_KEYS`), the rank-0-to-others messages of a multi-GPU trial
(:class:`RankSync`), wall-time accounting (:class:`Timer`) and the best trial.

Optuna is imported inside the functions that use it (so that ``import adaptmllm.cli`` stays light).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Optional

from adaptmllm.config import (Config, ConfigError, config_to_dict, diff_dicts as _diff, load_config,
                              mask_storage_url, save_config)
from adaptmllm.data.pairs import save_splits
from adaptmllm.runs.hpo.space import max_epochs
from adaptmllm.runs.run_folder import RunFolderError, check_replaceable, mark_run_folder, remove_run_folder

__all__ = ["HPOError", "NoCompletedTrialError", "RankSync", "storage_url", "open_study", "load_study_config"]

log = logging.getLogger("adaptmllm")


def finished_states() -> tuple:
    """The Optuna trial states that count as a finished trial (towards ``hpo.n_trials``): complete or pruned."""
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


_RUNTIME_KEYS = {"train": ("resume", "report_to", "logging_steps")}
"""Settings that may differ between the runs and workers of one study (they do not change what a trial means)."""


class HPOError(RuntimeError):
    """The study cannot run or continue (storage unreachable, settings differ from the study's);
    the message says the fix."""


class NoCompletedTrialError(HPOError):
    """Every trial of the study was pruned or failed, so there is no best model; the message gives
    the counts and what to change."""


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


# ----------------------------------------------------------------------------- storage and folders

def storage_url(config: Config) -> str:
    """The study's storage URL: ``hpo.storage``, or SQLite in ``<run folder>/hpo/study.db`` (absolute path)."""
    if config.hpo.storage:
        return config.hpo.storage
    return f"sqlite:///{(config.run_dir / 'hpo' / 'study.db').absolute()}"


def masked_url(url: str) -> str:
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
    import optuna

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
    import optuna

    hpo = config.hpo
    if hpo.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=hpo.pruner_startup_trials,
                                           n_warmup_steps=hpo.pruner_warmup_epochs)
    if hpo.pruner == "hyperband":
        top = max_epochs(config)
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
    import optuna

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
            raise HPOError(f"hpo.storage: {masked_url(url)} needs the database driver {e.name!r}: "
                           "pip install psycopg2-binary (PostgreSQL) or pymysql (MySQL)") from e
        except Exception as e:
            raise HPOError(f"hpo.storage: cannot open {masked_url(url)} ({type(e).__name__}: {str(e).splitlines()[0]}); "
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
    elif _diff(theirs, mine):  # a field missing from a study of an older adaptmllm counts as empty (None)
        raise HPOError(f"hpo: the study {study.study_name!r} in {masked_url(url)} was started with other settings: "
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
def locked(path: Path) -> Iterator[None]:
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


def prepare_folder(config: Config, prepared: Any) -> Path:
    """Create (or reopen) the run folder of a study; refuse a folder that holds something else."""
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
            raise RunFolderError(f"{run_dir} holds the study {_study_name(before)!r} ({masked_url(storage_url(before))}); "
                                 "use another --name for another study, or --overwrite true to replace it")
    hpo_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, marker)
    mark_run_folder(run_dir)
    if not (run_dir / "data" / "data_report.json").is_file():
        save_splits(prepared, run_dir / "data")
    return hpo_dir


def overwrite(config: Config) -> None:
    """Delete the study (in its storage) and the run folder, for ``overwrite`` (only an adaptmllm run
    folder: :func:`adaptmllm.runs.run_folder.check_replaceable` refuses anything else before the study is touched)."""
    import optuna

    check_replaceable(config.run_dir)
    url = storage_url(config)
    if config.hpo.storage:
        try:
            optuna.delete_study(study_name=_study_name(config), storage=url)
            log.info("overwrite: deleted study %s from %s", _study_name(config), masked_url(url))
        except KeyError:
            pass
        except Exception as e:
            raise HPOError(f"hpo.storage: cannot open {masked_url(url)} to delete the old study ({type(e).__name__}: "
                           f"{str(e).splitlines()[0]})") from e
    remove_run_folder(config.run_dir)


# ----------------------------------------------------------------------------- the objective

class Timer:
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


def study_best(study: Any) -> tuple[Optional[int], Optional[float]]:
    import optuna
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None, None
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    best = pick(done, key=lambda t: t.value)
    return best.number, best.value


def load_study_config(run_dir: str | os.PathLike) -> Config:
    """The config a study was started with (``<run_dir>/hpo/study_config.yaml``).

    Raises:
        ConfigError: the file is missing or invalid.
    """
    return load_config(Path(run_dir) / "hpo" / "study_config.yaml")
