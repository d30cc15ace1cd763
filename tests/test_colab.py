"""Issue 15, a translator's first run in Colab, without a kernel (tests/test_notebooks_run.py executes the
notebook itself with a stand-in google.colab under ipywidgets 8 and 7.7):

- the project's home is written once (pyproject [project.urls]) and the badge, the set-up cell and the
  README agree with it; no placeholder organisation is left anywhere in the tracked files;
- dependencies are ranges, exact pins live in constraints.txt; the set-up script's copy of the ranges matches;
- the set-up script installs adaptmllm from a wheel into a fresh venv without touching its torch, and fails
  with one sentence;
- a pretrained model gets its preset (learning rate 2e-5 ...), the tiny demo's overrides stay with the tiny model;
- the form: preset switch, learning-rate warning, model name and corpus checked as entered, state kept;
- the planner plans only with what is installed; harmless warnings are hidden; the playground in Colab.
"""

from __future__ import annotations

import hashlib
import os
import re
import runpy
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

ipywidgets = pytest.importorskip("ipywidgets")
nbformat = pytest.importorskip("nbformat")

from adaptmllm.config import (  # noqa: E402
    Config,
    ConfigError,
    DataConfig,
    check_model_name,
    config_from_dict,
)
from adaptmllm.apps.notebook.forms import ConfigForm, start_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
NOTEBOOK = REPO / "notebooks" / "adaptmllm.ipynb"
SCRIPT = REPO / "notebooks" / "colab_setup.py"
DEMO = {"train": {"learning_rate": 2e-3, "num_train_epochs": 4, "eval_max_pairs": 100}, "eval": {"num_beams": 2},
        "hpo": {"space": {"learning_rate": {"low": 3e-4, "high": 3e-3, "log": True}}}}


def _repo_url() -> str:
    return PYPROJECT["project"]["urls"]["Repository"]


# ---------------------------------------------------------------------------------------- 1. open and install

def test_project_home_is_written_once_and_everything_agrees():
    url = _repo_url()
    assert url == PYPROJECT["project"]["urls"]["Homepage"] and PYPROJECT["project"]["name"] == "adaptmllm"
    owner_repo = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+)", url).group(1)
    badge = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/adaptmllm.ipynb"
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    assert badge in nb.cells[0].source
    assert badge in (REPO / "README.md").read_text(encoding="utf-8")
    assert runpy.run_path(str(SCRIPT))["REPO"] == url
    # every GitHub or Colab link to "<someone>/adaptmllm" in the docs names the same home
    for path in [REPO / "README.md", NOTEBOOK, SCRIPT, *(REPO / "docs").rglob("*.md")]:
        for found in re.findall(r"github(?:\.com|/)/?([\w.-]+)/adaptmllm\b", path.read_text(encoding="utf-8")):
            assert found == owner_repo.split("/")[0], (path, found)


_PLACEHOLDERS = re.compile("|".join([
    "YOUR" + r"[-_ ]?ORG", "your" + r"[-_]?org(anisation|anization)?\b", r"<\s*" + "org" + r"\s*>",
    r"github\.com/(your|my|some)[-_]?(name|user|username|org|account)/", r"\b" + "example" + r"\.(com|net|org)\b",
]), re.IGNORECASE)


