"""The notebook front end without a kernel: forms generated from the config, presets, uploads,
validation beside the field, the live plot, results HTML, the Colab set-up cell, and the committed
notebooks (no outputs). Fast: no training here (tests/test_notebooks_run.py executes the notebooks)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

ipywidgets = pytest.importorskip("ipywidgets")
nbformat = pytest.importorskip("nbformat")

from conftest import tiny_dict  # noqa: E402

from adaptmllm.config import (  # noqa: E402
    CHOICES,
    DATA_FORMATS,
    METRICS,
    PRECISIONS,
    Config,
    ConfigError,
    config_from_dict,
    load_config,
)
from adaptmllm.apps.notebook.fields import field_docs, field_specs
from adaptmllm.apps.notebook.forms import ConfigForm, start_config
from adaptmllm.apps.notebook.results import LivePlot  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _leaf_paths(obj, prefix=""):
    """Dotted paths of every non-dataclass field of a config instance (independent of notebook.py)."""
    out = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            out += _leaf_paths(value, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


@pytest.fixture(scope="module")
def form():
    return ConfigForm(Config())


# ---------------------------------------------------------------------------------------- generated form

def test_every_config_field_has_a_widget_with_its_docstring(form):
    assert set(form.fields) == set(_leaf_paths(Config()))
    for path, f in form.fields.items():
        assert f.spec.doc, f"{path} has no attribute docstring (its help text)"
        first = f.spec.doc.split("``")[0][:30]
        assert _text(f.help.value).find(first.replace("``", "")) >= 0, path


def _text(html_text: str) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", html_text))


def test_help_text_is_the_same_as_the_cli_help(capsys):
    """The form's help and `adaptmllm run --help` come from the same attribute docstrings."""
    from adaptmllm.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    missing = []
    for spec in field_specs():
        words = " ".join(spec.doc.split())[:40]
        if words and words not in text:
            missing.append((spec.path, words))
    assert not missing, missing


def test_widget_kinds_follow_the_field_types(form):
    w = {p: f.widget for p, f in form.fields.items()}
    assert isinstance(w["train.precision"], ipywidgets.Dropdown) and tuple(w["train.precision"].options) == PRECISIONS
    assert tuple(w["train.metric_for_best_model"].options) == METRICS
    assert tuple(w["data.format"].options) == DATA_FORMATS
    for path, values in CHOICES.items():  # every registered choice field is a dropdown of exactly those values
        assert tuple(w[path].options) == tuple(values), path
    langs = w["data.tgt_lang"]
    assert isinstance(langs, ipywidgets.Dropdown)
    labels = dict((v, k) for k, v in langs.options)
    assert labels["gle_Latn"] == "Irish (gle_Latn)" and labels["eng_Latn"] == "English (eng_Latn)"
    assert isinstance(w["train.learning_rate"], ipywidgets.FloatLogSlider)
    assert isinstance(w["data.drop_duplicates"], ipywidgets.Checkbox)
    assert isinstance(w["train.per_device_train_batch_size"], ipywidgets.IntText)
    assert isinstance(w["data.max_length_ratio"], ipywidgets.FloatText)
    assert isinstance(w["serve.port"], ipywidgets.Text)  # Optional[int]: empty means None
    for path in ("data.train", "data.dev", "data.test"):
        assert isinstance(form.fields[path].upload, ipywidgets.FileUpload)
    tabs = form.widget.children[0]
    titles = [tabs.get_title(i) for i in range(len(tabs.children))]
    assert titles[0] == "Data" and "Train" in titles and titles[-1] == "Run"


@dataclass
class _Inner:
    """A nested section."""

    depth: int = 3
    """How deep it goes."""


@dataclass
class _NewConfig:
    """A config with fields the notebook has never seen."""

    brand_new_knob: float = 0.25
    """A field added after the notebook was written."""
    warmup_learning_rate: float = 1e-4
    """A learning rate: gets a log slider."""
    switch: bool = False
    """On or off."""
    label: str | None = None
    """An optional text."""
    inner: _Inner = field(default_factory=_Inner)
    """Nested."""


