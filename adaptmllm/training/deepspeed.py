"""DeepSpeed ZeRO for adaptmllm, the Trainer side: the plan applied to the model and Trainer, the packages a
config needs (:func:`check_installed`), the consolidated weights after training. The memory plan itself
(NLLB-200 architectures, bytes per parameter, :func:`~adaptmllm.training.memory_plan.plan_training`) is
:mod:`adaptmllm.training.memory_plan`.

Full fine-tuning of NLLB-200-3.3B with AdamW needs about 16-18 bytes per parameter of model states
(about 50-56 GiB) before activations. :func:`~adaptmllm.training.memory_plan.plan_training` picks the fastest plan that fits the GPU,
in this order: no DeepSpeed; ZeRO-2; ZeRO-3; each of those with gradient checkpointing; ZeRO-2 with
the optimizer states in CPU memory; ZeRO-3 with CPU optimizer offload; ZeRO-3 with optimizer and
parameter offload. Model states are estimated with DeepSpeed's own estimators
(``estimate_zero2_model_states_mem_needs``, ``estimate_zero3_model_states_mem_needs``), activations
with :func:`~adaptmllm.training.memory_plan.activation_gib`. The chosen plan is logged in one line; ``train.deepspeed.*`` overrides
it (``stage``, ``offload_optimizer``, ``offload_params``, or a whole ``config_file``).

One GPU needs no launcher: adaptmllm sets the single-process variables (``RANK=0 WORLD_SIZE=1`` ...)
itself. Several GPUs (or nodes) use DeepSpeed's launcher with the same config::

    deepspeed --num_gpus 4 -m adaptmllm.cli run --config configs/nllb-3.3b-zero3.yaml
    accelerate launch --num_processes 4 --use_deepspeed -m adaptmllm.cli run --config ...
    deepspeed --hostfile hostfile --num_nodes 2 --num_gpus 8 -m adaptmllm.cli run --config ...

Rank 0 scores and writes the run folder; the other ranks train alongside it
(:func:`adaptmllm.runs.pipeline.run_other_rank`). Known traps handled here: M2M100/NLLB LayerDrop breaks ZeRO-3 (it is set to
0 under ZeRO-3, :func:`apply_plan_to_model`); generation under ZeRO-3 is very slow, so evaluation
generates with a consolidated 16-bit copy of the weights (:func:`trainer_class`, :func:`plain_copy`).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
from typing import Any, Iterator, Optional

from adaptmllm.config import ConfigError
from adaptmllm.hardware import INSTALL_COMMANDS, installed, is_main_process
from adaptmllm.training.memory_plan import ZeroPlan

__all__ = ["check_installed", "apply_plan_to_model", "trainer_class", "plain_copy", "consolidated_model"]

log = logging.getLogger(__name__)


def check_installed(config: Any) -> None:
    """Stop before training when the config needs a package that is not installed: DeepSpeed for
    ``train.deepspeed.stage`` 2/3, offload or ``config_file``; PEFT for ``model.lora.enabled``; bitsandbytes
    for ``model.lora.load_in_4bit``.

    Raises:
        ConfigError: naming the field and the pip command (:data:`INSTALL_COMMANDS`).
    """
    ds, lora = config.train.deepspeed, config.model.lora
    need = []
    if ds.stage in ("2", "3") or ds.offload_optimizer or ds.offload_params or ds.config_file:
        need.append(("train.deepspeed.stage", "deepspeed", "set train.deepspeed.stage to auto or off"))
    if lora.enabled:
        need.append(("model.lora.enabled", "peft", "or turn LoRA off"))
    if lora.load_in_4bit:
        need.append(("model.lora.load_in_4bit", "bitsandbytes", "or turn 4-bit loading off"))
    for field_path, package, other in need:
        if not installed(package):
            raise ConfigError(f"{field_path}: needs {package}, which is not installed: run `{INSTALL_COMMANDS[package]}` "
                              f"(then restart the runtime), {other}")


def apply_plan_to_model(model: Any, plan: Optional[ZeroPlan]) -> None:
    """Make ``model`` safe for ``plan``: under ZeRO-3, LayerDrop (which skips layers at random and so
    breaks ZeRO-3's parameter prefetching: ranks wait for different layers) is set to 0 in the config
    and in the encoder/decoder modules; a warning says when it was on."""
    if plan is None or plan.stage != 3:
        return
    cfg = getattr(model, "config", None)
    changed = []
    for name in ("encoder_layerdrop", "decoder_layerdrop"):
        if cfg is not None and getattr(cfg, name, 0.0):
            changed.append(f"{name}={getattr(cfg, name)}")
            setattr(cfg, name, 0.0)
    for module in model.modules():
        if hasattr(module, "layerdrop") and isinstance(getattr(module, "layerdrop"), float) and module.layerdrop:
            module.layerdrop = 0.0
    if changed:
        log.warning("ZeRO-3: LayerDrop breaks ZeRO-3 (ranks skip different layers); set %s to 0", ", ".join(changed))


def _is_zero3(model: Any) -> bool:
    return any(hasattr(p, "ds_id") for p in model.parameters())


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def plain_copy(model: Any, device: Any = None, build: bool = True) -> Any:
    """A plain (not partitioned) copy of a ZeRO-3 model, for fast generation and saving.

    Every rank must call it (gathering is collective); ranks passing ``build=False`` take part without
    building a copy and get None. Parameters are gathered one at a time, so the peak extra memory is
    the copy plus one parameter. The copy has the partitioned model's dtype (16-bit under bf16/fp16)
    and lives on ``device`` (default: this rank's GPU, else CPU). A model that is not partitioned is
    returned as it is.
    """
    import torch

    if not _is_zero3(model):
        return model
    import deepspeed
    from transformers.initialization import no_init_weights

    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    params = list(model.named_parameters())
    dtype = params[0][1].dtype if params else torch.float32
    plain = None
    if build:
        with torch.device(device), _default_dtype(dtype), no_init_weights():
            plain = type(model)(copy.deepcopy(model.config))
        plain.generation_config = copy.deepcopy(model.generation_config)
        plain.eval()
    target = dict(plain.named_parameters()) if plain is not None else {}
    with torch.no_grad():
        for name, p in params:
            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                if plain is not None:
                    target[name].data.copy_(p.data.to(device=device, dtype=target[name].dtype))
    if plain is not None:
        plain.tie_weights()
    return plain


def trainer_class(plan: Optional[ZeroPlan]) -> type:
    """The Trainer class for ``plan``: ``Seq2SeqTrainer``, or under ZeRO-3 a subclass whose evaluation
    generates with a consolidated 16-bit copy of the weights (:func:`plain_copy`, rebuilt at each
    evaluation and freed after). Generating with ZeRO-3's partitioned model would gather every layer
    at every generated token (and need ``synced_gpus`` across ranks); the copy generates at full speed
    and needs no synchronisation, at the cost of one model copy in GPU memory during evaluation."""
    from transformers import Seq2SeqTrainer

    if plan is None or plan.stage != 3:
        return Seq2SeqTrainer

    class ZeRO3Seq2SeqTrainer(Seq2SeqTrainer):
        """Seq2SeqTrainer whose evaluation and prediction generate with a consolidated copy of the weights."""

        _eval_copy = None

        @contextlib.contextmanager
        def _consolidated(self, gen_kwargs: dict) -> Iterator[None]:
            import torch

            self._eval_copy = plain_copy(self.model)
            gen_kwargs.setdefault("synced_gpus", False)  # the copy needs no collective calls while generating
            try:
                yield
            finally:
                self._eval_copy = None
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **gen_kwargs):
            with self._consolidated(gen_kwargs):
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)

        def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test", **gen_kwargs):
            with self._consolidated(gen_kwargs):
                return super().predict(test_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
            plain = self._eval_copy
            if plain is None:
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)
            real = self.model
            self.model = plain  # Seq2SeqTrainer.prediction_step generates with self.model
            try:
                return super().prediction_step(plain, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)
            finally:
                self.model = real

    return ZeRO3Seq2SeqTrainer


def consolidated_model(trainer: Any) -> Any:
    """The trained model as a plain module after ``trainer.train()``.

    Without ZeRO-3 that is ``trainer.model``. Under ZeRO-3 (collective: every rank calls it) rank 0
    gets a plain copy (:func:`plain_copy`, built on CPU, moved to the GPU after DeepSpeed's engine and
    optimizer states are freed) and the other ranks get None; the global DeepSpeed config is unset so
    that later ``from_pretrained`` calls load whole models again.
    """
    import torch

    model = trainer.model
    if not _is_zero3(model):
        return model
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    main = is_main_process()
    plain = plain_copy(model, device=torch.device("cpu"), build=main)
    try:
        trainer.accelerator.free_memory()
    except Exception as e:  # pragma: no cover - best effort
        log.warning("could not free DeepSpeed's memory: %s", e)
    for attr in ("model_wrapped", "deepspeed", "optimizer", "lr_scheduler"):
        if hasattr(trainer, attr):
            setattr(trainer, attr, None)
    unset_hf_deepspeed_config()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        if plain is not None:
            plain = plain.to(torch.device("cuda", torch.cuda.current_device()))
    trainer.model = plain if plain is not None else model
    return plain

