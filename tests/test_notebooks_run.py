"""CI runs the notebooks: each notebook in notebooks/ is executed headless (nbclient, a real
kernel) with papermill-style parameters, and its outputs must hold the scores, the green report
and the run folder's files. The playground stays local (not on Colab: no public link), and the
Hub upload fails with its clear offline message without the planted token reaching any output or file.

The run is a smaller tiny demo than the notebook's default (CI_OVERRIDES: 300 training pairs,
1 epoch, greedy decoding) to keep CI short; the notebook's own defaults are checked to be valid.
"""

from __future__ import annotations

import json
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
    from adaptmllm.notebook import run_notebook

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
    from adaptmllm.notebook import start_config

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(cell.source, ns)
    cfg = start_config(ns["PRESET"] or None, ns["OVERRIDES"], name=ns["RUN_NAME"])
    assert cfg.model.name_or_path == "tiny" and cfg.data.train is None  # the embedded demo, offline
    assert cfg.data.demo_train_pairs <= 1000 and cfg.train.num_train_epochs <= 4
    assert ns["PUSH_TO_HUB"] is False and ns["RUN_HPO"] is False and ns["SHARE"] is None
