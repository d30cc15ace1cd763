"""Multi-node on paper, checked by a dry run: the README's hostfile command for 2 nodes x 8 GPUs, the
DeepSpeed config adaptmllm would run there (batch arithmetic checked by DeepSpeed itself) and the
planner's ZeRO-3 memory per GPU for NLLB-200-3.3B (``adaptmllm plan``). No GPU, no node, no ssh: the
launchers' own argument and hostfile parsers stand in for the launch."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from adaptmllm.config import ConfigError, load_config
from adaptmllm.hardware import GIB
from adaptmllm.training.memory_plan import ModelSize, nllb_config
from adaptmllm.training.launch import hostfile_text, launcher_commands, plan_cluster

from conftest import REPO, free_port

ZERO3 = REPO / "configs" / "nllb-3.3b-zero3.yaml"
SIZE_3B = ModelSize.from_config(nllb_config("3.3B"))


@pytest.fixture(scope="module")
def cluster():
    return plan_cluster(load_config(ZERO3), nodes=2, gpus_per_node=8, gpu_memory_gib=80, cpu_memory_gib=512,
                        config_path="configs/nllb-3.3b-zero3.yaml")


def _doc_command(path, start: str) -> list[str]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip().startswith(start)]
    assert lines, f"{path.name} has no line starting {start!r}"
    return shlex.split(lines[0].replace("--config ...", "--config configs/nllb-3.3b-zero3.yaml"))


def test_batch_arithmetic_of_two_nodes_of_eight_gpus(cluster):
    ds = cluster.deepspeed_config
    assert cluster.world_size == 16 and cluster.plan.stage == 3
    # train_batch_size = micro batch x accumulation x world size (16 x 2 x 16), as the Trainer fills it.
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (16, 2)
    assert ds["train_batch_size"] == 16 * 2 * 16 == cluster.global_batch
    assert ds["bf16"]["enabled"] is True and ds["zero_optimization"]["stage"] == 3
    assert "auto" not in json.dumps(ds)  # every value resolved
    assert ds["zero_optimization"]["reduce_bucket_size"] == 2048 * 2048  # d_model^2 of the 3.3B model


def test_zero3_memory_per_gpu_of_3_3b_is_sharded_over_16_gpus(cluster):
    p = cluster.plan
    # DeepSpeed's ZeRO-3 estimate without offload: 4 bytes x largest layer + 18 bytes x parameters / GPUs.
    expect = (4 * SIZE_3B.largest_layer_params + 18 * SIZE_3B.total_params / 16) / GIB
    assert p.states_gib == pytest.approx(expect, rel=1e-6) and 5.0 < p.states_gib < 6.0
    assert cluster.single_gpu_states_gib == pytest.approx(
        (4 * SIZE_3B.largest_layer_params + 18 * SIZE_3B.total_params) / GIB, rel=1e-6)
    assert p.fits and p.gpu_need_gib < 80 and not p.offload_optimizer
    one_node = plan_cluster(load_config(ZERO3), 1, 8, 80, 512)
    assert one_node.plan.states_gib > p.states_gib  # more GPUs, smaller shards
    # On 16 GB GPUs the same config needs more than sharding: the planner adds checkpointing or offload.
    small = plan_cluster(load_config(ZERO3), 2, 8, 16, 512)
    assert small.plan.fits and (small.plan.gradient_checkpointing or small.plan.offload_optimizer)


def test_the_documented_hostfile_command_is_the_one_plan_builds_and_deepspeed_parses_it(cluster, tmp_path):
    from deepspeed.launcher.runner import (apply_num_nodes_and_gpus, fetch_hostfile, parse_args,
                                           parse_inclusion_exclusion)

    built = cluster.commands["deepspeed"]
    for doc in (REPO / "README.md", REPO / "docs" / "performance.md"):
        assert _doc_command(doc, "deepspeed --hostfile") == built, doc.name
    args = parse_args(built[1:])
    assert (args.num_nodes, args.num_gpus, args.module, args.no_local_rank) == (2, 8, True, True)
    assert args.user_script == "adaptmllm.cli" and args.user_args[:3] == ["run", "--config", built[-1]]
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(cluster.hostfile)
    pool = fetch_hostfile(str(hostfile))
    active = apply_num_nodes_and_gpus(parse_inclusion_exclusion(pool, "", ""), args.num_nodes, args.num_gpus)
    assert list(active) == ["node1", "node2"] and sum(map(len, active.values())) == cluster.world_size


def test_torchrun_command_gives_the_same_world(cluster):
    from torch.distributed.run import config_from_args, parse_args

    argv = [a.replace("{node_rank}", "0") for a in cluster.commands["torchrun"]]
    config, cmd, cmd_args = config_from_args(parse_args(argv[1:]))
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (2, 2, 8)
    assert "adaptmllm.cli" in cmd_args and cmd_args[-3:] == ["run", "--config", "configs/nllb-3.3b-zero3.yaml"]


# DeepSpeed's own batch check (deepspeed.runtime.config.DeepSpeedConfig) at a data-parallel world size of
# 16, given through its model-parallel-unit interface (mpu) in a one-process gloo group.
_DS_CHECK = r"""
import json, sys
import deepspeed
from deepspeed.runtime.config import DeepSpeedConfig
deepspeed.init_distributed(dist_backend="gloo")
class Mpu:
    def __init__(self, n): self.n = n
    def get_data_parallel_world_size(self): return self.n
    def get_model_parallel_world_size(self): return 1
    def get_model_parallel_rank(self): return 0
