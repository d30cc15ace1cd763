"""The run tells the truth about what it kept, and harms nothing (issue 16, items 1, 4, 5 and 7).

- checkpoints are selected with the test's decoding, and the verdict opens with the model in model/;
- a bad model fails before the run folder is touched, with the right fix and the right flag, fast;
- atomically written files honour the umask, and temporary files a kill left are swept;
- the saved generation_config.json makes a plain ``model.generate(**inputs)`` decode as the test did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, free_port, tiny_dict


# ----------------------------------------------------------------------------- item 1: selection and verdict

def test_dev_selection_decodes_as_the_test(tiny_run):
    """The dev score that picked the kept checkpoint is the score the test's decoding (eval.num_beams,
    length rule) gives the kept model on the same dev pairs; old code decoded the dev set greedily."""
    from adaptmllm.config import load_config
    from adaptmllm.metrics.corpus import score
    from adaptmllm.modeling.model import load_pretrained
    from adaptmllm.inference.translate import eval_kwargs, translate_texts

    run_dir, m = tiny_run.run_dir, tiny_run.metrics
    assert m["kept"] == "finetuned", m["verdict"]["text"]
    cfg = load_config(run_dir / "config.yaml")
    n = cfg.train.eval_max_pairs
    src = (run_dir / "data" / "dev.eng_Latn").read_text(encoding="utf-8").splitlines()[:n]
    ref = (run_dir / "data" / "dev.qaa_Latn").read_text(encoding="utf-8").splitlines()[:n]
    model, tok = load_pretrained(str(tiny_run.model_dir), "eng_Latn", "qaa_Latn", local_files_only=True)
    as_test = score(translate_texts(model, tok, src, "eng_Latn", "qaa_Latn", **eval_kwargs(cfg)), ref)["chrf"]
    assert m["dev"]["best"] == pytest.approx(as_test, abs=0.01), (m["dev"], as_test)
    # the checkpoints were evaluated with the model's generation config, which holds eval.num_beams (old: 1)
    ckpt = json.loads((Path(m["best_checkpoint"]) / "generation_config.json").read_text())
    assert cfg.eval.num_beams > 1 and ckpt["num_beams"] == cfg.eval.num_beams


def _kept_baseline_metrics() -> dict:
    """metrics.json of a run whose fine-tuned checkpoint lost on dev but won on test (the README case)."""
    sig = {"test": "paired bootstrap", "alpha": 0.05, "n_samples": 1000, "n_segments": 200, "seed": 12345,
           "metrics": {k: {"baseline": 40.0, "finetuned": 40.0 + d, "delta": d, "delta_ci": [d - 1.4, d + 1.4],
                           "p_value": 0.0005, "significant": True, "better": "finetuned", "signature": "sig"}
                       for k, d in (("chrf", 2.9), ("bleu", 1.5), ("ter", 5.6))}}
    scores = lambda b, c, t: {"bleu": b, "chrf": c, "ter": t, "n_segments": 200,  # noqa: E731
                              "signatures": {"bleu": "nrefs:1", "chrf": "nrefs:1", "ter": "nrefs:1"}}
    return {"baseline": scores(25.4, 40.4, 42.5), "finetuned": scores(26.8, 43.3, 48.1), "kept": "baseline",
            "dev": {"metric": "chrf", "baseline": 38.0, "best": 32.8}, "significance": sig, "green": None}


def test_verdict_opens_with_the_kept_model_and_names_the_discarded_one(tmp_path):
    from adaptmllm.reporting.summary import verdict_info, write_metrics
    from adaptmllm.reporting.markdown import write_model_card, write_report
    from adaptmllm.reporting.html import write_html_report

    m = _kept_baseline_metrics()
    v = verdict_info(m)
    first = v["text"].split(". ")[0]
    assert first.startswith("model/ holds the baseline"), v["text"]
    assert "never beat it on the dev set" in first and "32.8" in first and "38.0" in first
    assert "discarded fine-tuned checkpoint would have improved chrF++ by 2.9" in v["text"]
    assert not v["text"].startswith("Fine-tuning improved")
    written = json.loads(write_metrics(tmp_path, m).read_text())
    assert written["finetuned"]["kept"] is False and written["kept"] == "baseline"
    cfg = {"name": "x", "data": {"src_lang": "eng_Latn", "tgt_lang": "qaa_Latn"}, "eval": {"num_beams": 4}}
    md = write_report(tmp_path, cfg, m, None, None).read_text()
    assert "| Fine-tuned (discarded, not in model/) |" in md and "Baseline (kept in model/)" in md
    html = write_html_report(tmp_path, cfg, m, None, None).read_text()
    assert "Fine-tuned (discarded, not in model/)" in html and 'class="box improved"' not in html
    card = write_model_card(tmp_path / "model", cfg, m, "tiny", "apache-2.0").read_text()
    front = card.split("---")[1]
    assert "value: 40.4" in front and "value: 43.3" not in front  # model-index: the model in this folder
    from adaptmllm.apps.notebook.results import scores_html

    assert "Fine-tuned (discarded, not in model/)" in scores_html(written)


def test_verdict_of_a_kept_finetuned_model_is_unchanged():
    from adaptmllm.reporting.summary import verdict_info

    m = {**_kept_baseline_metrics(), "kept": "finetuned"}
    assert verdict_info(m)["text"].startswith("Fine-tuning improved chrF++ by 2.9 points")


@pytest.fixture(scope="module")
def lost_run(tmp_path_factory):
    """A run whose fine-tuning cannot beat the baseline (learning rate ~0): the baseline is kept."""
    from adaptmllm.config import config_from_dict
    from adaptmllm.runs.pipeline import run

    d = tiny_dict(tmp_path_factory.mktemp("runs"), "lost")
    d["data"]["demo_train_pairs"] = 300
    d["train"].update(learning_rate=1e-12, num_train_epochs=1, eval_max_pairs=50)
    d["data"]["test_size"] = 60
    return config_from_dict(d), run(config_from_dict(d), progress=False)


def test_run_that_keeps_the_baseline_says_so_first(lost_run):
    cfg, result = lost_run
    m = result.metrics
    assert m["kept"] == "baseline"
    assert m["finetuned"]["kept"] is False
    assert m["verdict"]["text"].startswith("model/ holds the baseline"), m["verdict"]["text"]
    report = (result.run_dir / "report.md").read_text()
    assert "**model/ holds the baseline" in report and "Fine-tuned (discarded, not in model/)" in report
    card = (result.model_dir / "README.md").read_text()
    assert "model/ holds the baseline" in card


# ----------------------------------------------------------------------------- item 7: generation_config.json

def test_plain_generate_reproduces_the_test_translations(tiny_run):
    """generation_config.json holds the run's decoding (beam size, length, the target's forced BOS), so
    transformers without arguments gives adaptmllm's test translations."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    run_dir, model_dir = tiny_run.run_dir, tiny_run.model_dir
    gc = json.loads((model_dir / "generation_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert gc["num_beams"] == 2 and gc["max_new_tokens"] == 128 and gc.get("max_length") in (None, 129)
    assert gc["forced_bos_token_id"] == tok.convert_tokens_to_ids("qaa_Latn")
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    src = (run_dir / "data" / "test.eng_Latn").read_text(encoding="utf-8").splitlines()[:40]
    want = (run_dir / f"{tiny_run.metrics['kept']}.hyp.txt").read_text(encoding="utf-8").splitlines()[:40]
    got = []
    for s in src:  # one at a time: no padding
        out = model.generate(**tok(s, return_tensors="pt"))
        got.append(tok.decode(out[0], skip_special_tokens=True).strip())
    assert got == want


# ----------------------------------------------------------------------------- item 4: the model first

def test_missing_model_folder_fails_before_the_run_folder(tmp_path, capsys):
    from adaptmllm.cli import main
    from adaptmllm.config import config_from_dict
    from adaptmllm.runs.run_folder import prepare_run_dir

    runs = tmp_path / "runs"
    code = main(["run", "--config", str(REPO / "configs" / "demo.yaml"), "--runs_dir", str(runs), "--name", "x",
                 "--model.name_or_path", "/no/such/folder", "--quiet", "true"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model.name_or_path: no such folder: /no/such/folder" in err, err
    assert "huggingface-cli" not in err and "hub" not in err
    assert not (runs / "x").exists()
    # the next good run is not refused
    assert prepare_run_dir(config_from_dict(tiny_dict(runs, "x"))) == runs / "x"


@pytest.mark.parametrize("name", ["./missing", "~/no-such-adaptmllm-model", "a/b/c"])
def test_path_like_names_say_no_such_folder(name):
    from adaptmllm.modeling.model import ModelError, resolve_model

    with pytest.raises(ModelError, match=r"model.name_or_path: no such folder: " + name.replace(".", r"\.")):
        resolve_model(name)


def test_hub_name_offline_fails_fast_with_hf_download(monkeypatch):
    from adaptmllm.modeling.model import ModelError, load_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(ModelError) as e:
        load_pretrained("someone/not-a-cached-model", "eng_Latn", "gle_Latn")
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert "hf download someone/not-a-cached-model --local-dir ./not-a-cached-model" in msg
    assert "huggingface-cli" not in msg and msg.startswith("model.name_or_path:")


def test_hub_name_without_network_fails_fast_without_offline_flag(tmp_path):
    """No HF_HUB_OFFLINE and a hub that does not answer: a bounded check, not a minute of retries."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    code = ("from adaptmllm.modeling.model import load_pretrained, ModelError\n"
            "try:\n    load_pretrained('someone/not-a-model', 'eng_Latn', 'gle_Latn')\n"
            "except ModelError as e:\n    print(e)\n")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert "cannot be reached" in out.stdout and "hf download someone/not-a-model" in out.stdout, out.stderr[-2000:]
    assert took < 30, took  # the import of transformers included; the check itself waits at most 3 s


def test_translate_and_serve_name_their_own_flag(tmp_path, capsys):
    from adaptmllm.cli import main

    inp = tmp_path / "in.txt"
    inp.write_text("The nurse treats the patient.\n", encoding="utf-8")
    assert main(["translate", "--model", "missing", "--src", "eng_Latn", "--tgt", "qaa_Latn", "--input", str(inp)]) == 2
    err = capsys.readouterr().err
    assert "--model: 'missing' is not a local folder" in err and "model.name_or_path" not in err, err
    assert main(["translate", "--model", "./missing", "--src", "eng_Latn", "--tgt", "qaa_Latn",
                 "--input", str(inp)]) == 2
    assert "--model: no such folder: ./missing" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "gone"), "--src", "eng_Latn", "--tgt", "qaa_Latn"]) == 2
    err = capsys.readouterr().err
    assert f"--model: no such folder: {tmp_path / 'gone'}" in err and "model.name_or_path" not in err, err


def test_serve_with_a_missing_segments_file_names_the_file_and_the_fix(tiny_run, tmp_path, capsys):
    from adaptmllm.cli import main

    gone = tmp_path / "ratings.tsv"
    assert main(["serve", "--model", str(tiny_run.model_dir), "--src", "eng_Latn", "--tgt", "qaa_Latn",
                 "--segments", str(gone), "--db", str(tmp_path / "he.sqlite")]) == 2
    err = capsys.readouterr().err
    assert f"{gone}: no such file" in err and "--segments FILE.tsv" in err and "Errno" not in err, err


# ----------------------------------------------------------------------------- item 5: modes and stale files

@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_writes_honour_the_umask(tmp_path, mask):
    from adaptmllm.io import atomic_write_bytes, atomic_write_json, atomic_write_text

    old = os.umask(mask)
    try:
        for i, write in enumerate((lambda p: atomic_write_text(p, "x"), lambda p: atomic_write_json(p, {}),
                                   lambda p: atomic_write_bytes(p, b"x"))):
            p = write(tmp_path / f"f{i}")
            assert p.stat().st_mode & 0o777 == 0o666 & ~mask
            plain = tmp_path / f"plain{i}"
            plain.write_text("x")
            assert p.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
        os.chmod(tmp_path / "f0", 0o600)  # a replaced file keeps its mode
        atomic_write_text(tmp_path / "f0", "y")
        assert (tmp_path / "f0").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_run_files_are_readable_like_run_log(tiny_run):
    mask = os.umask(0)
    os.umask(mask)
    want = 0o666 & ~mask
    for name in ("metrics.json", "report.md", "report.html", "config.yaml", "finetuned.hyp.txt",
                 "data/train.eng_Latn", "model/README.md"):
        assert (tiny_run.run_dir / name).stat().st_mode & 0o777 == want, name


def test_a_kill_before_the_rename_leaves_a_temp_file_that_is_swept(tmp_path):
    """SIGKILL between the write and the rename (a real kill: no cleanup runs) leaves .NAME.RANDOM.tmp;
    sweep_temp_files, which every run calls on its folder at start, removes it."""
    from adaptmllm.io import sweep_temp_files

    run = tmp_path / "run"
    code = ("import os, signal, sys\nfrom adaptmllm.io import atomic_write_json\n"
            f"atomic_write_json({str(run / 'metrics.json')!r}, {{'bleu': 1}})\n"
            "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"atomic_write_json({str(run / 'metrics.json')!r}, {{'bleu': 2}})\n")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in run.iterdir())
    assert len(left) == 2 and left[0].startswith(".metrics.json.") and left[0].endswith(".tmp")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ".keep.x.tmp").write_text("not ours to judge")
    (run / "notes.tmp").write_text("a user's file")
    assert [p.name for p in sweep_temp_files(run)] == [left[0]]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "metrics.json", "notes.tmp"]
    assert json.loads((run / "metrics.json").read_text()) == {"bleu": 1}


def test_resumed_run_sweeps_stale_temp_files(lost_run):
    import dataclasses

    from adaptmllm.runs.pipeline import run

    cfg, first = lost_run
    stale = [first.run_dir / ".report.md.k1ll3d.tmp", first.run_dir / "data" / ".train.eng_Latn.abc123.tmp"]
    for p in stale:
        p.write_text("half")
    again = run(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=True)), progress=False)
    assert not any(p.exists() for p in stale)
    assert "removed 2 temporary file(s) left by a killed run" in (again.run_dir / "run.log").read_text()
