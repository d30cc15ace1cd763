"""Training that survives faults: checked checkpoints, mid-epoch saves, a full disk, out of memory.

Used by :func:`adaptmllm.training.train.fine_tune`:

- :func:`find_resume_checkpoint` picks the newest *complete* ``checkpoint-<step>`` folder to resume
  from (one a kill left half-written is skipped, with a warning) and checks its files, so that a
  damaged checkpoint stops the run with :class:`CheckpointError` naming the file and the fix,
  instead of a traceback from deep inside torch or safetensors.
- :func:`save_every_steps` (``train.save_steps``) saves a checkpoint every N optimizer steps,
  so that a run killed mid-epoch loses at most N steps.
- :func:`resilient_trainer_class` wraps the Trainer's checkpoint save: when the disk is full, the
  half-written checkpoint is removed, the last good one is kept, and :class:`DiskFullError` says so.
- :func:`oom_plan` turns a GPU out-of-memory error into the next plan to try (smaller batch with
  more accumulation, gradient checkpointing, ZeRO-3/offload, LoRA); with ``train.auto_batch`` the
  training loop retries with :func:`halve_batch`.

Imports nothing heavy at module level.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import traceback
import zipfile
from pathlib import Path
from typing import Any, Optional

__all__ = ["TrainingError", "CheckpointError", "DiskFullError", "TrainingOutOfMemoryError", "checkpoint_folders",
           "checkpoint_step", "find_resume_checkpoint", "check_checkpoint", "save_every_steps", "resilient_trainer_class",
           "is_disk_full", "is_out_of_memory", "oom_in_evaluation", "oom_plan", "halve_batch",
           "shuffle_batches"]

log = logging.getLogger("adaptmllm")

_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin",
            "model.safetensors.index.json", "pytorch_model.bin.index.json")


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to do next."""


class CheckpointError(TrainingError):
    """A checkpoint to resume from is damaged or incomplete; the message names the file and the fix."""


class DiskFullError(TrainingError):
    """No space left to save a checkpoint; the half-written one was removed, the last good one kept."""


class TrainingOutOfMemoryError(TrainingError):
    """The GPU ran out of memory; the message proposes the next plan (and lists any auto-batch retries)."""


def checkpoint_step(folder: Path) -> int:
    """The step of a ``checkpoint-<step>`` folder, -1 for any other name."""
    m = re.fullmatch(r"checkpoint-(\d+)", folder.name)
    return int(m.group(1)) if m else -1


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-<step>`` folders under ``output_dir`` (complete or not), newest (highest step)
    first; none when ``output_dir`` is missing."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) >= 0]
    return sorted(found, key=checkpoint_step, reverse=True)


