"""One rank of a multi-process test run: ``torchrun --nproc_per_node 2 tests/distributed_worker.py RECORD_DIR
RUNS_DIR adaptmllm-arguments...`` runs ``adaptmllm.cli.main(adaptmllm-arguments)`` exactly as
``torchrun -m adaptmllm.cli`` would, and records what this rank did into ``RECORD_DIR/rank<R>.json``:

- ``batches``: the training batches this rank's Trainer stepped on (each row of ``input_ids`` without
  padding), in order, so a test can check the ranks saw different shards of the data; ``losses``:
  this rank's training loss of each of those steps (on its own shard, before averaging over ranks);
- ``writes``: every file or folder under ``RUNS_DIR`` this process opened for writing, created, renamed
  or removed (Python audit events ``open``, ``os.mkdir``, ``os.rename``, ``os.replace``, ``os.remove``,
  ``os.rmdir``, ``shutil.rmtree``). Writes made by native code that bypasses Python's ``open``
  (safetensors' Rust writer) are not seen; the test also compares the run folder's file list.
- ``storages``: the Optuna storages this process opened (``optuna.storages.RDBStorage``, by URL scheme);
- ``world_size``, ``exit``: torch.distributed's world size as the Trainer saw it, and main's return value.

Observation only: nothing of adaptmllm is replaced.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

record_dir, runs_dir, argv = Path(sys.argv[1]), os.path.realpath(sys.argv[2]), sys.argv[3:]
rank = int(os.environ.get("RANK", "0"))
record: dict = {"rank": rank, "batches": [], "losses": [], "writes": [], "storages": [], "world_size": None}
_recording = [True]


def _under_runs(path) -> bool:
    try:
        return os.path.realpath(os.fsdecode(path)).startswith(runs_dir + os.sep)
    except (TypeError, ValueError):
        return False


def _audit(event: str, args: tuple) -> None:
    if not _recording[0]:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing and isinstance(path, (str, bytes, os.PathLike)) and _under_runs(path):
            record["writes"].append(["open", os.fsdecode(path)])
    elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree"):
        targets = args[:2] if event in ("os.rename", "os.replace") else args[:1]  # (source, destination)
        for path in targets:
            if isinstance(path, (str, bytes, os.PathLike)) and _under_runs(path):
                record["writes"].append([event, os.fsdecode(path)])


sys.addaudithook(_audit)

from transformers import Seq2SeqTrainer  # noqa: E402

_step = Seq2SeqTrainer.training_step


def _recording_step(self, model, inputs, *args, **kwargs):
    import torch.distributed as dist

    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    record["batches"].append([row[m.bool()].tolist() for row, m in zip(ids, mask)])
    if record["world_size"] is None:
        record["world_size"] = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    loss = _step(self, model, inputs, *args, **kwargs)
    record["losses"].append(round(float(loss), 4))  # this rank's loss on its own shard of the batch
    return loss


Seq2SeqTrainer.training_step = _recording_step  # observes the batch, then runs the real step

try:
    import optuna

    _rdb_init = optuna.storages.RDBStorage.__init__

    def _recording_rdb_init(self, url, *args, **kwargs):
        record["storages"].append(str(url).split(":", 1)[0])
        return _rdb_init(self, url, *args, **kwargs)

    optuna.storages.RDBStorage.__init__ = _recording_rdb_init  # observes, then opens the real storage
except ImportError:  # pragma: no cover - optuna is a dependency
    pass

from adaptmllm.cli import main  # noqa: E402

try:
    record["exit"] = main(argv)
finally:
    _recording[0] = False
    record_dir.mkdir(parents=True, exist_ok=True)
    (record_dir / f"rank{rank}.json").write_text(json.dumps(record))
sys.exit(record["exit"])
