"""requirements.txt (for Colab) stays in step with pyproject.toml; README keeps its two commands."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names(lines):
    return {re.split(r"[<>=\[ ;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-"): line.strip()
            for line in lines if line.strip() and not line.strip().startswith("#")}


def test_requirements_match_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pyproject = {k: v for k, v in _names(deps).items() if k != "torch"}
    reqs = _names((ROOT / "requirements.txt").read_text().splitlines())
    assert "torch" not in reqs, "requirements.txt must not reinstall Colab's torch"
    assert pyproject == reqs


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make demo" in head and "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()
