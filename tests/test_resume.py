"""A run killed with SIGKILL mid-training resumes from its last checkpoint, losing nothing before it
(its energy figure too: the killed process's CodeCarbon row counts in the resumed run's report);
a Hugging Face token planted in the environment appears in no file the run writes nor in its output."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import tiny_dict


def test_sigkill_then_resume(tmp_path):
    cfg = tiny_dict(tmp_path / "runs", "killed")
    cfg["train"].update(num_train_epochs=3, eval_max_pairs=50, save_total_limit=3)
    cfg["green"] = {"measure_power_secs": 0.5, "flush_secs": 0.5}  # real CodeCarbon, written every 0.5 s
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "runs" / "killed"
    cmd = [sys.executable, "-m", "adaptmllm.cli", "run", "--config", str(path), "--quiet", "true"]
    token = "hf_PLANTEDfakeTOKENforTHEresumeTEST0123456789"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_TOKEN": token}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    first = None
    while time.time() < deadline and proc.poll() is None:
        states = sorted((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"))
        if states:
            first = states[0].parent
            time.sleep(0.5)  # the checkpoint is complete once its trainer_state.json is written
            break
        time.sleep(0.2)
    assert first is not None, "no checkpoint appeared before the run ended"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists()

    # Without resume, the half-done run folder is protected.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "--train.resume" in again.stderr

    done = subprocess.run(cmd + ["--train.resume", "true"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["resumed_from"] is not None
    resumed_step = int(metrics["train"]["resumed_from"].rsplit("-", 1)[1])
    assert resumed_step >= int(first.name.rsplit("-", 1)[1])
    steps_per_epoch = -(-800 // 16)
    assert metrics["train"]["global_step"] == 3 * steps_per_epoch
    assert metrics["finetuned"]["bleu"] > metrics["baseline"]["bleu"]
    # Energy: the killed process left its row in green/emissions.csv; the report adds it to the resumed one's.
    rows = list(csv.DictReader((run_dir / "green" / "emissions.csv").open()))
    assert len(rows) == 2 and rows[0]["run_id"] != rows[1]["run_id"]
    assert float(rows[0]["duration"]) > 0 and float(rows[0]["energy_consumed"]) > 0
    green = metrics["green"]
    assert green["duration_s"] == pytest.approx(sum(float(r["duration"]) for r in rows), rel=0.01)
    assert green["energy_kwh"] == pytest.approx(sum(float(r["energy_consumed"]) for r in rows), rel=0.01)
    assert any("Includes 1 earlier process" in n for n in green["notes"])

    # The planted token: in no file of the run folder (read as bytes: configs, logs, reports, metrics,
    # checkpoints with their training_args.bin) and in no output of the commands.
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(written) > 20 and not [str(p) for p in written if token.encode() in p.read_bytes()]
    assert token not in again.stdout + again.stderr + done.stdout + done.stderr
