"""Run folders: what counts as one (so that ``--overwrite true`` deletes only those), and the one end of every run.

**The end of a run.** Whatever kind of run made a run folder (``adaptmllm run`` with one direction or
several, the best model of an HPO study, kept or retrained, or ``adaptmllm evaluate`` on a finished run),
:func:`finish_run` writes the same files into it::

    metrics.json    the scores, with significance, error analysis and the verdict
    report.md       the report;  report.html  the same, self-contained, plots embedded
    model/README.md the model card (when the folder holds a model)
    segments.tsv    every test segment with both outputs and their sentence chrF++

**What counts as a run folder.** A run folder gets a marker file, ``.adaptmllm-run``, when a run
(``adaptmllm run``, a multilingual run) or a study (``adaptmllm hpo``) creates it. ``--overwrite true``
replaces a folder only when it is an adaptmllm run folder:

* it holds the marker and its run's config (``config.yaml``, or a study's ``hpo/study_config.yaml``); or
* it was made before markers existed: it holds a ``config.yaml`` that loads as an adaptmllm config and a
  ``run.log`` (every run writes both as it starts), or a study's ``hpo/study_config.yaml`` that loads.

Anything else (a folder of a thesis, a home directory, a folder of some other tool) is refused with a
:class:`RunFolderError` that names the folder and the fix; nothing is deleted.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import Config, ConfigError, config_to_dict, diff_dicts as _diff, load_config, save_config
from adaptmllm.data.pairs import check_lengths
from adaptmllm.data.readers import DataError
from adaptmllm.evaluation.outputs import evaluate_outputs
from adaptmllm.evaluation.scoring import read_run_lines
from adaptmllm.io import atomic_write_json, atomic_write_text
from adaptmllm.modeling.model import base_licence
from adaptmllm.reporting.html import write_html_report
from adaptmllm.reporting.markdown import write_model_card, write_report
from adaptmllm.reporting.summary import write_metrics

__all__ = ["MARKER", "RunFolderError", "is_run_folder", "mark_run_folder", "check_replaceable", "remove_run_folder",
    "RunResult", "finish_run", "run_files", "RESUME_MAY_CHANGE", "prepare_run_dir"]

log = logging.getLogger("adaptmllm")

MARKER = ".adaptmllm-run"
_MARKER_TEXT = ("This folder is an adaptmllm run folder: `--overwrite true` may delete it and everything in it.\n")


class RunFolderError(RuntimeError):
    """The run folder already holds another run (and neither overwrite nor resume was asked for), or
    ``--overwrite true`` was asked to replace a folder that is not an adaptmllm run folder."""


def _loads_as_config(path: Path) -> bool:
    try:
        load_config(path)
    except (ConfigError, OSError, UnicodeDecodeError):
        return False
    return True


def is_run_folder(folder: str | Path) -> bool:
    """Is ``folder`` an adaptmllm run (or study) folder, which ``--overwrite true`` may delete? See the
    module docstring for the rule (the marker file plus the run's config, or an older run's config.yaml
    and run.log)."""
    p = Path(folder)
    if not p.is_dir() or p.is_symlink():
        return False
    config, study = p / "config.yaml", p / "hpo" / "study_config.yaml"
    if (p / MARKER).is_file() and (config.is_file() or study.is_file()):
        return True
    if config.is_file() and (p / "run.log").is_file() and _loads_as_config(config):
        return True  # a run made before the marker existed
    return study.is_file() and _loads_as_config(study)  # a study made before the marker existed


def mark_run_folder(folder: str | Path) -> Path:
    """Write the marker file into the run folder ``folder`` (created first if missing). Returns its path."""
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    marker = p / MARKER
    if not marker.is_file():
        marker.write_text(_MARKER_TEXT, encoding="utf-8")
    return marker


def check_replaceable(folder: str | Path) -> None:
    """Raise unless ``folder`` is missing, empty, or an adaptmllm run folder.

    Raises:
        RunFolderError: naming the folder, why it is not replaced, and what to do instead.
    """
    p = Path(folder)
    if not p.exists() or (p.is_dir() and not p.is_symlink() and not any(p.iterdir())):
        return
    if not is_run_folder(p):
        raise RunFolderError(
            f"{p}: --overwrite true only replaces an adaptmllm run folder (one holding {MARKER} and config.yaml, "
            f"or an older run's config.yaml and run.log), and this folder is not one, so nothing was deleted; "
            f"pick another --name or --runs_dir, or move its files away yourself")


def remove_run_folder(folder: str | Path) -> None:
    """Delete the run folder ``folder`` for ``--overwrite true`` after :func:`check_replaceable`.

    Raises:
        RunFolderError: ``folder`` is not an adaptmllm run folder (nothing is deleted).
    """
    check_replaceable(folder)
    if Path(folder).exists():
        shutil.rmtree(folder)


@dataclass
class RunResult:
    """What a run produced (:func:`finish_run`).

    Attributes:
        run_dir: the run folder.
        metrics: the content of ``metrics.json``.
        model_dir: the kept model's folder (``run_dir/model``).
        report: path of ``report.md``.
        html: path of ``report.html`` (the self-contained report with embedded plots).
    """

    run_dir: Path
    metrics: dict
    model_dir: Path
    report: Path
    html: Optional[Path] = None


def run_files(run_dir: Path) -> tuple[Optional[dict], Optional[Path]]:
    """A run folder's data report (``data/data_report.json``, None when absent) and training-curve plot
    (``training_curves.png``, None when absent): what :func:`finish_run` reads when not given them."""
    report_path = run_dir / "data" / "data_report.json"
    data_report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    curves = run_dir / "training_curves.png"
    return data_report, curves if curves.is_file() else None


def _test_split(run_dir: Path, config: Config) -> tuple[list[str], list[str]]:
    d = run_dir / "data"
    return read_run_lines(d / f"test.{config.data.src_lang}"), read_run_lines(d / f"test.{config.data.tgt_lang}")


def finish_run(run_dir: str | Path, config: Config, metrics: dict, data_report: Optional[dict] = None,
               curves: Optional[Path] = None, model_dir: Optional[Path] = None, card_config: Optional[Config] = None,
               bundle: Any = None, t_start: Optional[float] = None, *, base_model: Optional[str] = None,
               licence: Optional[str] = None, hpo_markdown: Optional[str] = None,
               extra_markdown: str = "") -> RunResult:
    """Write a finished run's ``metrics.json`` (with the verdict), ``report.md``, ``report.html`` and the model
    card: the same files for every kind of run. All files are written atomically (:mod:`adaptmllm.io`).
    The positional parameters are those of the ``finish_run`` that ``pipeline`` and ``multilingual`` call today.

    Args:
        run_dir: the run folder; holds ``finetuned.hyp.txt`` (and ``baseline.hyp.txt`` when the baseline was
            scored) and ``data/test.<src_lang>``/``data/test.<tgt_lang>``.
        config: the run's config (its eval settings; the report shows it).
        metrics: the :func:`adaptmllm.reporting.summary.build_metrics` entries. Without ``error_analysis`` (a run that
            did not evaluate its outputs itself), significance (paired bootstrap), error analysis and
            ``segments.tsv`` are computed here from the translations in ``run_dir``
            (:func:`adaptmllm.evaluation.outputs.evaluate_outputs`).
        model_dir: the kept model's folder; default ``run_dir/model``. Its card is written when the folder
            exists.
        card_config: the config whose language pair the model card names (a multilingual run passes its
            first direction); default ``config``.
        data_report, curves: the data report and training-curve PNG; default read from ``run_dir``
            (:func:`run_files`).
        bundle: the :class:`adaptmllm.modeling.model.ModelBundle` the run trained: its ``base_model`` and ``licence``
            go on the card.
        t_start: ``time.perf_counter()`` at the run's start: the wall time (s) is logged.
        base_model, licence: the base model's name and licence for the card when there is no ``bundle``;
            default ``config.model.name_or_path`` and its :func:`adaptmllm.modeling.model.base_licence`.
        hpo_markdown: for a study's best model, the study's HPO section of ``report.md`` (with its plots), in
            place of the short table built from ``metrics["hpo"]`` (``report.html`` shows that table).
        extra_markdown: appended to ``report.md``.

    Returns:
        The :class:`RunResult` (``metrics`` as written, with ``verdict``).

    Raises:
        adaptmllm.evaluation.scoring.EvaluationError: the evaluation is needed and a translation file is missing.
        ValueError: ``metrics`` lacks ``finetuned`` scores (see :func:`adaptmllm.reporting.summary.build_metrics`).
    """
    run_dir = Path(run_dir)
    model_dir = Path(model_dir) if model_dir is not None else run_dir / "model"
    if "error_analysis" not in metrics:  # significance and error analysis, whatever the kind of run
        src, ref = _test_split(run_dir, config)
        metrics = {**metrics, **evaluate_outputs(run_dir, config, src, ref)}
    found_report, found_curves = run_files(run_dir)
    data_report = data_report if data_report is not None else found_report
    curves = curves if curves is not None else found_curves
    png = str(curves) if curves else None
    metrics = dict(metrics)
    metrics.pop("verdict", None)
    write_metrics(run_dir, metrics)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    report = write_report(run_dir, config, metrics, data_report, png, hpo_markdown)
    if extra_markdown:
        text = report.read_text(encoding="utf-8")
        atomic_write_text(report, text.rstrip("\n") + "\n" + extra_markdown)
    html = write_html_report(run_dir, config, metrics, data_report, png)
    if bundle is not None:
        base_model, licence = bundle.base_model, bundle.licence
    if model_dir.is_dir():
        name = base_model or config.model.name_or_path
        write_model_card(model_dir, card_config or config, metrics, name,
                         licence if licence is not None else base_licence(name))
    if t_start is not None:
        log.info("done in %.0f s: %s", time.perf_counter() - t_start, report)
    return RunResult(run_dir, metrics, model_dir, report, html)


RESUME_MAY_CHANGE = ("num_train_epochs", "max_steps")
"""``train.*`` settings a resumed run may change: its length (end a killed run early and score it, or extend it)."""


def prepare_run_dir(config: Config) -> Path:
    """Create (or reopen, on resume) the run folder and write ``config.yaml`` into it.

    The folder gets the marker file of :mod:`adaptmllm.runs.run_folder` (``.adaptmllm-run``): ``overwrite``
    deletes only a folder that is an adaptmllm run.

    On resume, the run's length (:data:`RESUME_MAY_CHANGE`: ``train.num_train_epochs``,
    ``train.max_steps``) may differ from the folder's ``config.yaml``, to end a run early (it then
    finishes, is scored and reported) or extend it; the change is logged, and ``config.yaml`` takes
    the new length. A linear or cosine schedule is then stretched or squeezed from the resumed step
    on; ``train.lr_scheduler: inverse_sqrt`` does not depend on the length.

    Raises:
        RunFolderError: the folder holds another run; pass ``overwrite`` to replace it (the old
            folder is deleted first, never mixed), ``train.resume`` to continue it, or another
            ``name``; or it is resumed with other settings than the run's length.
            Or ``overwrite`` was asked for a folder that is not an adaptmllm run (nothing is deleted).
    """
    run_dir = config.run_dir
    old = run_dir / "config.yaml"
    if run_dir.exists() and any(run_dir.iterdir()):
        if config.train.resume and old.is_file():
            prev = config_to_dict(load_config(old))
            now = config_to_dict(config)
            for d in (prev, now):
                d["train"]["resume"] = False
                d["overwrite"] = False
            length = {k: (prev["train"][k], now["train"][k]) for k in RESUME_MAY_CHANGE
                      if prev["train"][k] != now["train"][k]}
            if length:
                log.warning("train.resume: the run's length changes (%s)%s", ", ".join(
                    f"train.{k} {a} -> {b}" for k, (a, b) in length.items()),
                    "" if config.train.lr_scheduler in ("inverse_sqrt", "constant") else
                    f"; the {config.train.lr_scheduler} learning-rate schedule follows the new length from here on")
                for k in length:
                    prev["train"][k] = now["train"][k]
            if prev != now:
                changed = _diff(prev, now)
                raise RunFolderError(f"{run_dir}: train.resume asks to continue this run, but its config.yaml differs "
                                     f"in {', '.join(changed)}; resume with the same settings, or pick another --name")
        elif config.overwrite:
            remove_run_folder(run_dir)  # only an adaptmllm run folder: anything else is refused
        else:
            raise RunFolderError(f"{run_dir} already holds a run; pass --overwrite true to replace it, "
                                 "--train.resume true to continue it, or --name NAME for a new run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    mark_run_folder(run_dir)
    return run_dir


def log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("adaptmllm", "transformers"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("adaptmllm").setLevel(logging.INFO)
    return handler


def check_run_lengths(tokenizer: Any, model: Any, prepared: Any, config: Config, run_dir: Path, fresh: bool) -> dict:
    """:func:`adaptmllm.data.pairs.check_lengths` for the run: counts of segments longer than the model takes
    (added to ``data/data_report.json``; check_lengths warns in the log); with ``data.too_long: reject`` its
    DataError, after removing the run folder if this run created it (so nothing half-made is left)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    try:
        out = check_lengths(tokenizer, prepared, config.data, config.model.max_source_length,
                            config.model.max_target_length, limit)
    except DataError:
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    atomic_write_json(run_dir / "data" / "data_report.json", prepared.to_dict())
    return out


def dev_better(metric: str, a: Optional[float], b: Optional[float]) -> bool:
    """Is dev score ``a`` better than ``b`` (``ter``: lower is better)?"""
    if a is None or b is None:
        return a is not None
    return a < b if metric == "ter" else a > b


def train_summary(result: Any, n_params: int) -> dict:
    """The ``train`` section of ``metrics.json`` from a :class:`adaptmllm.training.train.FineTuneResult`: global
    step, training time (s), checkpoint resumed from, parameter count, memory plan, auto-batch retries
    and the batch finally used."""
    return {"global_step": result.global_step, "train_runtime_s": round(result.train_runtime_s, 2),
            "resumed_from": result.resumed_from, "n_parameters": n_params,
            "memory_plan": result.memory_plan, "auto_batch": result.auto_batch, "batch": result.batch}