def test_a_new_config_field_appears_without_notebook_edits():
    specs = {s.path: s for s in field_specs(_NewConfig)}
    assert specs["brand_new_knob"].kind == "float" and specs["brand_new_knob"].doc.startswith("A field added")
    assert specs["warmup_learning_rate"].kind == "log"
    assert specs["inner.depth"].kind == "int" and specs["inner.depth"].group == "inner"
    assert field_docs(_NewConfig)["switch"] == "On or off."
    f = ConfigForm(_NewConfig(), cls=_NewConfig)
    f.fields["brand_new_knob"].widget.value = 0.5
    f.fields["inner.depth"].widget.value = 7
    f.fields["label"].widget.value = "hello"
    assert f.value == _NewConfig(brand_new_knob=0.5, label="hello", inner=_Inner(depth=7))


def test_form_value_round_trips_a_config(tmp_path):
    cfg = config_from_dict(tiny_dict(tmp_path / "runs", "rt"))
    f = ConfigForm(cfg)
    assert f.value == cfg
    assert isinstance(f.value, Config)
    f.fields["data.tgt_lang"].widget.value = "gle_Latn"
    f.fields["train.learning_rate"].widget.value = 3e-4
    corpus = tmp_path / "corpus" / "train"
    corpus.parent.mkdir()
    for side, text in (("en", "hello\nthanks\n"), ("ga", "dia duit\ngo raibh maith agat\n")):
        corpus.with_suffix(f".{side}").write_text(text, encoding="utf-8")
    f.fields["data.train"].widget.value = str(corpus)  # checked as entered: it must exist
    out = f.value
    assert (out.data.tgt_lang, out.train.learning_rate, out.data.train) == ("gle_Latn", 3e-4, str(corpus))
    f.set_config(cfg)
    assert f.value == cfg


def test_invalid_entries_show_the_message_beside_the_field():
    f = ConfigForm()
    warm = f.fields["train.warmup_ratio"]
    warm.widget.value = 1.5
    assert "must be in [0, 1)" in _text(warm.error.value)
    assert "train.warmup_ratio" in _text(f.status.value)
    with pytest.raises(ConfigError, match=r"train\.warmup_ratio"):
        _ = f.value
    warm.widget.value = 0.1
    assert warm.error.value == "" and "valid" in f.status.value

    f.fields["data.tgt_lang"].widget.value = "eng_Latn"  # same as the source
    assert "pick two different languages" in _text(f.fields["data.tgt_lang"].error.value)
    f.fields["data.tgt_lang"].widget.value = "gle_Latn"

    port = f.fields["serve.port"]
    port.widget.value = "eighty"
    assert "not a whole number" in _text(port.error.value)
    port.widget.value = "8080"
    assert f.value.serve.port == 8080
    port.widget.value = ""
    assert f.value.serve.port is None


def test_save_and_load_presets(tmp_path):
    f = ConfigForm(preset_path=str(tmp_path / "p.yaml"))
    f.fields["train.num_train_epochs"].widget.value = 3.0
    f.fields["data.tgt_lang"].widget.value = "qab_Latn"
    f.buttons[0].click()  # Save preset
    saved = load_config(tmp_path / "p.yaml")
    assert saved.train.num_train_epochs == 3.0 and saved.data.tgt_lang == "qab_Latn"
    assert "saved preset" in f.status.value

    f2 = ConfigForm(preset_path=str(tmp_path / "p.yaml"))
    assert f2.value.train.num_train_epochs == 8.0
    f2.buttons[1].click()  # Load preset
    assert "loaded preset" in f2.status.value
    assert f2.value == saved

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: -1\n", encoding="utf-8")
    assert f2.load_preset(bad) is None
    assert "must be > 0" in _text(f2.fields["train.learning_rate"].error.value)
    assert "bad.yaml" in _text(f2.status.value)
    assert f2.load_preset(tmp_path / "missing.yaml") is None
    assert "no such config file" in _text(f2.status.value)