def _complete(folder: Path) -> bool:
    """The Trainer writes ``trainer_state.json`` last: a checkpoint is complete once it holds a valid one."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def check_checkpoint(folder: str | Path, previous: Optional[str | Path] = None) -> None:
    """Check that a complete checkpoint's files are readable: the weights (safetensors header and
    size, or a readable torch zip archive) and the optimizer/scheduler/RNG states when present.
    Cheap: reads headers only, never the tensors.

    Raises:
        CheckpointError: naming the damaged or missing file and the fix (delete the folder to resume
            from ``previous``, or ``--overwrite true`` to start afresh).
    """
    folder = Path(folder)
    fix = (f"delete {folder} to resume from {previous}" if previous else
           f"delete {folder} to resume from the beginning") + ", or pass --overwrite true to start the run afresh"
    if any(folder.glob("global_step*")):  # a DeepSpeed checkpoint: its engine checks its own files
        return
    weights = [folder / w for w in _WEIGHTS if (folder / w).is_file()]
    if not weights:
        raise CheckpointError(f"{folder}: no model weights (none of {', '.join(_WEIGHTS[:3])}); the checkpoint is "
                              f"incomplete; {fix}")
    for path in weights:
        problem = _file_problem(path)
        if problem:
            raise CheckpointError(f"{path}: {problem}; the checkpoint is damaged; {fix}")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        path = folder / name
        if path.is_file():
            problem = _file_problem(path)
            if problem:
                raise CheckpointError(f"{path}: {problem}; the checkpoint is damaged; {fix}")


def _file_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be read as the file it claims to be, or None when it looks whole."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as e:  # SafetensorError and OSError: a truncated or overwritten file
            return f"not a readable safetensors file ({str(e).splitlines()[0][:200]})"
    elif path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            return f"not valid JSON ({e})"
    elif path.suffix in (".pt", ".pth", ".bin"):
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one has no directory
            return "not a readable torch file (truncated?)"
    return None


def find_resume_checkpoint(output_dir: str | Path) -> Optional[str]:
    """The checkpoint to resume from: the newest complete ``checkpoint-<step>`` under ``output_dir``,
    checked with :func:`check_checkpoint`; None when there is none. Newer incomplete ones (a kill
    while saving leaves no valid ``trainer_state.json``) are skipped with a warning and left on disk.

    Raises:
        CheckpointError: the newest complete checkpoint is damaged (a file truncated or missing).
    """
    ckpts = checkpoint_folders(output_dir)
    complete = [c for c in ckpts if _complete(c)]
    if not complete:
        if ckpts:
            log.warning("train.resume: %s holds only incomplete checkpoints (%s); starting from the beginning",
                        output_dir, ", ".join(c.name for c in ckpts))
        return None
    newest = complete[0]
    skipped = [c.name for c in ckpts if checkpoint_step(c) > checkpoint_step(newest)]
    if skipped:
        log.warning("train.resume: skipping incomplete checkpoint(s) %s (a kill while saving); resuming from %s",
                    ", ".join(skipped), newest.name)
    check_checkpoint(newest, complete[1] if len(complete) > 1 else None)
    return str(newest)


def save_every_steps(every: int) -> Any:
    """A ``transformers.TrainerCallback`` that asks the Trainer to save a checkpoint every ``every``
    optimizer steps (on top of its own saves at each evaluation), so that a kill mid-epoch loses at
    most ``every`` steps (``train.save_steps``).

    Raises:
        ValueError: ``every`` < 1.
    """
    from transformers import TrainerCallback

    if every < 1:
        raise ValueError(f"save every {every} steps: must be >= 1")

    class SaveEverySteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % every == 0:
                control.should_save = True
            return control

    return SaveEverySteps()


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` means no space (or quota) left: ``OSError`` ENOSPC/EDQUOT, or torch's and
    safetensors' wrapped forms of it."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "No space left on device" in text or "Disk quota exceeded" in text


def resilient_trainer_class(base: type) -> type:
    """A subclass of the Trainer class ``base`` whose checkpoint save survives a full disk: the
    half-written ``checkpoint-<step>`` folder is removed (so that resume never picks it), the older
    checkpoints are untouched (rotation happens only after a complete save), and
    :class:`DiskFullError` names the folder, the checkpoint kept and the fix."""

    class ResilientTrainer(base):
        __doc__ = f"{base.__name__} whose checkpoint save turns a full disk into DiskFullError."

        def _get_train_sampler(self, *args, **kwargs):
            # transformers' LengthGroupedSampler draws its order from the global RNG when the epoch
            # starts; a run resumed mid-epoch has another RNG state there, so it would see other
            # batches than the run it continues. Seed each epoch's order by (data seed, epoch).
            from transformers.trainer_pt_utils import LengthGroupedSampler

            sampler = super()._get_train_sampler(*args, **kwargs)
            if type(sampler) is LengthGroupedSampler:
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                return _epoch_seeded(sampler, seed)
            return sampler

        def _save_checkpoint(self, model, trial):
            run_dir = Path(self._get_output_dir(trial=trial))
            folder = run_dir / f"checkpoint-{self.state.global_step}"
            existed = folder.exists()
            try:
                return super()._save_checkpoint(model, trial)
            except Exception as e:
                if not is_disk_full(e):
                    raise
                if not existed:
                    shutil.rmtree(folder, ignore_errors=True)
                kept = [c for c in checkpoint_folders(run_dir) if _complete(c)]
                where = f"the last good checkpoint {kept[0]} is kept" if kept else "no earlier checkpoint exists"
                raise DiskFullError(
                    f"no space left on the disk of {run_dir} while saving checkpoint-{self.state.global_step} "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else e}); the half-written "
                    f"checkpoint was removed and {where}. Free space (`df -h {run_dir}`), or lower "
                    "train.save_total_limit, then run the same command with --train.resume true") from None

    ResilientTrainer.__name__ = ResilientTrainer.__qualname__ = f"Resilient{base.__name__}"
    return ResilientTrainer


def _epoch_seeded(sampler: Any, seed: int) -> Any:
    """``sampler`` (a LengthGroupedSampler) as one whose order is a function of ``seed`` and the epoch
    (``set_epoch``, called by the Trainer's data loader each epoch), never of the global RNG."""
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)

        def __iter__(self):
            import torch

            g = torch.Generator()
            g.manual_seed(seed * 1000 + self.epoch)
            return iter(shuffle_batches(get_length_grouped_indices(self.lengths, self.batch_size, generator=g),
                                        self.batch_size, g))

    return EpochSeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths)


