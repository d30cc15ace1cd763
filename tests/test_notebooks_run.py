"""CI runs the notebooks: each notebook in notebooks/ is executed headless (nbclient, a real
kernel) with papermill-style parameters, and its outputs must hold the scores, the green report
and the run folder's files. The playground stays local (not on Colab: no public link), and the
Hub upload fails with its clear offline message without the planted token reaching any output or file.

The run is a smaller tiny demo than the notebook's default (CI_OVERRIDES: 300 training pairs,
1 epoch, greedy decoding) to keep CI short; the notebook's own defaults are checked to be valid.
"""

from __future__ import annotations

import json
import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from conftest import REPO  # noqa: E402

NOTEBOOK = REPO / "notebooks" / "adaptmllm.ipynb"
FAKE = "hf_FAKEnotebookTOKENplanted0123456789"
CI_OVERRIDES = {
    "data": {"demo_train_pairs": 300},
    "train": {"learning_rate": 1e-3, "num_train_epochs": 1, "per_device_train_batch_size": 16, "eval_max_pairs": 50,
              "warmup_ratio": 0.0, "logging_steps": 5},
    "eval": {"num_beams": 1, "max_new_tokens": 64, "bootstrap_samples": 200},
    "green": {"measure_power_secs": 1.0},
}


def _outputs(nb) -> str:
    """Every text and HTML output of the executed notebook, as one string."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                parts += [str(out.data.get(k, "")) for k in ("text/html", "text/plain")]
            elif out.output_type == "error":
                parts.append(f"ERROR {out.ename}: {out.evalue}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """notebooks/adaptmllm.ipynb executed in a fresh folder, with HF_TOKEN planted in the kernel's environment."""
    from adaptmllm.io import temporary_env
    from adaptmllm.apps.notebook.results import run_notebook

    work = tmp_path_factory.mktemp("notebook")
    with temporary_env({"HF_TOKEN": FAKE, "HF_HUB_OFFLINE": "1", "HF_HOME": str(work / "hf-home")}):
        nb = run_notebook(NOTEBOOK, {"RUN_NAME": "ci", "OVERRIDES": CI_OVERRIDES, "PUSH_TO_HUB": True,
                                     "HUB_REPO": "someone/adaptmllm-ci"}, cwd=work, timeout=900)
    (work / "executed.ipynb").write_text(nbformat.writes(nb), encoding="utf-8")
    return nb, work


def test_notebook_runs_without_errors(executed):
    nb, _ = executed
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[0]["evalue"] if errors else ""
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_outputs_hold_the_scores_with_signatures(executed):
    nb, work = executed
    text = _outputs(nb)
    metrics = json.loads((work / "runs" / "ci" / "metrics.json").read_text(encoding="utf-8"))
    for system in ("baseline", "finetuned"):
        for key in ("bleu", "chrf", "ter"):
            assert f"<td>{metrics[system][key]:.1f}</td>" in text, (system, key)
        for sig in metrics[system]["signatures"].values():
            assert sig in text
    assert "Baseline" in text and "Fine-tuned" in text and "Test translations" in text
    assert "run folder: runs/ci" in text


def test_run_folder_and_report_files(executed):
    _, work = executed
    run = work / "runs" / "ci"
    for name in ("config.yaml", "metrics.json", "report.md", "training_curves.png", "history.json", "model/README.md",
                 "model/config.json", "green/emissions.csv", "baseline.hyp.txt", "finetuned.hyp.txt"):
        assert (run / name).is_file(), name
    assert "demo_train_pairs: 300" in (run / "config.yaml").read_text(encoding="utf-8")


def test_green_report_table_and_chart(executed):
    nb, work = executed
    green_cell = next(c for c in nb.cells if c.cell_type == "code" and "show_green(result)" in c.source)
    html = " ".join(str(o.get("data", {}).get("text/html", "")) for o in green_cell.outputs)
    green = json.loads((work / "runs" / "ci" / "metrics.json").read_text(encoding="utf-8"))["green"]
    assert f"{green['energy_kwh']:.3g} kWh" in html and "Emissions" in html and "Measured?" in html
    assert any("image/png" in o.get("data", {}) for o in green_cell.outputs)


def test_progress_and_live_plot(executed):
    nb, _ = executed
    train_cell = next(c for c in nb.cells if c.cell_type == "code" and "LivePlot()" in c.source)
    html = " ".join(str(o.get("data", {}).get("text/html", "")) for o in train_cell.outputs)
    assert "<progress" in html  # the Trainer's notebook progress bar
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    plots = [m for m in state.values() if m["model_name"] == "OutputModel"
             and any("image/png" in o.get("data", {}) for o in m["state"].get("outputs", []))]
    assert plots, "the live plot's Output widget holds no figure"
    labels = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any(re.search(r"dev chrF\+\+ \d", v) for v in labels)


