"""Measure the notebook's tiny demo (its parameters cell as committed: OVERRIDES on the tiny model) and
write bench/results/notebook-demo-<date>.json: training and whole-run seconds with the machine named
(CPU model, cores, load average before and after). The notebook's time table quotes this file
(tests/test_notebook.py checks that the figures agree).

    python bench/notebook_demo_time.py [--out bench/results/notebook-demo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from machine import cpu_model  # noqa: E402  (one way to name the machine, bench/machine.py)


def machine() -> dict:
    """CPU model, cores, load average and whether a GPU is present."""
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / f"notebook-demo-{time.strftime('%Y-%m-%d')}.json"))
    args = parser.parse_args()
    from adaptmllm.apps.notebook.forms import start_config
    from adaptmllm.runs.pipeline import run

    nb = nbformat.read(str(REPO / "notebooks" / "adaptmllm.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(cell.source, ns)
    before = machine()
    with tempfile.TemporaryDirectory() as tmp:
        config = start_config(None, ns["OVERRIDES"], name="demo", runs_dir=tmp, overwrite=True)
        t0 = time.perf_counter()
        result = run(config, progress=False)
        total = time.perf_counter() - t0
        metrics = result.metrics
    out = {"what": "the notebook's tiny demo (parameters cell as committed), adaptmllm.runs.pipeline.run",
           "date": time.strftime("%Y-%m-%d"), "train_seconds": metrics["train"]["train_runtime_s"],
           "total_seconds": round(total, 1), "machine": before,
           "load_average_1min_after": round(os.getloadavg()[0], 2),
           "finetuned_chrf": metrics["finetuned"]["chrf"]}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
