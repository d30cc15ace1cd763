"""Several GPUs and nodes on paper: the launcher commands, the hostfile, the resolved DeepSpeed config
and the memory plan per GPU of a run of ``adaptmllm run`` on ``nodes`` x ``gpus_per_node`` GPUs,
without any of them (``adaptmllm plan``).

The DeepSpeed config is the planner's (:func:`adaptmllm.training.memory_plan.plan_memory`), with its ``"auto"``
values filled by transformers' own ``HfTrainerDeepSpeedConfig`` from the Trainer arguments adaptmllm
would build (:func:`adaptmllm.training.train.training_args`) at that world size, so ``train_batch_size`` is
``train_micro_batch_size_per_gpu x gradient_accumulation_steps x world size`` exactly as in the real
run. Checked by tests/test_launch.py, which also feeds the commands to DeepSpeed's and torchrun's own
argument parsers and the config to DeepSpeed's batch check.
"""

from __future__ import annotations

import copy
import json
import shlex
import tempfile
import types
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from adaptmllm.config import Config, ConfigError
from adaptmllm.training.memory_plan import ModelSize, ZeroPlan, nllb_config, plan_memory
from adaptmllm.training.train import training_args

__all__ = ["ClusterPlan", "hostfile_text", "launcher_commands", "resolve_deepspeed_config", "plan_cluster",
           "format_cluster_plan"]


def hostfile_text(nodes: int, gpus_per_node: int, prefix: str = "node") -> str:
    """DeepSpeed's hostfile for ``nodes`` hosts named ``<prefix>1`` ... (one ``host slots=N`` line each)."""
    return "".join(f"{prefix}{i + 1} slots={gpus_per_node}\n" for i in range(nodes))


def launcher_commands(config_path: str, nodes: int, gpus_per_node: int, hostfile: str = "hostfile",
                      master_addr: str = "node1", master_port: int = 29500) -> dict[str, list[str]]:
    """The launch commands (argument lists) of ``adaptmllm run --config config_path`` on ``nodes`` x
    ``gpus_per_node`` GPUs: ``deepspeed`` (started once, on the first node, reaching the others over ssh
    through ``hostfile``) and ``torchrun`` (started on every node; ``{node_rank}`` is the node's index,
    0 on ``master_addr``). One node needs no hostfile.

    Raises:
        ValueError: ``nodes`` or ``gpus_per_node`` below 1.
    """
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"nodes and gpus_per_node must be >= 1, not {nodes} and {gpus_per_node}")
    run = ["--module", "adaptmllm.cli", "run", "--config", config_path]
    ds = ["deepspeed"] + (["--hostfile", hostfile, "--num_nodes", str(nodes)] if nodes > 1 else []) + \
        ["--num_gpus", str(gpus_per_node), "--no_local_rank"] + run
    tr = ["torchrun", "--nproc_per_node", str(gpus_per_node)]
    if nodes > 1:
        tr += ["--nnodes", str(nodes), "--node_rank", "{node_rank}", "--master_addr", master_addr,
               "--master_port", str(master_port)]
    tr += ["-m", "adaptmllm.cli", "run", "--config", config_path]
    return {"deepspeed": ds, "torchrun": tr}


