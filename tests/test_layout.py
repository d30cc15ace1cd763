"""The package's layout holds (issue 18): imports only point down the pipeline and no cycle (import-linter,
``.importlinter``), no private name imported from another module, our own imports at module top, no module
far over 600 lines."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "adaptmllm"
MAX_LINES = 650  # "about 600"


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def _ours(node, path):
    """The absolute module an ImportFrom of ours names (None for third-party imports)."""
    if node.level:
        return "adaptmllm.<relative>"
    return node.module if node.module and node.module.split(".")[0] == "adaptmllm" else None


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    r = subprocess.run([exe, "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _ours(node, path):
                bad += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "\n".join(bad)


def test_imports_of_our_modules_sit_at_module_top():
    bad = []
    for path, tree in _modules():
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                mods = [_ours(node, path)] if isinstance(node, ast.ImportFrom) else [
                    a.name for a in node.names if a.name.split(".")[0] == "adaptmllm"]
                bad += [f"{path.relative_to(ROOT)}:{node.lineno} {m}" for m in mods if m]
    assert not bad, "\n".join(bad)


def test_no_module_is_far_over_600_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p, _ in _modules()}
    assert not {k: v for k, v in sizes.items() if v > MAX_LINES}


def test_no_public_function_or_class_name_is_defined_twice():
    """One name, one contract: ``read_lines`` was three functions (a run folder's file, any iterable of lines,
    the items to rate) before issue 18 gave each its own name; ``write_report`` was the
    human evaluation's and a run's (now ``write_human_report`` and ``write_report``). The public API's wrappers in
    adaptmllm/__init__.py (``run``, ``score``) share the names of what they wrap, on purpose."""
    where: dict[str, list[str]] = {}
    for path, tree in _modules():
        if path == PKG / "__init__.py":
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    twice = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not twice, twice


def test_cli_start_up_imports_no_heavy_library():
    """`adaptmllm --help` stays fast: importing adaptmllm.cli loads neither torch, transformers nor optuna
    (they are imported inside the functions that need them; the HPO callbacks subclass TrainerCallback lazily)."""
    code = ("import sys, adaptmllm.cli; "
            "print(' '.join(m for m in ('torch', 'transformers', 'optuna', 'gradio', 'deepspeed') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "", r.stdout