def test_uploads_fill_in_the_corpus_path(tmp_path):
    f = ConfigForm(upload_dir=tmp_path / "up")
    field_ = f.fields["data.train"]
    # ipywidgets 8 shape: a tuple of dicts
    f._on_upload(field_, ({"name": "corpus.tsv", "content": memoryview(b"en\tga\nhello\tdia duit\n"), "size": 22},))
    assert (tmp_path / "up" / "corpus.tsv").read_bytes().startswith(b"en\tga")
    assert f.fields["data.train"].widget.value == str(tmp_path / "up" / "corpus.tsv")
    # ipywidgets 7 shape (Colab): a dict name -> {"metadata", "content"}; an aligned pair gives the prefix
    f.fields["data.tgt_lang"].widget.value = "gle_Latn"
    f._on_upload(f.fields["data.dev"], {"dev.ga": {"metadata": {}, "content": b"dia duit\n"},
                                        "dev.en": {"metadata": {}, "content": b"hello\n"}})
    assert f.fields["data.dev"].widget.value == str(tmp_path / "up" / "dev")
    assert f.value.data.src_suffix == "en" and f.value.data.tgt_suffix == "ga"


def test_start_config_applies_preset_and_overrides(tmp_path):
    cfg = start_config(None, {"train": {"num_train_epochs": 2}}, name="x", runs_dir=str(tmp_path))
    assert (cfg.name, cfg.train.num_train_epochs, cfg.data.demo_train_pairs) == ("x", 2, 1500)
    cfg = start_config(REPO / "configs" / "demo.yaml", {"data": {"demo_train_pairs": 100}})
    assert cfg.train.learning_rate == 0.001 and cfg.data.demo_train_pairs == 100
    with pytest.raises(ConfigError, match="train.num_train_epochs"):
        start_config(None, {"train": {"num_train_epochs": 0}})


# ---------------------------------------------------------------------------------------- feedback

def test_live_plot_redraws_from_trainer_logs():
    plot = LivePlot(min_interval_s=0.0)
    cb = plot.callback()
    from transformers import TrainerCallback

    assert isinstance(cb, TrainerCallback)
    state = SimpleNamespace(global_step=0, epoch=None)
    cb.on_log(None, state, None, logs={"eval_loss": 5.0, "eval_bleu": 10.0, "eval_chrf": 30.0})  # the baseline
    for step in (10, 20):
        state.global_step, state.epoch = step, step / 20
        cb.on_log(None, state, None, logs={"loss": 4.0 - step / 10, "learning_rate": 1e-3})
    state.epoch = 1.0
    cb.on_log(None, state, None, logs={"eval_loss": 2.0, "eval_bleu": 40.0, "eval_chrf": 60.0})
    cb.on_train_end(None, state, None)
    assert [e["step"] for e in plot.history] == [0, 10, 20, 20] and plot.history[0]["epoch"] == 0.0
    assert plot.redraws >= 2
    assert "dev chrF++ 60.0" in plot.label.value
    assert any("image/png" in o.get("data", {}) for o in plot.output.outputs)


def _metrics():
    from adaptmllm.reporting.summary import build_metrics

    sig = {"bleu": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0",
           "chrf": "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0",
           "ter": "nrefs:1|case:lc|tok:tercom|norm:no|punct:yes|asian:no|version:2.6.0"}
    base = {"bleu": 25.36, "chrf": 40.39, "ter": 42.5, "signatures": sig, "n_segments": 200}
    fine = {"bleu": 85.79, "chrf": 91.62, "ter": 6.25, "signatures": sig, "n_segments": 200}
    green = {"energy_kwh": 0.0022, "emissions_kg": 0.00065, "duration_s": 30.0, "cpu_energy_kwh": 0.0006,
             "gpu_energy_kwh": 0.0, "ram_energy_kwh": 0.0016, "cpu_model": "Some CPU", "gpu_model": None,
             "country_iso_code": "IRL", "tracking": "CPU: estimate", "measured": False,
             "notes": ["GPU energy reads 0 kWh because no GPU was found to track"]}
    return build_metrics({"baseline": base, "finetuned": fine, "green": green, "kept": "finetuned",
                          "significance": {"metrics": {"chrf": {"p_value": 0.001, "significant": True, "delta": 51.23,
                                                                "delta_ci": [48.0, 54.0], "better": "finetuned"}}}})