def resolve_deepspeed_config(ds_config: dict, config: Config, world_size: int, precision: str = "bf16",
                             num_training_steps: int = 1000) -> dict:
    """``ds_config`` with its ``"auto"`` values filled as the Trainer fills them at ``world_size`` ranks:
    transformers' ``HfTrainerDeepSpeedConfig.trainer_config_process``/``trainer_config_finalize`` on the
    arguments :func:`adaptmllm.training.train.training_args` builds from ``config.train`` (precision
    ``bf16``/``fp16``/``fp32`` as planned for the GPUs, not this machine's) and the model's hidden size
    (bucket sizes). No process group, no GPU, no weights.

    Raises:
        ValueError: the filled ``train_batch_size`` is not micro batch x accumulation x ``world_size``.
    """
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    with tempfile.TemporaryDirectory(prefix="adaptmllm-plan-") as out:
        args = training_args(config.train, out, evaluate=False, progress=False)

    class _Args:  # the real arguments, at the cluster's world size and precision
        def __getattr__(self, name: str) -> Any:
            return getattr(args, name)

    view = _Args()
    view.world_size, view.bf16, view.fp16 = world_size, precision == "bf16", precision == "fp16"
    view.bf16_full_eval = view.fp16_full_eval = False
    hf = HfTrainerDeepSpeedConfig(copy.deepcopy(ds_config))
    try:
        hf.trainer_config_process(view)
        model = types.SimpleNamespace(config=_model_config(config))
        hf.trainer_config_finalize(view, model, num_training_steps)
        resolved = copy.deepcopy(hf.config)
    finally:
        unset_hf_deepspeed_config()  # HfDeepSpeedConfig registers itself globally (ZeRO-3 model loading)
    micro, accum = resolved["train_micro_batch_size_per_gpu"], resolved["gradient_accumulation_steps"]
    if resolved["train_batch_size"] != micro * accum * world_size:
        raise ValueError(f"train_batch_size {resolved['train_batch_size']} != {micro} x {accum} x {world_size}")
    return resolved


def _model_config(config: Config) -> Any:
    try:
        return nllb_config(config.model.name_or_path)
    except ValueError as e:
        raise ConfigError(f"model.name_or_path: adaptmllm plan needs an NLLB-200 checkpoint name to size the model "
                          f"offline ({e})") from None


@dataclass
class ClusterPlan:
    """What ``adaptmllm run`` would do on ``nodes`` x ``gpus_per_node`` GPUs.

    Attributes:
        nodes, gpus_per_node, world_size: the cluster (world size = data-parallel ranks).
        gpu_memory_gib: memory of each GPU planned for (GiB).
        plan: the memory plan per GPU (:class:`adaptmllm.training.memory_plan.ZeroPlan`: ZeRO stage, offload,
            checkpointing, estimated states/activations/reserve per GPU in GiB).
        deepspeed_config: the resolved DeepSpeed config (None when the plan needs no DeepSpeed).
        global_batch: sentence pairs per optimizer step = micro batch x accumulation x world size.
        model_params: parameters of the model (tied embeddings once).
        hostfile, commands: :func:`hostfile_text` and :func:`launcher_commands`.
        single_gpu_states_gib: the same plan's model states on one GPU (GiB), to show ZeRO's sharding.
    """

    nodes: int
    gpus_per_node: int
    world_size: int
    gpu_memory_gib: float
    plan: ZeroPlan
    deepspeed_config: Optional[dict]
    global_batch: int
    model_params: int
    hostfile: str
    commands: dict = field(default_factory=dict)
    single_gpu_states_gib: float = 0.0

    def to_dict(self) -> dict:
        """A JSON-ready dict (``adaptmllm plan --json``)."""
        return {"nodes": self.nodes, "gpus_per_node": self.gpus_per_node, "world_size": self.world_size,
                "gpu_memory_gib": self.gpu_memory_gib, "global_batch": self.global_batch,
                "model_params": self.model_params, "memory_plan": self.plan.to_dict(),
                "single_gpu_states_gib": round(self.single_gpu_states_gib, 2), "hostfile": self.hostfile,
                "commands": {k: shlex.join(v) for k, v in self.commands.items()},
                "deepspeed_config": self.deepspeed_config}


