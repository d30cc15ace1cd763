"""The memory plan of a run: NLLB architectures and sizes, the bytes per parameter of each ZeRO stage and
offload, activation estimates (GiB), and the plan that fits this machine (:func:`plan_training`); the
DeepSpeed config it writes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import ConfigError, DeepSpeedConfig, TrainConfig
from adaptmllm.hardware import (GIB, INSTALL_COMMANDS, gpu_memory_gib, host_memory_gib, installed, resolve_precision,
                                world_size)

__all__ = ["NLLB_VOCAB_SIZE", "NLLB_ARCHITECTURES", "nllb_architecture", "nllb_config", "ModelSize",
    "activation_gib", "ZeroPlan", "deepspeed_config", "candidate_plans", "plan_memory", "plan_training"]

log = logging.getLogger(__name__)


NLLB_VOCAB_SIZE = 256_206
"""Vocabulary of every NLLB-200 checkpoint (facebook/nllb-200-* config.json: ``vocab_size``)."""


_NLLB_600M = dict(d_model=1024, encoder_layers=12, decoder_layers=12, attention_heads=16, ffn_dim=4096)


_NLLB_1_3B = dict(d_model=1024, encoder_layers=24, decoder_layers=24, attention_heads=16, ffn_dim=8192)


_NLLB_3_3B = dict(d_model=2048, encoder_layers=24, decoder_layers=24, attention_heads=16, ffn_dim=8192)


NLLB_ARCHITECTURES: dict[str, dict] = {
    "facebook/nllb-200-distilled-600M": _NLLB_600M,
    "facebook/nllb-200-distilled-1.3B": _NLLB_1_3B,
    "facebook/nllb-200-1.3B": _NLLB_1_3B,
    "facebook/nllb-200-3.3B": _NLLB_3_3B,
}
"""Sizes of the NLLB-200 checkpoints, from their config.json on the Hugging Face hub (Costa-jussà et
al. 2022, "No Language Left Behind", table 40): all have vocabulary 256,206, 1,024 positions,
``scale_embedding`` and tied embeddings. Used to build random-init models offline (benchmarks, planner)."""


_ALIASES = {"600m": "facebook/nllb-200-distilled-600M", "distilled-600m": "facebook/nllb-200-distilled-600M",
            "1.3b": "facebook/nllb-200-1.3B", "distilled-1.3b": "facebook/nllb-200-distilled-1.3B",
            "3.3b": "facebook/nllb-200-3.3B"}


RESERVE_GIB = 1.0
"""GPU memory (GiB) the planner keeps free for the CUDA context and kernels' workspaces."""


FRAGMENTATION = 0.05
"""Share of GPU memory the planner keeps free for the caching allocator's fragmentation."""


LOGIT_BYTES = {2: 12, 4: 16}
"""Bytes per element of the output logits (batch x target length x vocabulary) kept for the loss:
16-bit logits + fp32 log-softmax + its gradient (2+4+4, rounded up for label smoothing), or all fp32."""


def nllb_architecture(name: str) -> dict:
    """Sizes (``d_model``, ``encoder_layers``, ``decoder_layers``, ``attention_heads``, ``ffn_dim``) of an
    NLLB-200 checkpoint by hub name (``facebook/nllb-200-3.3B``), folder name or alias (``600M``, ``1.3B``, ``3.3B``).

    Raises:
        ValueError: not an NLLB-200 checkpoint this table knows (the message lists them).
    """
    key = name.strip().rstrip("/")
    if key in NLLB_ARCHITECTURES:
        return dict(NLLB_ARCHITECTURES[key])
    low = key.lower()
    for alias, hub in _ALIASES.items():
        if low == alias or low == f"nllb-{alias}" or low == f"nllb-200-{alias}":
            return dict(NLLB_ARCHITECTURES[hub])
    base = Path(key).name
    for hub, arch in NLLB_ARCHITECTURES.items():
        if base == hub.split("/")[1]:
            return dict(arch)
    raise ValueError(f"{name!r} is not a known NLLB-200 checkpoint; known: {', '.join(NLLB_ARCHITECTURES)} "
                     f"(or {', '.join(sorted({'600M', '1.3B', '3.3B'}))})")


