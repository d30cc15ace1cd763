"""What this machine offers a run: the distributed world (world size, rank 0, the variables a single-process
DeepSpeed run needs), GPU and host memory (GiB), the precision to train in (``auto`` -> bf16 on a bf16-capable
CUDA GPU, else fp32), freeing memory between trials, and whether this runs in Google Colab.

Imports nothing of adaptmllm.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import sys
import threading
from typing import Any, Iterator, Optional

__all__ = ["INSTALL_COMMANDS", "installed", "world_size", "is_main_process", "ensure_distributed_env",
    "no_deepspeed_env", "gpu_memory_gib", "host_memory_gib", "resolve_precision", "resolve_optim", "tf32_supported",
    "free_memory", "in_colab"]

GIB = 2**30


INSTALL_COMMANDS = {"deepspeed": "pip install deepspeed", "peft": "pip install peft",
                    "bitsandbytes": "pip install bitsandbytes"}
"""The one command that installs each optional package (all three: ``pip install 'adaptmllm[gpu]'``)."""


def installed(package: str) -> bool:
    """Whether ``package`` can be imported here (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent missing, or sys.modules[package] = None
        return False


def world_size() -> int:
    """Data-parallel ranks of this run: the launcher's ``WORLD_SIZE`` (1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """Whether this process is rank 0 (the one that scores and writes the run folder)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_distributed_env() -> dict:
    """Set the variables a single-process DeepSpeed run needs (``RANK=0 LOCAL_RANK=0 WORLD_SIZE=1
    MASTER_ADDR=127.0.0.1 MASTER_PORT=<free port>``) where the launcher did not; returns those set."""
    want = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    done = {}
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return done
    for k, v in want.items():
        if k not in os.environ:
            os.environ[k] = done[k] = v
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = done["MASTER_PORT"] = str(_free_port())
    return done


@contextlib.contextmanager
def no_deepspeed_env() -> Iterator[None]:
    """Hide ``ACCELERATE_USE_DEEPSPEED`` while a Trainer that must not use DeepSpeed is built and run.

    accelerate sets that variable for the whole process once any Accelerator got a DeepSpeed plugin
    (and ``accelerate launch --use_deepspeed`` sets it), after which every new Trainer would take
    the DeepSpeed path; restored on exit."""
    old = os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
    try:
        yield
    finally:
        if old is not None:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = old


def gpu_memory_gib() -> Optional[float]:
    """Total memory (GiB) of this process's CUDA device, or None without a GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        dev = int(os.environ.get("LOCAL_RANK", "0") or 0) % max(1, torch.cuda.device_count())
        return torch.cuda.get_device_properties(dev).total_memory / GIB
    except Exception:  # pragma: no cover - broken driver
        return None


def host_memory_gib() -> Optional[float]:
    """Total host RAM (GiB), or None when it cannot be read."""
    try:
        import psutil

        return psutil.virtual_memory().total / GIB
    except Exception:  # pragma: no cover
        return None


log = logging.getLogger(__name__)


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a CUDA GPU that supports it, else ``fp32``; others unchanged.

    ``fp16`` is allowed but warned about: NLLB can overflow in fp16.
    """
    import torch

    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if precision in ("bf16", "fp16") and not torch.cuda.is_available():
        log.warning("train.precision=%s needs a GPU; using fp32 on this CPU", precision)
        return "fp32"
    if precision == "fp16":
        log.warning("train.precision=fp16: NLLB can overflow in fp16; prefer bf16 on Ampere or newer GPUs")
    return precision


def resolve_optim(optim: str) -> str:
    """``auto`` -> ``adamw_torch_fused`` (AdamW with torch's fused kernel, CPU and CUDA); others unchanged."""
    return "adamw_torch_fused" if optim == "auto" else optim


def tf32_supported() -> bool:
    """Whether this machine has a CUDA GPU with TF32 matmuls (Ampere, compute capability 8.0, or newer)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def on_device(model: Any) -> Any:
    """The model on the GPU when one is visible (fp32, as the pipeline scores after training), else as is."""
    import torch

    return model.to("cuda") if torch.cuda.is_available() else model


# ----------------------------------------------------------------------------- memory

class PeakMemory:
    """Peak resident memory (MiB) of this process while the block runs, sampled every ``interval`` s
    in a thread, and the peak CUDA memory allocated by torch (MiB, 0 without a GPU)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_rss_mb = 0.0
        self.peak_cuda_mb = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss_mb = max(self.peak_rss_mb, self._rss())

    def __enter__(self) -> "_PeakMemory":
        import psutil
        import torch

        self._proc = psutil.Process()
        self.peak_rss_mb = self._rss()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._loop, name="adaptmllm-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        import torch

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, self._rss())
        if torch.cuda.is_available():
            self.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
        return False


def free_memory() -> None:
    """Free what a finished trial left behind, before the next trial builds its model: Python garbage
    (``gc.collect()``), the CUDA allocator's cache (``torch.cuda.empty_cache()``) and, when the trial
    ran under DeepSpeed, Accelerate's global DeepSpeed state and transformers' ZeRO-3 config, so that
    the next trial builds a fresh engine from its own config instead of reusing the last one's; on
    Linux the C heap's free pages go back to the OS (``malloc_trim``)."""
    gc.collect()
    try:
        from accelerate.state import AcceleratorState

        shared = AcceleratorState._shared_state
        if shared.get("deepspeed_plugins") or shared.get("deepspeed_plugin"):
            AcceleratorState._reset_state()
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            unset_hf_deepspeed_config()
    except ImportError:  # pragma: no cover - accelerate is a dependency
        pass
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _malloc_trim()


def _malloc_trim() -> None:
    """Give the C heap's free pages back to the OS (glibc only), so that freed tensors leave resident memory."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# ------------------------------------------------------------------------------------------ environment

def in_colab() -> bool:
    """Whether this runs in Google Colab."""
    if "google.colab" in sys.modules:
        return True
    try:
        import google.colab  # type: ignore  # noqa: F401
    except ImportError:
        return False
    return True