def plan_cluster(config: Config, nodes: int, gpus_per_node: int, gpu_memory_gib: float,
                 cpu_memory_gib: Optional[float] = None, config_path: str = "config.yaml",
                 precision: str = "bf16") -> ClusterPlan:
    """Plan a full fine-tuning of ``config`` on ``nodes`` x ``gpus_per_node`` GPUs of ``gpu_memory_gib``
    GiB each (``cpu_memory_gib``: host RAM per node, for offload; default: this machine's).

    The batch is ``train.per_device_train_batch_size`` at ``model.max_source_length`` /
    ``max_target_length`` tokens (the planner's worst case); ``train.deepspeed.*`` restricts the plans
    as in a real run.

    Raises:
        ConfigError: ``model.name_or_path`` is not an NLLB-200 checkpoint name; ``model.lora.enabled``
            (LoRA is planned at run time from the live model); no plan fits (naming the fields).
        ValueError: ``nodes``/``gpus_per_node`` below 1.
    """
    if config.model.lora.enabled:
        raise ConfigError("model.lora.enabled: adaptmllm plan plans full fine-tuning; a LoRA run is planned at run "
                          "time from the live model (see the 'memory plan:' line of its log)")
    world = nodes * gpus_per_node
    commands = launcher_commands(config_path, nodes, gpus_per_node)
    size = ModelSize.from_config(_model_config(config))
    m, tc = config.model, config.train
    plan = plan_memory(size, replace(tc.deepspeed, num_gpus=world, gpu_memory_gib=gpu_memory_gib, cpu_memory_gib=cpu_memory_gib), tc.per_device_train_batch_size, m.max_source_length, m.max_target_length,
                       precision, tc.gradient_checkpointing, gpu_memory=gpu_memory_gib, cpu_memory=cpu_memory_gib,
                       num_gpus=world, gpus_per_node=gpus_per_node)
    single = plan_memory(size, replace(tc.deepspeed, num_gpus=1, gpu_memory_gib=None, cpu_memory_gib=None),
                         tc.per_device_train_batch_size, m.max_source_length, m.max_target_length, precision,
                         plan.gradient_checkpointing, gpu_memory=1e9, cpu_memory=1e9, num_gpus=1, gpus_per_node=1) \
        if plan.uses_deepspeed else plan
    ds = plan.deepspeed_config()
    resolved = resolve_deepspeed_config(ds, config, world, precision) if ds is not None else None
    global_batch = tc.per_device_train_batch_size * tc.gradient_accumulation_steps * world
    return ClusterPlan(nodes, gpus_per_node, world, gpu_memory_gib, plan, resolved, global_batch, size.total_params,
                       hostfile_text(nodes, gpus_per_node), commands, single.states_gib)


def format_cluster_plan(cp: ClusterPlan) -> str:
    """The plan as the text ``adaptmllm plan`` prints: commands, hostfile, batch arithmetic, memory per
    GPU (GiB) and the DeepSpeed config."""
    p, ds = cp.plan, cp.deepspeed_config
    lines = [f"{cp.nodes} node(s) x {cp.gpus_per_node} GPUs of {cp.gpu_memory_gib:g} GiB = {cp.world_size} ranks; "
             f"model {cp.model_params / 1e9:.2f}B parameters",
             p.explanation,
             f"model states per GPU: {p.states_gib:.1f} GiB ({cp.single_gpu_states_gib:.1f} GiB with the same plan "
             f"on one GPU); activations {p.activations_gib:.1f} GiB; reserve {p.reserve_gib:.1f} GiB; "
             f"total {p.gpu_need_gib:.1f} of {cp.gpu_memory_gib:g} GiB" + (
                 f"; CPU RAM {p.cpu_gib:.0f} GiB per node" if p.cpu_gib else ""),
             f"global batch: {cp.global_batch} pairs per optimizer step"]
    if ds is not None:
        lines[-1] += (f" = train_micro_batch_size_per_gpu {ds['train_micro_batch_size_per_gpu']} x "
                      f"gradient_accumulation_steps {ds['gradient_accumulation_steps']} x world size "
                      f"{cp.world_size} = train_batch_size {ds['train_batch_size']}")
    lines += ["", "launch (DeepSpeed, from the first node):", "  " + shlex.join(cp.commands["deepspeed"])]
    if cp.nodes > 1:
        lines += ["hostfile:"] + ["  " + ln for ln in cp.hostfile.splitlines()]
    lines += ["or torchrun" + (", on every node (node_rank 0 on the first):" if cp.nodes > 1 else ":"),
              "  " + shlex.join(cp.commands["torchrun"]).replace("'{node_rank}'", "{node_rank}")]
    if ds is not None:
        lines += ["", "DeepSpeed config (the Trainer fills the same values at this world size):",
                  json.dumps(ds, indent=2)]
    return "\n".join(lines)
