"""What counts as an adaptmllm run folder, so that ``--overwrite true`` deletes only those.

A run folder gets a marker file, ``.adaptmllm-run``, when a run (``adaptmllm run``, a multilingual run)
or a study (``adaptmllm hpo``) creates it. ``--overwrite true`` replaces a folder only when it is an
adaptmllm run folder:

* it holds the marker and its run's config (``config.yaml``, or a study's ``hpo/study_config.yaml``); or
* it was made before markers existed: it holds a ``config.yaml`` that loads as an adaptmllm config and a
  ``run.log`` (every run writes both as it starts), or a study's ``hpo/study_config.yaml`` that loads.

Anything else (a folder of a thesis, a home directory, a folder of some other tool) is refused with a
:class:`RunFolderError` that names the folder and the fix; nothing is deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["MARKER", "RunFolderError", "is_run_folder", "mark_run_folder", "check_replaceable", "remove_run_folder"]

MARKER = ".adaptmllm-run"
_MARKER_TEXT = ("This folder is an adaptmllm run folder: `--overwrite true` may delete it and everything in it.\n")


class RunFolderError(RuntimeError):
    """The run folder already holds another run (and neither overwrite nor resume was asked for), or
    ``--overwrite true`` was asked to replace a folder that is not an adaptmllm run folder."""


def _loads_as_config(path: Path) -> bool:
    from .config import ConfigError, load_config

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
