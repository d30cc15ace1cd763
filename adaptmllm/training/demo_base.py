"""The shipped demo base model (``assets/demo-base/``): the tiny NLLB-architecture model pretrained on the demo's
general-domain pairs, its cache key, and its rebuild: ``python -m adaptmllm.training.demo_base
--rebuild-demo-base``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from adaptmllm.config import TinyModelConfig, TrainConfig
from adaptmllm.data import demo
from adaptmllm.data.demo import DEMO_BASE_SEED
from adaptmllm.modeling.model import build_tiny_model, build_tokenizer, cache_dir
from adaptmllm.training.train import make_collator, tokenize_pairs, training_args

__all__ = ["SHIPPED_DEMO_BASE", "demo_base_key", "demo_base"]

log = logging.getLogger(__name__)


SHIPPED_DEMO_BASE = Path(__file__).resolve().parents[2] / "assets" / "demo-base"
"""The demo base at the default tiny sizes, shipped in the repository (about 4 MB), so the demo
and the tests skip the pretraining; rebuilt by :func:`demo_base` whenever the sizes or the demo
generator change (``python -m adaptmllm.training.demo_base --rebuild-demo-base`` refreshes it)."""


def demo_base_key(tiny: TinyModelConfig, seed: int = DEMO_BASE_SEED) -> str:
    """Cache key of a demo base: a hash of the tiny sizes, the demo generator version and the seed."""
    return hashlib.sha256(json.dumps([asdict(tiny), demo.VERSION, seed], sort_keys=True).encode()).hexdigest()[:12]


def _read_key(folder: Path) -> Optional[str]:
    try:
        return json.loads((folder / "adaptmllm_base.json").read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None


def demo_base(tiny: TinyModelConfig, seed: int = DEMO_BASE_SEED, progress: bool = True) -> Path:
    """The demo's multilingual base model (cached): a tiny NLLB-architecture model pretrained on
    general-domain artificial pairs English -> each demo language (see :mod:`adaptmllm.data.demo`).

    At the default sizes the shipped copy (:data:`SHIPPED_DEMO_BASE`) is used. Otherwise it is built
    once per (tiny sizes, generator version, seed) into ``cache_dir()/demo-base-<hash>`` and reused;
    that takes about two minutes on 2 CPU cores at the default sizes. Returns the folder
    (``save_pretrained`` layout: model + tokenizer + ``adaptmllm_base.json`` with the key).
    """
    key = demo_base_key(tiny, seed)
    shipped = SHIPPED_DEMO_BASE
    if (shipped / "model.safetensors").is_file() and _read_key(shipped) == key:
        return shipped
    folder = cache_dir() / f"demo-base-{key}"
    if (folder / "model.safetensors").is_file() and _read_key(folder) == key:
        return folder
    import torch
    from transformers import Seq2SeqTrainer

    log.info("pretraining the demo's multilingual base model once (cached in %s)", folder)
    work = Path(tempfile.mkdtemp(prefix="demo-base-", dir=cache_dir() if cache_dir().exists() else None))
    try:
        srcs, tgts, langs = [], [], []
        for i, lang in enumerate(demo.DEMO_TARGETS):
            s, t = demo.general_pairs(lang, tiny.pretrain_pairs, seed=seed + i)
            srcs += s
            tgts += t
            langs += [lang] * len(s)
        tokenizer = build_tokenizer(work / "tok", srcs + tgts, tiny.vocab_size, "eng_Latn", demo.DEMO_TARGETS[0], seed)
        model = build_tiny_model(tiny, tokenizer, seed)
        datasets = []
        for lang in demo.DEMO_TARGETS:
            idx = [i for i, lg in enumerate(langs) if lg == lang]
            tokenizer.tgt_lang = lang
            datasets.append(tokenize_pairs(tokenizer, [srcs[i] for i in idx], [tgts[i] for i in idx], 128, 128))
        from datasets import concatenate_datasets

        train_ds = concatenate_datasets(datasets).shuffle(seed=seed)
        tc = TrainConfig(learning_rate=2e-3, num_train_epochs=tiny.pretrain_epochs, per_device_train_batch_size=64,
                         seed=seed, warmup_ratio=0.05, logging_steps=50, precision="fp32")
        args = training_args(tc, work / "trainer", evaluate=False, progress=progress)
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
                                 data_collator=make_collator(tokenizer, model))
        trainer.train()
        tokenizer.tgt_lang = demo.DEMO_TARGETS[0]
        tmp = work / "final"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "adaptmllm_base.json").write_text(json.dumps({"key": key, "tiny": asdict(tiny), "seed": seed,
                                                             "demo_version": demo.VERSION}, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, folder)
        del trainer, model
        torch.set_num_threads(torch.get_num_threads())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    if sys.argv[1:] == ["--rebuild-demo-base"]:
        logging.basicConfig(level=logging.INFO)
        built = demo_base(TinyModelConfig(), progress=True)
        if built != SHIPPED_DEMO_BASE:
            shutil.rmtree(SHIPPED_DEMO_BASE, ignore_errors=True)
            shutil.copytree(built, SHIPPED_DEMO_BASE)
        print(SHIPPED_DEMO_BASE)
    else:
        print("usage: python -m adaptmllm.training.demo_base --rebuild-demo-base")