def shuffle_batches(indices: list[int], batch_size: int, generator: Any) -> list[int]:
    """``indices`` (N dataset indices, each run of ``batch_size`` one batch) with the batches in a random
    order drawn from ``generator`` (a ``torch.Generator``); the first batch stays first and a last,
    shorter batch stays last, so the batches themselves are unchanged.

    transformers' ``get_length_grouped_indices`` sorts each mega-batch of 50 batches by length, longest
    first: training then sweeps from the longest to the shortest segments every 50 steps, a periodic
    drift in the gradients that a model trained from scratch learns slowly under (issue 20). The
    batches keep their similar lengths (the padding saving); only their order is shuffled.
    """
    import torch

    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    tail = [batches.pop()] if len(batches) > 1 and len(batches[-1]) < batch_size else []
    if len(batches) > 2:
        rest = batches[1:]
        batches = batches[:1] + [rest[i] for i in torch.randperm(len(rest), generator=generator).tolist()]
    return [i for b in batches + tail for i in b]


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is a GPU (or accelerator) out-of-memory error (``torch.OutOfMemoryError``, or a
    RuntimeError whose message says so, as some kernels raise)."""
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower() and "CUDA" in str(e)


def oom_in_evaluation(e: BaseException) -> bool:
    """Whether the out-of-memory error ``e`` was raised while evaluating (generating on the dev set)."""
    names = {f.name for f in traceback.extract_tb(e.__traceback__)}
    return bool(names & {"evaluate", "evaluation_loop", "prediction_step", "predict"})


def halve_batch(tc: Any, in_eval: bool = False) -> Optional[Any]:
    """The next :class:`~adaptmllm.config.TrainConfig` of the auto-batch ladder, or None at batch 1.

    Training ran out of memory: half the per-device batch and twice the gradient accumulation (an odd
    batch b goes to its largest divisor below b, with accumulation multiplied by the same factor), so
    the effective batch, the steps per epoch and any checkpoint stay valid. Evaluation ran out of
    memory (``in_eval``): half the evaluation batch.
    """
    import dataclasses

    if in_eval:
        if tc.per_device_eval_batch_size <= 1:
            return None
        return dataclasses.replace(tc, per_device_eval_batch_size=tc.per_device_eval_batch_size // 2)
    b = tc.per_device_train_batch_size
    if b <= 1:
        return None
    new = next(d for d in range(b // 2, 0, -1) if b % d == 0)
    return dataclasses.replace(tc, per_device_train_batch_size=new,
                               gradient_accumulation_steps=tc.gradient_accumulation_steps * (b // new))


def gpu_line() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    try:
        i = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(i).total_memory / 2**30
        return f"{torch.cuda.get_device_name(i)}, {total:.0f} GiB"
    except Exception:  # pragma: no cover - a broken driver state after OOM
        return "CUDA GPU"


def oom_plan(e: BaseException, tc: Any, plan: Any = None, lora: bool = False, retries: Optional[list] = None,
             in_eval: bool = False) -> str:
    """The message of :class:`TrainingOutOfMemoryError`: what ran out, then the next plans in order,
    each as the flags to pass, leaving out what is already on.

    Args:
        e: the out-of-memory error.
        tc: the :class:`~adaptmllm.config.TrainConfig` that ran out of memory.
        plan: the memory plan used (:class:`adaptmllm.training.memory_plan.ZeroPlan`), if any.
        lora: whether LoRA adapters were being trained.
        retries: auto-batch retries already made (dicts with ``per_device_train_batch_size`` ...).
        in_eval: the error came from the dev-set evaluation.
    """
    first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    where = "evaluating on the dev set" if in_eval else "training"
    head = (f"out of GPU memory while {where} ({gpu_line()}; per_device_train_batch_size "
            f"{tc.per_device_train_batch_size}, gradient_accumulation_steps {tc.gradient_accumulation_steps}, "
            f"per_device_eval_batch_size {tc.per_device_eval_batch_size}): {first}.")
    steps = []
    if in_eval:
        steps.append(f"a smaller evaluation batch: --train.per_device_eval_batch_size "
                     f"{max(1, tc.per_device_eval_batch_size // 2)} (or --train.auto_batch true)")
    smaller = halve_batch(tc)
    if smaller is not None:
        steps.append(f"a smaller batch with more accumulation (the same effective batch): "
                     f"--train.per_device_train_batch_size {smaller.per_device_train_batch_size} "
                     f"--train.gradient_accumulation_steps {smaller.gradient_accumulation_steps}"
                     + ("" if tc.auto_batch else " (or --train.auto_batch true to step down automatically)"))
    checkpointing = plan.gradient_checkpointing if plan is not None else bool(tc.gradient_checkpointing)
    if not checkpointing:
        steps.append("gradient checkpointing (about 30% slower, far less activation memory): "
                     "--train.gradient_checkpointing true")
    stage = int(getattr(plan, "stage", 0) or 0) if plan is not None else 0
    offload = bool(getattr(plan, "offload_optimizer", False))
    if stage != 3 or not offload:
        steps.append("DeepSpeed ZeRO-3 with CPU offload of the optimizer states (the memory planner in "
                     "adaptmllm/training/memory_plan.py explains the fit): --train.deepspeed.stage 3 "
                     "--train.deepspeed.offload_optimizer true")
    if not lora:
        steps.append("LoRA adapters instead of all weights: --model.lora.enabled true")
    steps.append("shorter segments: lower --model.max_source_length / --model.max_target_length")
    tried = ""
    if retries:
        tried = " Auto-batch already tried: " + "; ".join(
            f"batch {r['per_device_train_batch_size']} x accumulation {r['gradient_accumulation_steps']}"
            for r in retries) + "."
    return head + tried + " Next plans, in order: " + "; ".join(f"({i}) {s}" for i, s in enumerate(steps, 1)) + \
        ". Then run the same command with --train.resume true to continue from the last checkpoint."