def test_form_is_in_the_saved_widget_state(executed):
    nb, _ = executed
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    names = {m["state"].get("description") for m in state.values()}
    assert {"learning_rate", "tgt_lang", "demo_train_pairs", "Save preset", "Load preset"} <= names
    sliders = [m for m in state.values() if m["model_name"] == "FloatLogSliderModel"]
    assert sliders and abs(sliders[0]["state"]["value"] - 1e-3) < 1e-9


def test_playground_is_local_and_stopped(executed):
    nb, _ = executed
    text = _outputs(nb)
    assert "Playground running at" in text and "http://127.0.0.1:" in text
    assert "gradio.live" not in text and "playground stopped" in text


def test_push_fails_clearly_offline_and_the_token_is_nowhere(executed):
    nb, work = executed
    text = _outputs(nb)
    assert "Not uploaded: cannot upload: Hugging Face offline mode is on" in text
    assert FAKE not in nbformat.writes(nb)
    leaked = [p for p in work.rglob("*") if p.is_file() and FAKE.encode() in p.read_bytes()]
    assert leaked == []


def test_default_parameters_are_the_tiny_demo():
    """The parameters cell as committed (what Colab users start from) gives a valid tiny-demo config."""
    from adaptmllm.apps.notebook.forms import start_config

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(cell.source, ns)
    cfg = start_config(ns["PRESET"] or None, ns["OVERRIDES"], name=ns["RUN_NAME"])
    assert cfg.model.name_or_path == "tiny" and cfg.data.train is None  # the embedded demo, offline
    assert cfg.data.demo_train_pairs <= 1000 and cfg.train.num_train_epochs <= 4
    assert ns["PUSH_TO_HUB"] is False and ns["RUN_HPO"] is False and ns["SHARE"] is None


# ---------------------------------------------------------------------------------------- as Colab runs it

STANDIN = {  # a stand-in google.colab: the three calls the notebook makes, without a browser
    "__init__.py": "from . import drive, files, userdata  # noqa: F401\n",
    "drive.py": "import os\n\ndef mount(mountpoint, force_remount=False, **kw):\n"
                "    os.makedirs(os.path.join(mountpoint, 'MyDrive'), exist_ok=True)\n"
                "    print('Mounted at', mountpoint)\n",
    "files.py": "import os\n\ndef upload():\n    paths = os.environ['STANDIN_UPLOAD'].split(os.pathsep)\n"
                "    return {os.path.basename(p): open(p, 'rb').read() for p in paths}\n",
    "userdata.py": "import os\n\nclass SecretNotFoundError(Exception):\n    pass\n\ndef get(key):\n"
                   "    if 'STANDIN_SECRET_' + key not in os.environ:\n        raise SecretNotFoundError(key)\n"
                   "    return os.environ['STANDIN_SECRET_' + key]\n",
}
IPYWIDGETS_7 = REPO / ".cache" / "ipywidgets-7.7"


def _ipywidgets_7() -> str:
    """Colab's ipywidgets (7.7.1) in a folder put first on the kernel's PYTHONPATH (installed once with pip)."""
    if not (IPYWIDGETS_7 / "ipywidgets" / "__init__.py").is_file():
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(IPYWIDGETS_7),
                               "ipywidgets==7.7.1", "widgetsnbextension==3.6.10", "ipython_genutils==0.2.0"],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot install ipywidgets 7.7.1 (offline?): {done.stderr.strip().splitlines()[-1:]}")
    return str(IPYWIDGETS_7)