cfg = json.loads(sys.argv[1])
ok = DeepSpeedConfig(dict(cfg), mpu=Mpu(16))
out = {"train_batch_size": ok.train_batch_size, "micro": ok.train_micro_batch_size_per_gpu,
       "accum": ok.gradient_accumulation_steps, "stage": ok.zero_optimization_stage}
try:
    DeepSpeedConfig(dict(cfg), mpu=Mpu(8))
    out["world_8"] = "accepted"
except AssertionError as e:
    out["world_8"] = str(e)
print("RESULT " + json.dumps(out))
"""


def test_deepspeed_accepts_the_config_at_world_size_16_only(cluster):
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    proc = subprocess.run([sys.executable, "-c", _DS_CHECK, json.dumps(cluster.deepspeed_config)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    out = json.loads(line[0][len("RESULT "):])
    assert (out["train_batch_size"], out["micro"], out["accum"], out["stage"]) == (512, 16, 2, 3)
    assert "512 != 16 * 2 * 8" in out["world_8"]  # the check is real: the same config fails at 8 ranks


def test_hostfile_and_single_node_commands():
    assert hostfile_text(2, 8) == "node1 slots=8\nnode2 slots=8\n"
    one = launcher_commands("c.yaml", 1, 4)
    assert one["deepspeed"] == shlex.split("deepspeed --num_gpus 4 --no_local_rank --module adaptmllm.cli run "
                                           "--config c.yaml")
    assert one["torchrun"] == shlex.split("torchrun --nproc_per_node 4 -m adaptmllm.cli run --config c.yaml")
    with pytest.raises(ValueError, match="nodes"):
        launcher_commands("c.yaml", 0, 8)


def test_plan_command_prints_the_plan(capsys):
    from adaptmllm.cli import main

    assert main(["plan", "--config", str(ZERO3), "--nodes", "2", "--gpus_per_node", "8", "--gpu_memory", "80",
                 "--cpu_memory", "512", "--json", "true"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["world_size"] == 16 and out["deepspeed_config"]["train_batch_size"] == 512
    assert out["memory_plan"]["zero_stage"] == 3 and out["memory_plan"]["gpu_need_gib"] < 80
    assert out["commands"]["deepspeed"].startswith("deepspeed --hostfile hostfile --num_nodes 2 --num_gpus 8")
    assert main(["plan", "--config", str(ZERO3), "--nodes", "2", "--gpus_per_node", "8"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"train_batch_size 512", text) and "node2 slots=8" in text


def test_plan_refuses_what_it_cannot_size(capsys):
    from adaptmllm.cli import main

    with pytest.raises(ConfigError, match="model.lora.enabled"):
        plan_cluster(load_config(REPO / "configs" / "nllb-600m-lora.yaml"), 2, 8, 80, 512)
    assert main(["plan", "--config", str(REPO / "configs" / "demo.yaml"), "--nodes", "2"]) == 2
    assert "model.name_or_path" in capsys.readouterr().err


@pytest.mark.parametrize("preset", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_parses_through_the_cli(preset):
    """The documented ``adaptmllm run --config <preset>`` must get past the CLI's parser (a YAML integer
    ``stage: 3`` did not: the field is text)."""
    from adaptmllm.cli import build_parser

    ns = build_parser().parse_args(["run", "--config", str(preset)])
    assert ns.run.name


def test_performance_doc_quotes_the_plan(cluster):
    doc = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    assert cluster.plan.explanation in doc
    assert f"ZeRO-3 holds {cluster.plan.states_gib:.1f} GiB of model states" in doc
    assert f"against {cluster.single_gpu_states_gib:.1f} GiB for the same plan on one GPU" in doc
    assert f"`train_batch_size` {cluster.deepspeed_config['train_batch_size']} = 16 per GPU x 2" in doc