def test_scores_table_has_both_systems_signatures_and_verdict():
    from adaptmllm.apps.notebook.results import scores_html

    text = _text(scores_html(_metrics()))
    for needle in ("Baseline", "Fine-tuned", "Difference", "25.4", "91.6", "+51.2", "chrF++",
                   "nrefs:1|case:mixed|eff:yes|nc:6|nw:2", "Fine-tuning improved", "0.001 (significant)"):
        assert needle in text, needle


def test_green_report_table_and_chart():
    from adaptmllm.apps.notebook.results import green_chart_png, green_html

    m = _metrics()
    text = _text(green_html(m["green"]))
    assert "0.0022 kWh" in text and "IRL" in text and "estimates" in text and "no GPU was found" in text
    png = green_chart_png(m["green"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert green_chart_png(None) is None and "not tracked" in green_html(None)


def test_show_human_eval_without_ratings(tmp_path, capsys):
    from adaptmllm.apps.notebook.results import show_human_eval

    assert show_human_eval(tmp_path) is None


def test_playground_is_shared_only_on_colab_and_always_with_a_password(tmp_path, monkeypatch):
    from adaptmllm.apps.notebook import results as notebook

    calls = []

    def fake_serve(model, baseline=None, **kw):
        calls.append(kw)
        return SimpleNamespace(local_url="http://127.0.0.1:7860/",
                               share_url="https://x.gradio.live" if kw["share"] else None)

    monkeypatch.setattr(notebook, "serve", fake_serve)
    monkeypatch.delenv("ADAPTMLLM_AUTH", raising=False)
    result = SimpleNamespace(run_dir=tmp_path, model_dir=tmp_path / "model", metrics={})
    notebook.launch_playground(result)
    assert calls[-1]["share"] is False and calls[-1]["auth"] is None  # not on Colab: local only

    colab = types.ModuleType("google.colab")
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    notebook.launch_playground(result)
    user, password = calls[-1]["auth"]
    assert calls[-1]["share"] is True and user == "translator" and len(password) >= 12
    monkeypatch.setenv("ADAPTMLLM_AUTH", "ann:long-secret-pw")
    notebook.launch_playground(result)
    assert calls[-1]["auth"] == "ann:long-secret-pw"
    notebook.launch_playground(result, share=False)
    assert calls[-1]["share"] is False


def test_environment_reports_cpu_and_advice():
    from adaptmllm.apps.notebook.setup import environment, mount_drive
    from adaptmllm.hardware import in_colab

    info = environment(show=False)
    assert {"python", "torch", "gpu", "gpu_memory_gib", "bf16", "colab", "advice"} <= set(info)
    assert in_colab() is False and mount_drive() is None
    if info["gpu"] is None:
        assert "CPU" in info["advice"]


# ---------------------------------------------------------------------------------------- notebooks

def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] and "adaptmllm.ipynb" in [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"
            assert "execution" not in cell.metadata
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state; clear the outputs"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shape(path):
    """Badge first, then each step as a markdown note (what and how long) before its code."""
    nb = nbformat.read(str(path), as_version=4)
    assert "colab.research.google.com/github/" in nb.cells[0].source and nb.cells[0].source.count("colab-badge")
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    for i in code:
        assert nb.cells[i - 1].cell_type == "markdown" or nb.cells[i - 1].cell_type == "code", i
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    for h in headings:
        cell = next(c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(h))
        if h.startswith("## ") and h[3:4].isdigit():
            assert "Time:" in cell.source, f"{h}: say how long it takes"
    if path.name == "adaptmllm.ipynb":
        order = ["Set-up", "Data", "Fine-tune", "Evaluate", "Green report", "Playground", "Human evaluation", "Share"]
        found = [next(i for i, h in enumerate(headings) if step in h) for step in order]
        assert found == sorted(found), headings


def _setup_source() -> str:
    nb = nbformat.read(str(REPO / "notebooks" / "adaptmllm.ipynb"), as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


def test_setup_cell_is_the_setup_script_and_skips_install_when_installed(capfd):
    """The set-up cell runs notebooks/colab_setup.py's code verbatim; here everything is installed, so it
    runs no pip at all (real run, no mock: pip would take seconds and print nothing we check) and says so."""
    source = _setup_source()
    script = (REPO / "notebooks" / "colab_setup.py").read_text(encoding="utf-8")
    assert script in source, "the set-up cell must hold notebooks/colab_setup.py verbatim"
    ns: dict = {"__name__": "__main__"}
    exec(compile(source, "setup-cell", "exec"), ns)
    out = capfd.readouterr().out
    assert "adaptmllm already installed; all requirements already met; kept torch" in out
    assert ns["IN_COLAB"] is False and ns["WORK_DIR"] == "." and ns["SETUP"]["installed"] == []
    assert {"gpu", "bf16", "gpu_memory_gib"} <= set(ns["ENV"])


def _cell(marker: str) -> str:
    nb = nbformat.read(str(REPO / "notebooks" / "adaptmllm.ipynb"), as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code" and marker in c.source)


@pytest.mark.parametrize("hpo_state", ["off", "present", "missing"])
def test_finetune_cell_with_and_without_hpo(hpo_state, monkeypatch, tmp_path):
    """Step 5: RUN_HPO uses adaptmllm.runs.hpo.search.run_study's best run; without HPO (switched off or not
    installed) one run with the live plot."""
    from IPython.display import display

    import adaptmllm.runs.pipeline as pipeline

    single = SimpleNamespace(run_dir=tmp_path / "single")
    runs = []

    def fake_run(config, progress=True, callbacks=()):
        runs.append(list(callbacks))
        return single

    monkeypatch.setattr(pipeline, "run", fake_run)
    best = SimpleNamespace(run_dir=tmp_path / "best")
    study = SimpleNamespace(run=best, counts={"complete": 2, "pruned": 1}, best_params={"learning_rate": 1e-3},
                            best_value=55.5, best_trial=1, study_name="demo", hpo_dir=tmp_path)
    fake_hpo = types.ModuleType("adaptmllm.runs.hpo.search")
    fake_hpo.run_study = lambda config, progress=True: study
    monkeypatch.setitem(sys.modules, "adaptmllm.runs.hpo.search", fake_hpo if hpo_state == "present" else None)
    ns = {"RUN_HPO": hpo_state != "off", "form": SimpleNamespace(value=Config()), "prepared": None, "display": display}
    exec(compile(_cell("LivePlot()"), "finetune-cell", "exec"), ns)
    if hpo_state == "present":
        assert ns["result"] is best and runs == []
    else:
        assert ns["result"] is single and len(runs) == 1
        from transformers import TrainerCallback

        assert isinstance(runs[0][0], TrainerCallback)  # the live plot


def test_show_study(tmp_path, capsys):
    from adaptmllm.apps.notebook.results import green_chart_png, show_study

    (tmp_path / "history.png").write_bytes(green_chart_png(_metrics()["green"]))
    show_study(SimpleNamespace(counts={"complete": 3, "pruned": 1, "fail": 0}, best_params={"learning_rate": 0.002},
                               best_value=61.25, best_trial=2, study_name="demo", hpo_dir=tmp_path,
                               summary={"green_total": {"energy_kwh": 0.0006, "emissions_kg": 0.0002, "n_trials": 4}}))
    out = capsys.readouterr().out  # outside a kernel, display() prints the text form
    assert "HTML" in out and "Image" in out