def test_no_placeholder_host_or_organisation_in_the_tracked_repo():
    """No placeholder organisation (the notebook once cloned from a placeholder org) anywhere; example.com-style hosts only as test data under tests/
    (RFC 2606 reserved names for fake servers, e.g. a PostgreSQL URL that must be refused)."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for name in files:
        path = REPO / name
        if not path.is_file() or path.suffix in (".png", ".jpg", ".whl", ".bin", ".safetensors", ".model", ".db"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for m in _PLACEHOLDERS.finditer(text):
            if name.startswith("tests/") and m.group(0).lower().startswith("example"):
                continue
            bad.append(f"{name}: {m.group(0)}")
    assert bad == []


def _req_name(line: str) -> str:
    return re.split(r"[<>=\[ ;!~]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_dependencies_are_ranges_and_constraints_pin_each_inside_its_range():
    from packaging.requirements import Requirement

    deps = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["test"]
    assert not [d for d in deps if "==" in d], "exact pins belong in constraints.txt"
    pins = {_req_name(line): line.split("==", 1)[1].strip()
            for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line and not line.startswith("#")}
    for dep in deps:
        req = Requirement(dep)
        name = _req_name(dep)
        if name == "torch":
            assert name not in pins  # the Makefile pins torch (CPU build); Colab keeps its own
            continue
        assert name in pins, f"constraints.txt has no pin for {name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {dep}"
    makefile = (REPO / "Makefile").read_text()
    assert "-c constraints.txt" in makefile and "\ndist:" in makefile


def test_setup_script_asks_for_the_ranges_of_pyproject():
    ns = runpy.run_path(str(SCRIPT))
    deps = [d for d in PYPROJECT["project"]["dependencies"] if _req_name(d) != "torch"]
    assert ns["REQUIREMENTS"] == deps
    assert ns["GPU_EXTRA"] == PYPROJECT["project"]["optional-dependencies"]["gpu"]


def test_setup_script_finds_what_is_missing_or_too_old():
    unmet = runpy.run_path(str(SCRIPT))["unmet"]
    colab = {"transformers": "4.57.1", "numpy": "2.0.2", "gradio": "6.2.0"}.get  # None: not installed
    got = unmet(["transformers>=5.0,<6", "numpy>=1.26", "gradio>=6.0,<7", "optuna>=4.0,<6"], version=colab)
    assert got == [("transformers>=5.0,<6", "4.57.1"), ("optuna>=4.0,<6", None)]


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.py")):
        h.update(str(p.relative_to(folder)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """`make dist`'s command: the wheel of this checkout."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(REPO)], check=True, capture_output=True)
    (whl,) = out.glob("adaptmllm-*.whl")
    return whl