def _colab_notebook(work):
    """The notebook up to the first training step as a Colab user runs it, with test cells between: edit the
    form and re-run its cell, upload a 1.5 MB corpus with Colab's upload, switch to NLLB-200 3.3B, plan the
    training on a 40 GiB GPU without DeepSpeed (the training cell must stop with the pip command)."""
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup, params, form_cell, upload, data, train = code[0], code[1], code[2], code[3], code[4], code[5]
    assert "def setup(" in setup.source and "ConfigForm(" in form_cell.source and "LivePlot" in train.source
    new = nbformat.v4.new_code_cell
    upload = nbformat.from_dict(dict(upload))
    upload.source = upload.source.replace("UPLOAD_CORPUS = False", "UPLOAD_CORPUS = True")
    stop = nbformat.from_dict(dict(train))
    stop.metadata["tags"] = ["raises-exception"]
    nb.cells = [
        setup,
        new("import ipywidgets, sys\nprint('ipywidgets', ipywidgets.__version__)\n"
            "assert IN_COLAB and WORK_DIR.endswith('MyDrive/adaptmllm'), WORK_DIR"),
        params, form_cell,
        new("form.fields['train.num_train_epochs'].widget.value = 3.0\n"
            "form.fields['data.tgt_lang'].widget.value = 'gle_Latn'"),
        form_cell,  # the cell run again: the edits survive
        new("assert form.value.train.num_train_epochs == 3.0 and form.value.data.tgt_lang == 'gle_Latn', form.value\n"
            "assert 'Restored your last settings' in form.note.value\n"
            "assert all(f.upload is None for f in form.fields.values())  # no ipywidgets upload in Colab"),
        upload,
        new("import os\nassert form.value.data.train.endswith('big.tsv'), form.value.data.train\n"
            "assert os.path.getsize(form.value.data.train) > 2**20\n"
            "assert '20,000 pairs' in form.corpus_info.value, form.corpus_info.value"),
        data,
        new("form.fields['model.name_or_path'].widget.value = 'facebook/nllb-200-3.3B'\n"
            "assert form.value.train.learning_rate <= 1e-4 and form.value.eval.num_beams == 5\n"
            "form.fields['train.deepspeed.gpu_memory_gib'].widget.value = '40'\n"
            "form.fields['train.deepspeed.cpu_memory_gib'].widget.value = '83'\n"
            "sys.modules['deepspeed'] = None  # DeepSpeed not installed"),
        stop,
    ]
    return nb


@pytest.fixture(scope="module", params=["ipywidgets-8", "ipywidgets-7.7"])
def colab_run(request, tmp_path_factory):
    from nbclient import NotebookClient

    from adaptmllm.io import temporary_env

    work = tmp_path_factory.mktemp("colab")
    standin = work / "standin" / "google" / "colab"
    standin.mkdir(parents=True)
    for name, text in STANDIN.items():
        (standin / name).write_text(text, encoding="utf-8")
    corpus = work / "laptop" / "big.tsv"  # > 1 MB: ipywidgets' upload fails silently over ~1 MB in Colab
    corpus.parent.mkdir()
    rows = [f"This is English sentence number {i} about the clinic's opening hours.\t"
            f"Seo abairt Ghaeilge uimhir {i} faoi uaireanta oscailte an chlinic." for i in range(20000)]
    corpus.write_text("en\tga\n" + "\n".join(rows) + "\n", encoding="utf-8")
    path = [str(work / "standin")] + ([_ipywidgets_7()] if request.param == "ipywidgets-7.7" else [])
    path.append(os.environ.get("PYTHONPATH", ""))
    env = {"PYTHONPATH": os.pathsep.join(p for p in path if p), "ADAPTMLLM_DRIVE": str(work / "drive"),
           "STANDIN_UPLOAD": str(corpus), "ADAPTMLLM_GPU": "0", "HF_HUB_OFFLINE": "1"}
    nb = _colab_notebook(work)
    with temporary_env(env):
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    return request.param, nb, work


def test_colab_run_installs_nothing_keeps_state_uploads_switches_preset_and_stops_without_deepspeed(colab_run):
    version, nb, work = colab_run
    text = _outputs(nb)
    assert f"ipywidgets {version.split('-')[1]}" in text
    assert "adaptmllm set-up: adaptmllm already installed; all requirements already met; kept torch" in text
    assert "Mounted at" in text and (work / "drive" / "MyDrive" / "adaptmllm" / "adaptmllm-form.yaml").is_file()
    assert (work / "drive" / "MyDrive" / "adaptmllm" / "uploads" / "big.tsv").stat().st_size > 2**20
    assert "uploaded big.tsv (" in text
    stop = nb.cells[-1]
    errors = [o for o in stop.outputs if o.output_type == "error"]
    assert [e.ename for e in errors] == ["SystemExit"], text[-2000:]
    assert "pip install deepspeed" in errors[0].evalue
    assert "pip install deepspeed" in " ".join(str(o.get("data", {}).get("text/html", "")) for o in stop.outputs)
    assert "Traceback" not in " ".join(o.get("text", "") for o in stop.outputs if o.output_type == "stream")


def test_plan_is_shown_before_training_and_harmless_warnings_stay_in_run_log(executed):
    nb, work = executed
    text = _outputs(nb)
    assert "Memory plan</b> (estimates, before the first step)" in text and "no DeepSpeed" in text
    stderr = " ".join(o.text for c in nb.cells for o in c.get("outputs", [])
                      if o.output_type == "stream" and o.name == "stderr")
    assert "pin_memory" not in stderr and "lm_head" not in stderr and "deprecat" not in stderr.lower()
    assert "pin_memory" in (work / "runs" / "ci" / "run.log").read_text(encoding="utf-8")  # kept, not shown
