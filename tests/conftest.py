"""Shared fixtures: a tiny demo config, and one real end-to-end run per test session.

Everything is built locally (no hub): the demo's base model is pretrained once per session into a
temporary ADAPTMLLM_CACHE, at sizes small enough for a 2-core CPU.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """A per-session model cache, so the demo base is built here, not read from ~/.cache."""
    from adaptmllm.io import temporary_env

    cache = tmp_path_factory.mktemp("adaptmllm-cache")
    with temporary_env({"ADAPTMLLM_CACHE": str(cache)}):
        yield cache


_DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "ACCELERATE_USE_DEEPSPEED", "CROSS_RANK", "CROSS_SIZE", "GROUP_RANK")


@pytest.fixture(autouse=True)
def _no_distributed_leak():
    """Restore the distributed-launch variables after each test: DeepSpeed and accelerate set them in
    os.environ, and a leftover RANK/WORLD_SIZE makes every later Trainer try torch.distributed."""
    from adaptmllm.io import temporary_env

    with temporary_env(restore=_DIST_ENV):
        yield
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        pass


def tiny_dict(runs_dir: Path, name: str = "t") -> dict:
    """A small demo config (as a dict): well under a minute end to end on 2 CPU cores."""
    return {
        "name": name,
        "runs_dir": str(runs_dir),
        "data": {"src_lang": "eng_Latn", "tgt_lang": "qaa_Latn", "demo_train_pairs": 800},
        # Default tiny sizes: the demo base shipped in assets/demo-base is used (no pretraining here).
        "model": {"name_or_path": "tiny"},
        "train": {"learning_rate": 2e-3, "num_train_epochs": 4, "per_device_train_batch_size": 16,
                  "eval_max_pairs": 100, "logging_steps": 10, "warmup_ratio": 0.0},
        "eval": {"num_beams": 2, "batch_size": 64},
        "green": {"measure_power_secs": 1.0},
    }


@pytest.fixture()
def tiny_cfg(tmp_path):
    """A fresh small demo :class:`adaptmllm.Config` writing into ``tmp_path/runs``."""
    from adaptmllm.config import config_from_dict

    return config_from_dict(tiny_dict(tmp_path / "runs"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One real end-to-end run of the pipeline on the small demo (shared by the tests that read it)."""
    from adaptmllm.config import config_from_dict
    from adaptmllm.runs.pipeline import run

    runs = tmp_path_factory.mktemp("runs")
    return run(config_from_dict(tiny_dict(runs, "session")), progress=False)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