def test_setup_script_installs_the_wheel_into_a_venv_and_leaves_torch_untouched(wheel, tmp_path):
    """A fresh venv whose torch and other packages come from this environment (PYTHONPATH, like Colab's
    preinstalled ones) and without adaptmllm: the script installs adaptmllm from the wheel, needs nothing
    else, and torch's files and version are the same afterwards."""
    import torch

    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(torch.__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": str(site), "ADAPTMLLM_SOURCE": str(wheel), "ADAPTMLLM_GPU": "0"}
    probe = "import importlib.util, torch; print(torch.__version__, torch.__file__, importlib.util.find_spec('adaptmllm'))"
    before = subprocess.run([python, "-c", probe], env={**env, "PYTHONPATH": str(site)}, capture_output=True,
                            text=True, cwd=tmp_path, check=True).stdout.split()
    assert before[-1] == "None"  # adaptmllm not installed in this venv
    digest = _tree_digest(Path(torch.__file__).parent)
    done = subprocess.run([python, str(SCRIPT)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines == [f"adaptmllm set-up: installed adaptmllm from {wheel}; all requirements already met; kept torch "
                     f"{torch.__version__} (no GPU)."]
    after = subprocess.run([python, "-c", probe.replace("find_spec('adaptmllm')", "find_spec('adaptmllm').origin")],
                           env=env, capture_output=True, text=True, cwd=tmp_path, check=True).stdout.split()
    assert after[:2] == before[:2] and _tree_digest(Path(torch.__file__).parent) == digest
    assert after[2].startswith(str(venv)), after  # adaptmllm now comes from the venv


def test_setup_script_failure_is_one_sentence_with_the_next_step(tmp_path):
    env = {**os.environ, "ADAPTMLLM_SOURCE": str(tmp_path / "nothing-here"), "ADAPTMLLM_GPU": "0"}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stdout + done.stderr
    (line,) = done.stdout.strip().splitlines()
    assert "is neither a wheel" in line and "make dist" in line


# ---------------------------------------------------------------------------------------- 2. presets

@pytest.mark.parametrize("model", ["facebook/nllb-200-distilled-600M", "facebook/nllb-200-1.3B",
                                   "facebook/nllb-200-3.3B", "facebook/m2m100_418M", "Helsinki-NLP/opus-mt-en-ga"])
def test_a_pretrained_model_starts_from_its_preset_and_the_demo_overrides_stay_with_tiny(model):
    cfg = start_config(None, {**DEMO, "model": {"name_or_path": model}}, name="x")
    assert cfg.train.learning_rate == 2e-5 and cfg.train.weight_decay == 0.01
    assert cfg.train.per_device_train_batch_size == 16 and cfg.train.early_stopping_patience == 2
    assert cfg.eval.num_beams == 5 and cfg.train.eval_max_pairs == 0  # the whole dev set
    assert cfg.hpo.space.learning_rate == {"low": 1e-5, "high": 1e-4, "log": True}
    tiny = start_config(None, DEMO, name="x")
    assert tiny.train.learning_rate == 2e-3 and tiny.eval.num_beams == 2


def test_switching_the_form_to_nllb_loads_its_preset_and_back_to_tiny_the_demo(tmp_path):
    form = ConfigForm(start_config(None, DEMO), demo_overrides=DEMO)
    assert form.value.train.learning_rate == 2e-3
    form.fields["model.name_or_path"].widget.value = "facebook/nllb-200-3.3B"
    cfg = form.value
    assert cfg.train.learning_rate <= 1e-4 and cfg.eval.num_beams == 5 and cfg.train.eval_max_pairs == 0
    assert cfg.hpo.space.learning_rate["high"] <= 1e-4 and "preset" in form.note.value
    form.fields["train.learning_rate"].widget.value = 2e-3
    assert form.validate() is not None  # allowed, but warned beside the field, with the reason
    assert "high for a pretrained model" in form.fields["train.learning_rate"].error.value
    form.fields["data.tgt_lang"].widget.value = "gle_Latn"
    form.fields["model.name_or_path"].widget.value = "tiny"
    assert form.value.train.learning_rate == 2e-3 and form.value.eval.num_beams == 2
    assert form.value.train.early_stopping_patience == 0 and form.value.hpo.space.learning_rate["low"] == 3e-4
    assert form.value.data.tgt_lang == "gle_Latn"  # the user's other choices stay
    assert form.fields["train.learning_rate"].error.value == ""


# ---------------------------------------------------------------------------------------- 5. the form's checks and state

def test_bad_model_name_and_missing_corpus_are_errors_beside_the_field(tmp_path):
    assert check_model_name("facebook/nllb-200-3.3B") is None and check_model_name(str(tmp_path)) is None
    form = ConfigForm(Config())
    form.fields["model.name_or_path"].widget.value = "nllb-3.3B"
    assert form.validate() is None and "facebook/nllb-200-3.3B" in form.fields["model.name_or_path"].error.value
    form.fields["model.name_or_path"].widget.value = "tiny"
    form.fields["data.train"].widget.value = str(tmp_path / "nowhere" / "train")
    assert form.validate() is None and "no such file" in form.fields["data.train"].error.value
    with pytest.raises(ConfigError, match="data.train"):
        form.value


def test_corpus_path_is_checked_and_described_as_entered(tmp_path):
    (tmp_path / "c.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "c.ga").write_text("aon\ndó\n", encoding="utf-8")
    form = ConfigForm(Config())
    for name in ("src_suffix", "tgt_suffix"):
        form.fields[f"data.{name}"].widget.value = name[:3] == "src" and "en" or "ga"
    form.fields["data.train"].widget.value = str(tmp_path / "c")
    assert form.validate() is None and "3" in form.fields["data.train"].error.value  # line counts differ
    (tmp_path / "c.ga").write_text("aon\ndó\ntrí\n", encoding="utf-8")
    form.fields["data.train"].widget.value = str(tmp_path / "c") + " "
    form.fields["data.train"].widget.value = str(tmp_path / "c")
    assert form.validate() is not None
    assert "text corpus, 3 pairs" in form.corpus_info.value and "aon" in form.corpus_info.value


def test_form_state_is_saved_on_every_valid_change_and_restored(tmp_path):
    state = tmp_path / "adaptmllm-form.yaml"
    form = ConfigForm(start_config(None, DEMO), state_path=state, demo_overrides=DEMO)
    form.fields["train.num_train_epochs"].widget.value = 3.0
    assert state.is_file() and "num_train_epochs: 3.0" in state.read_text()
    form.fields["model.name_or_path"].widget.value = "nllb-3.3B"  # invalid: not saved
    assert "nllb-3.3B" not in state.read_text()
    again = ConfigForm(start_config(None, DEMO), state_path=state, demo_overrides=DEMO)  # the cell re-run
    assert again.value.train.num_train_epochs == 3.0 and "Restored" in again.note.value
    again.reset()
    assert again.value.train.num_train_epochs == 4 and "num_train_epochs: 4" in state.read_text()


def test_dev_and_test_sizes_as_percentages(tmp_path):
    from adaptmllm.data.pairs import prepare_data

    lines = [f"sentence number {i} here" for i in range(1000)]
    (tmp_path / "t.en").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "t.ga").write_text("\n".join(f"abairt {i} anseo" for i in range(1000)) + "\n", encoding="utf-8")
    data = DataConfig(tgt_lang="gle_Latn", train=str(tmp_path / "t"), src_suffix="en", tgt_suffix="ga",
                      dev_percent=3.2, test_percent=1.6)
    prepared = prepare_data(data)
    assert prepared.report["counts"] == {"train": 952, "dev": 32, "test": 16}
    with pytest.raises(ConfigError, match="data.dev_percent"):
        DataConfig(dev_percent=60)


# ---------------------------------------------------------------------------------------- 3. plan before training

@pytest.fixture
def no_deepspeed(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed -> ImportError, find_spec -> None


def test_without_deepspeed_the_planner_plans_without_it_or_names_the_install_command(no_deepspeed):
    from adaptmllm.training.memory_plan import ModelSize, nllb_config, plan_memory
    from adaptmllm.hardware import installed

    assert not installed("deepspeed")
    ds = config_from_dict({"train": {"deepspeed": {"gpu_memory_gib": 40, "cpu_memory_gib": 83}}}).train.deepspeed
    small = plan_memory(ModelSize.from_config(nllb_config("600M")), ds, 16, 128, 128, "bf16")
    assert small.stage == 0 and not small.uses_deepspeed
    with pytest.raises(ConfigError, match=r"pip install deepspeed"):
        plan_memory(ModelSize.from_config(nllb_config("3.3B")), ds, 16, 128, 128, "bf16")
    forced = config_from_dict({"train": {"deepspeed": {"stage": "3", "gpu_memory_gib": 40}}}).train.deepspeed
    with pytest.raises(ConfigError, match=r"train.deepspeed.stage: .*pip install deepspeed"):
        plan_memory(ModelSize.from_config(nllb_config("3.3B")), forced, 16, 128, 128, "bf16")


def test_with_deepspeed_the_same_3b_run_gets_a_zero_plan():
    pytest.importorskip("deepspeed")
    from adaptmllm.training.memory_plan import ModelSize, nllb_config, plan_memory

    ds = config_from_dict({"train": {"deepspeed": {"gpu_memory_gib": 40, "cpu_memory_gib": 83}}}).train.deepspeed
    assert plan_memory(ModelSize.from_config(nllb_config("3.3B")), ds, 16, 128, 128, "bf16").uses_deepspeed


@pytest.mark.parametrize("package,settings", [
    ("peft", {"model": {"lora": {"enabled": True}}}),
    ("bitsandbytes", {"model": {"lora": {"enabled": True, "load_in_4bit": True}}}),
    ("deepspeed", {"train": {"deepspeed": {"stage": "2"}}}),
])
def test_a_missing_optional_package_stops_with_its_pip_command(package, settings, monkeypatch):
    from adaptmllm.training.deepspeed import check_installed

    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ConfigError, match=rf"pip install {package}"):
        check_installed(config_from_dict(settings))


def test_show_plan_shows_the_plan_as_estimates_and_stops_with_one_sentence(no_deepspeed, capsys):
    from adaptmllm.apps.notebook.setup import estimate_epoch_seconds, show_plan

    info = show_plan(Config())  # the tiny demo on this CPU
    assert info["strategy"].startswith("no DeepSpeed") and info["gpu"] == "none (CPU)"
    out = capsys.readouterr().out
    assert "HTML" in out
    cfg = config_from_dict({"model": {"name_or_path": "facebook/nllb-200-3.3B"},
                            "train": {"deepspeed": {"gpu_memory_gib": 40}}})
    with pytest.raises(SystemExit, match="pip install deepspeed"):
        show_plan(cfg)
    # 600M on an A100, 1M tokens: 6 x 0.615e9 x 1e6 / (312e12 x 0.3) = ~39 s
    assert 30 < estimate_epoch_seconds(615_000_000, 615_000_000, 1e6, "NVIDIA A100-SXM4-40GB") < 50
    assert estimate_epoch_seconds(1, 1, 1, None) is None


# ---------------------------------------------------------------------------------------- 6. quiet output

def test_harmless_warnings_are_hidden_but_logged_and_others_still_show(tmp_path):
    """In a fresh interpreter (pytest records warnings itself): quiet_notebook hides pin_memory and keeps it in
    the log file that a run's run.log handler would be (a handler on the adaptmllm logger); others still show."""
    code = """if True:
        import logging, warnings, sys
        from adaptmllm.apps.notebook.setup import quiet_notebook
        handler = logging.FileHandler(sys.argv[1])
        logging.getLogger("adaptmllm").addHandler(handler)
        logging.getLogger("adaptmllm").setLevel(logging.INFO)
        quiet_notebook(); quiet_notebook()
        warnings.warn("'pin_memory' argument is set as true but no accelerator is found", UserWarning)
        warnings.warn("something real went wrong", UserWarning)
        from transformers.utils import logging as hf
        hf.get_logger("transformers.modeling_utils").warning("Some weights were newly initialized: ['lm_head.weight']")
        from deepspeed.accelerator import get_accelerator
        get_accelerator()
    """
    log = tmp_path / "run.log"
    done = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True, text=True, check=True)
    out = done.stdout + done.stderr
    assert "pin_memory" not in out and "lm_head" not in out and "Setting accelerator" not in out
    assert "something real went wrong" in done.stderr
    assert "pin_memory" in log.read_text() and "Setting accelerator to CPU" in log.read_text()


# ---------------------------------------------------------------------------------------- 7. playground in Colab

def test_playground_in_colab_shows_the_public_link_and_login_never_localhost_serve_mocked(tmp_path, monkeypatch):
    """gradio's share link needs the internet, so serve() is replaced (mocked) here; what is tested is what
    the notebook shows: public link, how to log in, password from the Colab secret or generated."""
    from adaptmllm.apps.notebook import results as notebook

    calls, shown = [], []
    monkeypatch.setattr(notebook, "serve", lambda model, baseline=None, **kw: calls.append(kw) or SimpleNamespace(
        local_url="http://127.0.0.1:7860/", share_url="https://abc.gradio.live"))
    monkeypatch.setattr(notebook, "display", lambda obj: shown.append(obj))
    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=lambda key: {"ADAPTMLLM_AUTH": "ann:secret-from-colab"}.get(key))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", colab.userdata)
    monkeypatch.delenv("ADAPTMLLM_AUTH", raising=False)
    result = SimpleNamespace(run_dir=tmp_path, model_dir=tmp_path / "model", metrics={})
    notebook.launch_playground(result)
    html = " ".join(getattr(o, "data", "") or "" for o in shown)
    assert calls[-1]["auth"] == "ann:secret-from-colab" and calls[-1]["share"] is True
    assert "https://abc.gradio.live" in html and "127.0.0.1" not in html and "<code>ann</code>" in html
    assert "secret-from-colab" not in html
    colab.userdata = types.SimpleNamespace(get=lambda key: None)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", colab.userdata)
    shown.clear()
    notebook.launch_playground(result)
    user, password = calls[-1]["auth"]
    outputs = " ".join(o.data for o in shown if hasattr(o, "data"))
    widgets_shown = [o for o in shown if isinstance(o, ipywidgets.HTML)]
    assert user == "translator" and password not in outputs  # not in a saved output...
    assert len(widgets_shown) == 1 and password in widgets_shown[0].value  # ...shown once, in a widget


# ---------------------------------------------------------------------------------------- 6. times as measured

def test_the_notebooks_training_time_is_the_measured_one_with_the_machine_named():
    import json

    bench = json.loads((REPO / "bench" / "results" / "notebook-demo-2026-11-30.json").read_text(encoding="utf-8"))
    text = "\n".join(c.source for c in nbformat.read(str(NOTEBOOK), as_version=4).cells if c.cell_type == "markdown")
    assert f"took {bench['train_seconds']:.0f} s ({round(bench['train_seconds'] / 60)} min)" in text
    assert bench["machine"]["cpu"] in text and "notebook-demo-2026-11-30.json" in text
    assert "about a minute" not in text
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(params, ns)
    assert ns["OVERRIDES"]["data"]["demo_train_pairs"] == 800  # the configuration that was measured