def nllb_config(name: str, **overrides: Any) -> Any:
    """An ``M2M100Config`` equal to the hub's config of NLLB-200 checkpoint ``name`` (see
    :func:`nllb_architecture`), built offline: dropout 0.1, attention dropout 0.1, ReLU, LayerDrop 0,
    pad 1 / bos 0 / eos 2 = decoder start. ``overrides`` replace any field (e.g. ``vocab_size``)."""
    from transformers import M2M100Config

    a = nllb_architecture(name)
    kw: dict[str, Any] = dict(
        vocab_size=NLLB_VOCAB_SIZE, d_model=a["d_model"], encoder_layers=a["encoder_layers"],
        decoder_layers=a["decoder_layers"], encoder_attention_heads=a["attention_heads"],
        decoder_attention_heads=a["attention_heads"], encoder_ffn_dim=a["ffn_dim"], decoder_ffn_dim=a["ffn_dim"],
        max_position_embeddings=1024, scale_embedding=True, dropout=0.1, attention_dropout=0.1,
        activation_dropout=0.0, activation_function="relu", encoder_layerdrop=0.0, decoder_layerdrop=0.0,
        init_std=0.02, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        tie_word_embeddings=True, use_cache=True, tokenizer_class="NllbTokenizer",
    )
    kw.update(overrides)
    return M2M100Config(**kw)


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts and shape of an encoder-decoder (M2M100/NLLB) model.

    Attributes:
        total_params: distinct parameters (tied embeddings counted once).
        trainable_params: those with ``requires_grad`` (all, for a config).
        largest_layer_params: parameters of the largest single module (its own, not its children's),
            as DeepSpeed's ZeRO-3 estimator counts it: the shared embedding for NLLB.
        embedding_params: the shared token embedding (vocabulary x d_model), also the tied output projection.
        encoder_params, decoder_params: non-embedding parameters of encoder and decoder.
        d_model, encoder_layers, decoder_layers, attention_heads, ffn_dim, vocab_size: the shape.
    """

    total_params: int
    trainable_params: int
    largest_layer_params: int
    embedding_params: int
    encoder_params: int
    decoder_params: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    attention_heads: int
    ffn_dim: int
    vocab_size: int

    @classmethod
    def from_config(cls, config: Any) -> "ModelSize":
        """Counts computed from an ``M2M100Config`` without building the model (exact for M2M100/NLLB)."""
        d, f, v = config.d_model, config.encoder_ffn_dim, config.vocab_size
        attn = 4 * (d * d + d)
        enc_layer = attn + (d * f + f) + (f * d + d) + 2 * 2 * d
        dec_layer = 2 * attn + (d * config.decoder_ffn_dim + config.decoder_ffn_dim) + (config.decoder_ffn_dim * d + d) \
            + 3 * 2 * d
        enc = config.encoder_layers * enc_layer + 2 * d
        dec = config.decoder_layers * dec_layer + 2 * d
        emb = v * d
        total = emb + enc + dec
        return cls(total, total, emb, emb, enc, dec, d, config.encoder_layers, config.decoder_layers,
                   config.encoder_attention_heads, f, v)

    @classmethod
    def from_model(cls, model: Any) -> "ModelSize":
        """Counts of a live model (a PEFT wrapper included): distinct parameters, trainable ones, largest module."""
        seen: dict[int, Any] = {}
        for p in model.parameters():
            seen.setdefault(id(p), p)
        numel = (lambda p: int(p.ds_numel)) if any(hasattr(p, "ds_numel") for p in seen.values()) else (
            lambda p: p.numel())
        total = sum(numel(p) for p in seen.values())
        trainable = sum(numel(p) for p in seen.values() if p.requires_grad)
        largest = max((sum(numel(p) for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
        cfg = getattr(model, "config", None)
        ref = cls.from_config(cfg) if cfg is not None and hasattr(cfg, "encoder_ffn_dim") else None
        if ref is None:
            return cls(total, trainable, largest, 0, total, 0, 0, 0, 0, 1, 0, 0)
        return cls(total, trainable, largest, ref.embedding_params, ref.encoder_params, ref.decoder_params,
                   ref.d_model, ref.encoder_layers, ref.decoder_layers, ref.attention_heads, ref.ffn_dim,
                   ref.vocab_size)


def activation_gib(size: ModelSize, batch: int, src_len: int, tgt_len: int, act_bytes: int = 2,
                   checkpointing: bool = False) -> float:
    """Estimated activation memory (GiB) of one training step of an encoder-decoder transformer.

    Per layer, after Korthikanti et al. (2022), "Reducing Activation Recomputation in Large Transformer
    Models", section 4.1: a layer with hidden size h, FFN ratio r = ffn/h, a heads, sequence s and
    batch b keeps ``s*b*h*(18 + 4r) + 5*a*s*s*b`` bytes with 16-bit activations (34 for r = 4); a
    decoder layer adds cross-attention: ``t*b*h*(28 + 4r) + 5*a*b*(t*t + t*s) + 4*s*b*h``. The output
    logits add ``b*t*vocab*`` :data:`LOGIT_BYTES` (large for NLLB's 256k vocabulary). fp32
    (``act_bytes=4``) doubles the layer terms. With gradient checkpointing only each layer's input
    (``2*s*b*h``) is kept, plus one layer recomputed at a time.
    """
    b, s, t, h, a = batch, src_len, tgt_len, size.d_model, size.attention_heads
    r = size.ffn_dim / h if h else 4
    scale = act_bytes / 2
    enc_layer = (s * b * h * (18 + 4 * r) + 5 * a * s * s * b) * scale
    dec_layer = (t * b * h * (28 + 4 * r) + 5 * a * b * (t * t + t * s) + 4 * s * b * h) * scale
    logits = b * t * size.vocab_size * LOGIT_BYTES.get(act_bytes, 16)
    if checkpointing:
        kept = (size.encoder_layers * s + size.decoder_layers * t) * b * h * act_bytes
        layers = kept + max(enc_layer, dec_layer)
    else:
        layers = size.encoder_layers * enc_layer + size.decoder_layers * dec_layer
    return (layers + logits) / GIB


@dataclass
class ZeroPlan:
    """A memory plan for one training run: DeepSpeed ZeRO stage, CPU offload, gradient checkpointing.

    Attributes:
        stage: 0 (no DeepSpeed), 2 or 3.
        offload_optimizer, offload_params: states kept in CPU memory.
        gradient_checkpointing: recompute activations in the backward pass.
        precision: ``bf16``, ``fp16`` or ``fp32``.
        states_gib: estimated model states (parameters, gradients, optimizer) per GPU, GiB.
        activations_gib: estimated activations per GPU, GiB.
        reserve_gib: GPU memory kept free (CUDA context, fragmentation), GiB.
        cpu_gib: estimated host memory for offloaded states, GiB (0 without offload).
        gpu_memory_gib: GPU memory per device planned for (None: no GPU known).
        cpu_memory_gib: host memory available, GiB.
        num_gpus: data-parallel ranks.
        explanation: one line saying what was chosen and why.
        forced: chosen by ``train.deepspeed.*`` rather than by the planner.
        config_file: the user's DeepSpeed JSON (replaces :meth:`deepspeed_config`'s own config).
    """

    stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    gradient_checkpointing: bool = False
    precision: str = "fp32"
    states_gib: float = 0.0
    activations_gib: float = 0.0
    reserve_gib: float = 0.0
    cpu_gib: float = 0.0
    gpu_memory_gib: Optional[float] = None
    cpu_memory_gib: Optional[float] = None
    num_gpus: int = 1
    explanation: str = ""
    forced: bool = False
    config_file: Optional[str] = None

    @property
    def gpu_need_gib(self) -> float:
        """Estimated peak GPU memory per device (GiB): states + activations + reserve."""
        return self.states_gib + self.activations_gib + self.reserve_gib

    @property
    def fits(self) -> bool:
        """Whether the estimate fits the GPU memory (and host memory, for offload); True when unknown."""
        gpu_ok = self.gpu_memory_gib is None or self.gpu_need_gib <= self.gpu_memory_gib
        cpu_ok = self.cpu_gib == 0 or self.cpu_memory_gib is None or self.cpu_gib <= self.cpu_memory_gib
        return gpu_ok and cpu_ok

    @property
    def uses_deepspeed(self) -> bool:
        """Whether this plan runs under DeepSpeed."""
        return self.stage > 0 or self.config_file is not None

    @property
    def name(self) -> str:
        """Short human name, e.g. ``ZeRO-2 + CPU optimizer offload``."""
        if self.config_file:
            return f"DeepSpeed config {self.config_file}"
        if self.stage == 0:
            return "no DeepSpeed"
        off = [w for w, on in (("optimizer", self.offload_optimizer), ("parameter", self.offload_params)) if on]
        return f"ZeRO-{self.stage}" + (f" + CPU {' and '.join(off)} offload" if off else "")

    def deepspeed_config(self) -> Optional[dict]:
        """The DeepSpeed config dict for ``Seq2SeqTrainingArguments(deepspeed=...)`` (None without DeepSpeed)."""
        if self.config_file:
            return json.loads(Path(self.config_file).read_text(encoding="utf-8"))
        if self.stage == 0:
            return None
        return deepspeed_config(self.stage, self.offload_optimizer, self.offload_params)

    def to_dict(self) -> dict:
        """The plan as a plain dict (for metrics.json and benchmark records)."""
        return {"name": self.name, "zero_stage": self.stage, "offload_optimizer": self.offload_optimizer,
                "offload_params": self.offload_params, "gradient_checkpointing": self.gradient_checkpointing,
                "precision": self.precision, "states_gib": round(self.states_gib, 2),
                "activations_gib": round(self.activations_gib, 2), "gpu_need_gib": round(self.gpu_need_gib, 2),
                "gpu_memory_gib": self.gpu_memory_gib, "cpu_gib": round(self.cpu_gib, 2),
                "num_gpus": self.num_gpus, "explanation": self.explanation}


def deepspeed_config(stage: int, offload_optimizer: bool = False, offload_params: bool = False) -> dict:
    """A DeepSpeed ZeRO config whose batch, clipping, precision, optimizer and bucket values are
    ``"auto"``, so the Trainer fills them from its arguments (one source of truth: ``train.*``).

    Without offload the Trainer's own optimizer (fused AdamW) and scheduler are used; with optimizer
    offload DeepSpeed's CPU Adam is needed (``optimizer`` section), still under the Trainer's linear
    schedule. ZeRO-3 saves a consolidated 16-bit checkpoint (``stage3_gather_16bit_weights_on_model_save``).

    Raises:
        ValueError: stage not 2 or 3, or parameter offload with stage 2.
    """
    if stage not in (2, 3):
        raise ValueError(f"ZeRO stage must be 2 or 3, not {stage}")
    if offload_params and stage != 3:
        raise ValueError("parameter offload needs ZeRO stage 3")
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_bucket_size": "auto"}
    if stage == 2:
        zero.update(allgather_bucket_size=500_000_000, reduce_scatter=True)
    else:
        zero.update(stage3_prefetch_bucket_size="auto", stage3_param_persistence_threshold="auto",
                    stage3_max_live_parameters=1_000_000_000, stage3_max_reuse_distance=1_000_000_000,
                    stage3_gather_16bit_weights_on_model_save=True, sub_group_size=1_000_000_000)
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "zero_optimization": zero,
        "steps_per_print": 1_000_000, "wall_clock_breakdown": False,
    }
    if offload_optimizer:
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                        "weight_decay": "auto"}}
    return cfg


def _ds_estimators() -> tuple[Any, Any]:
    """DeepSpeed's model-state estimators; without DeepSpeed installed, the same formulas (DeepSpeed 0.19.8,
    ``deepspeed/runtime/zero/stage_1_and_2.py`` and ``stage3.py``)."""
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs as z3
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs as z2

        return z2, z3
    except Exception:  # pragma: no cover - exercised only without deepspeed
        def z2(total_params, num_gpus_per_node=1, num_nodes=1, cpu_offload=True, additional_buffer_factor=1.5):
            n = num_nodes * num_gpus_per_node
            if cpu_offload:
                return int(total_params * max(4 * n, 16) * additional_buffer_factor), int(2 * total_params)
            return (int(total_params * 4 * num_gpus_per_node * additional_buffer_factor),
                    int(2 * total_params + 18 * total_params / n))

        def z3(total_params, largest_layer_params, num_gpus_per_node=1, num_nodes=1, cpu_offload=True,
               cpu_offload_params=True, zero_init=True, additional_buffer_factor=1.5):
            n, g, largest = num_nodes * num_gpus_per_node, 1 / num_nodes, 4 * largest_layer_params
            if cpu_offload and cpu_offload_params:
                return int(total_params * 18 * g * additional_buffer_factor), largest, largest
            if cpu_offload:
                return int(total_params * 16 * g * additional_buffer_factor), int(largest + 2 * total_params / n), largest
            return int(largest_layer_params * 4 * num_gpus_per_node * additional_buffer_factor), \
                int(largest + 18 * total_params / n), largest

        return z2, z3


def candidate_plans(ds: DeepSpeedConfig, gradient_checkpointing: Optional[bool], lora: bool = False) -> list[tuple]:
    """The ``(stage, offload_optimizer, offload_params, gradient_checkpointing)`` options the planner may
    emit under these overrides, fastest first. LoRA/QLoRA (``lora``) under ``stage=auto``: no DeepSpeed."""
    order = [(0, False, False), (2, False, False), (3, False, False)]
    offload = [(2, True, False), (3, True, False), (3, True, True), (3, False, True)]
    gcs = [False, True] if gradient_checkpointing is None else [bool(gradient_checkpointing)]
    out = [(s, o, p, g) for g in gcs for (s, o, p) in order]  # checkpointing before offload: it costs less
    out += [(s, o, p, g) for (s, o, p) in offload for g in gcs]
    stage = ds.stage
    if stage == "auto" and lora:
        stage = "off"
    keep = []
    for s, o, p, g in out:
        if stage == "off" and s != 0:
            continue
        if stage in ("2", "3") and s != int(stage):
            continue
        if ds.offload_optimizer is not None and s and o != ds.offload_optimizer:
            continue
        if ds.offload_params is not None and s and p != ds.offload_params:
            continue
        if s == 0 and (ds.offload_optimizer or ds.offload_params):
            continue
        keep.append((s, o, p, g))
    return keep


def plan_memory(size: ModelSize, ds: DeepSpeedConfig, batch: int, src_len: int, tgt_len: int,
                precision: str = "bf16", gradient_checkpointing: Optional[bool] = None, lora: bool = False,
                weight_bytes: float = 4.0, gpu_memory: Optional[float] = None, cpu_memory: Optional[float] = None,
                num_gpus: Optional[int] = None, gpus_per_node: Optional[int] = None) -> ZeroPlan:
    """The fastest plan whose estimated peak memory fits the GPU (all sizes in GiB).

    Args:
        size: the model's parameter counts (:class:`ModelSize`).
        ds: ``train.deepspeed``; its overrides restrict the candidates (:func:`candidate_plans`);
            ``gpu_memory_gib``/``cpu_memory_gib``/``num_gpus`` override the detected machine.
        batch: sentence pairs per GPU per step; src_len/tgt_len: longest source/target in tokens.
        precision: ``bf16``/``fp16`` (mixed precision) or ``fp32``.
        gradient_checkpointing: fixed on/off, or None to let the planner turn it on when needed.
        lora: LoRA/QLoRA run (only the adapters are trained; no DeepSpeed under ``stage=auto``).
        weight_bytes: bytes per frozen/master weight without DeepSpeed (4: fp32 master weights; 2: a
            bf16 base under LoRA; 0.5: a 4-bit QLoRA base).
        gpu_memory, cpu_memory, num_gpus: the machine (defaults: ``ds`` fields, then detected).
        gpus_per_node: GPUs of each node (default: the launcher's ``LOCAL_WORLD_SIZE``, else all on
            one node); DeepSpeed's ZeRO-3 estimate with CPU offload depends on the node count.

    Model states without DeepSpeed: ``weight_bytes`` per parameter + 12 bytes per trainable parameter
    (fp32 gradient and AdamW's two moments) + 2 bytes per parameter for autocast's 16-bit weight copies
    under mixed precision. With DeepSpeed: its estimators (which assume mixed precision). Activations:
    :func:`activation_gib`. Reserve: :data:`RESERVE_GIB` + :data:`FRAGMENTATION` of the GPU.

    Raises:
        ConfigError: ``stage`` is ``auto`` and no candidate fits (naming the fields to change).
    """
    gpu = ds.gpu_memory_gib if ds.gpu_memory_gib is not None else (gpu_memory if gpu_memory is not None
                                                                   else gpu_memory_gib())
    cpu = ds.cpu_memory_gib if ds.cpu_memory_gib is not None else (cpu_memory if cpu_memory is not None
                                                                   else host_memory_gib())
    n = ds.num_gpus or num_gpus or world_size()
    per_node = gpus_per_node or int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or n  # launchers set LOCAL_WORLD_SIZE
    per_node = max(1, min(per_node, n))
    nodes = max(1, n // per_node)
    act_bytes = 4 if precision == "fp32" else 2
    mixed = precision in ("bf16", "fp16")
    candidates = candidate_plans(ds, gradient_checkpointing, lora)
    have_ds = installed("deepspeed")
    if not have_ds:
        if ds.stage in ("2", "3"):
            raise ConfigError(f"train.deepspeed.stage: ZeRO-{ds.stage} needs DeepSpeed, which is not installed: run "
                              f"`{INSTALL_COMMANDS['deepspeed']}`, or set train.deepspeed.stage to auto")
        candidates = [c for c in candidates if c[0] == 0]  # plan without DeepSpeed
        if not candidates:
            raise ConfigError("train.deepspeed.offload_optimizer: CPU offload needs DeepSpeed, which is not installed: "
                              f"run `{INSTALL_COMMANDS['deepspeed']}`, or clear the offload fields")
    if gpu is None and ds.stage == "auto":
        candidates = candidates[:1]  # no GPU: nothing to plan for (and no need to import DeepSpeed)
    if any(c[0] for c in candidates):
        z2, z3 = _ds_estimators()
    reserve = (RESERVE_GIB + FRAGMENTATION * gpu) if gpu is not None else 0.0
    plans = []
    for stage, off_o, off_p, gc_on in candidates:
        if stage == 0:
            states = (size.total_params * weight_bytes + size.trainable_params * 12
                      + (2 * size.total_params if mixed and weight_bytes > 2 else 0)) / GIB
            cpu_need = 0.0
        elif stage == 2:
            cpu_b, gpu_b = z2(size.total_params, num_gpus_per_node=per_node, num_nodes=nodes, cpu_offload=off_o)
            states, cpu_need = gpu_b / GIB, (cpu_b / GIB if off_o else 0.0)
        else:
            cpu_b, gpu_b, _ = z3(size.total_params, size.largest_layer_params, num_gpus_per_node=per_node,
                                 num_nodes=nodes, cpu_offload=off_o or off_p, cpu_offload_params=off_p)
            states, cpu_need = gpu_b / GIB, (cpu_b / GIB if (off_o or off_p) else 0.0)
        acts = activation_gib(size, batch, src_len, tgt_len, act_bytes, gc_on)
        plans.append(ZeroPlan(stage, off_o, off_p, gc_on, precision, states, acts, reserve, cpu_need, gpu, cpu, n))
    if not plans:
        raise ConfigError("train.deepspeed: these settings leave no possible plan; e.g. stage=off with CPU offload")
    forced = ds.stage != "auto" or ds.offload_optimizer is not None or ds.offload_params is not None
    if gpu is None and ds.stage == "auto":
        plan = replace(plans[0], forced=False)
        plan.explanation = (f"memory plan: {plan.name} (no GPU found; set train.deepspeed.gpu_memory_gib to plan "
                            f"for one){', gradient checkpointing' if plan.gradient_checkpointing else ''}")
        return plan
    fitting = [p for p in plans if p.fits]
    if fitting:
        plan = fitting[0]
    elif ds.stage == "auto" and not forced:
        smallest = min(plans, key=lambda p: p.gpu_need_gib)
        raise ConfigError(
            f"train.per_device_train_batch_size: no memory plan fits {gpu:.1f} GiB per GPU for {size.total_params / 1e9:.2f}B "
            f"parameters at batch {batch} x {src_len}/{tgt_len} tokens; the smallest ({smallest.name}"
            f"{', gradient checkpointing' if smallest.gradient_checkpointing else ''}) needs ~{smallest.gpu_need_gib:.1f} GiB"
            f"{f' and {smallest.cpu_gib:.0f} GiB of CPU RAM (of {cpu:.0f})' if smallest.cpu_gib else ''}. Lower the batch "
            "size (raise train.gradient_accumulation_steps to keep the effective batch), set model.lora.enabled=true, "
            "or force a plan with train.deepspeed.stage"
            + ("" if have_ds else f"; DeepSpeed (ZeRO, CPU offload) is not installed: `{INSTALL_COMMANDS['deepspeed']}` "
               "would add those plans"))
    else:
        plan = min(plans, key=lambda p: (p.gpu_need_gib if p.cpu_gib == 0 or cpu is None or p.cpu_gib <= cpu else 1e9))
    plan.forced = forced
    plan.explanation = _explain(plan, plans, batch, src_len, tgt_len)
    return plan


def _explain(plan: ZeroPlan, plans: list[ZeroPlan], batch: int, src_len: int, tgt_len: int) -> str:
    gpu = f"{plan.gpu_memory_gib:.1f}" if plan.gpu_memory_gib is not None else "?"
    line = (f"memory plan: {plan.name}{', gradient checkpointing' if plan.gradient_checkpointing else ''}, "
            f"{plan.precision}: ~{plan.states_gib:.1f} GiB model states + ~{plan.activations_gib:.1f} GiB activations "
            f"(batch {batch} x {src_len}/{tgt_len} tokens) + {plan.reserve_gib:.1f} GiB reserve = "
            f"{plan.gpu_need_gib:.1f} of {gpu} GiB per GPU")
    if plan.cpu_gib:
        line += f", {plan.cpu_gib:.0f} of {plan.cpu_memory_gib or 0:.0f} GiB CPU RAM for offloaded states"
    if plan.num_gpus > 1:
        line += f", {plan.num_gpus} GPUs"
    faster = plans[: plans.index(plan)] if plan in plans else []
    if plan.forced:
        line += "; chosen by train.deepspeed.*"
    elif faster:
        f = faster[-1]
        line += (f"; the faster {f.name}{' with checkpointing' if f.gradient_checkpointing else ''} "
                 f"would need {f.gpu_need_gib:.1f} GiB" + (f" and {f.cpu_gib:.0f} GiB CPU RAM" if f.cpu_gib else ""))
    else:
        line += "; the fastest option fits"
    if not plan.fits:
        line += " (WARNING: the estimate does not fit; expect out-of-memory errors)"
    return line


def plan_training(model: Any, tc: TrainConfig, src_len: int, tgt_len: int, precision: Optional[str] = None) -> ZeroPlan:
    """The memory plan for fine-tuning ``model`` with ``tc`` on batches whose longest source/target
    are ``src_len``/``tgt_len`` tokens; logs its one-line explanation.

    A PEFT (LoRA/QLoRA) model is planned without DeepSpeed under ``stage=auto``, with its frozen
    weights at their stored size (16-bit or 4-bit). ``train.deepspeed.config_file`` replaces the
    planner. Raises :class:`ConfigError` as :func:`plan_memory`.
    """
    ds = tc.deepspeed
    precision = precision or resolve_precision(tc.precision)
    if ds.config_file:
        cfg = json.loads(Path(ds.config_file).read_text(encoding="utf-8"))
        zero = cfg.get("zero_optimization", {}) or {}
        plan = ZeroPlan(stage=int(zero.get("stage", 0) or 0),
                        offload_optimizer=bool((zero.get("offload_optimizer") or {}).get("device", "none") != "none"),
                        offload_params=bool((zero.get("offload_param") or {}).get("device", "none") != "none"),
                        gradient_checkpointing=bool(tc.gradient_checkpointing), precision=precision,
                        num_gpus=ds.num_gpus or world_size(), forced=True, config_file=str(ds.config_file))
        plan.explanation = f"memory plan: DeepSpeed config {ds.config_file} (ZeRO-{plan.stage}), given by train.deepspeed.config_file"
        log.info(plan.explanation)
        return plan
    size = ModelSize.from_model(model)
    lora_on = getattr(model, "peft_config", None) is not None
    weight_bytes = 4.0
    if lora_on:
        seen = {id(p): p for p in model.parameters()}.values()
        weight_bytes = sum(p.numel() * p.element_size() for p in seen) / max(1, size.total_params)
    plan = plan_memory(size, ds, tc.per_device_train_batch_size, src_len, tgt_len, precision,
                       tc.gradient_checkpointing, lora_on, weight_bytes)
    log.info(plan.explanation)
    return plan
