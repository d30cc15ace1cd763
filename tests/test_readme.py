"""Every Python and shell snippet of README.md runs, or is checked as far as this machine allows.

How each snippet is treated (the README's fenced ```python / ```bash blocks, and its inline
`adaptmllm <command> ...` examples):

* run for real, with the small demo settings of tests/conftest.py (fewer pairs and epochs, a
  temporary ``runs_dir``) substituted in and documented at the substitution:
  - the Python API snippet (``adaptmllm.load_config`` ... ``adaptmllm.inference.translate``);
  - ``make demo``: the ``adaptmllm`` command its Makefile recipe runs (read with ``make -n demo``),
    through ``adaptmllm.cli.main`` with the small settings appended as flags (later flags win);
  - the README's ``adaptmllm translate ... < in.txt > out.txt`` on the model the demo run kept.
* checked, not run (each listed in ``NOT_RUN`` with the reason: a GPU, the network, hub weights, a
  PostgreSQL server, a run folder of a real corpus, or minutes of training): every ``adaptmllm``
  command is parsed by the real CLI parser (``adaptmllm.cli.build_parser``), so each flag must exist
  and each value must have the flag's type; ``make`` targets must exist (``make -n``); Python
  snippets must compile.

A README snippet that this test does not classify fails ``test_every_snippet_is_classified``.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# The small settings of tests/conftest.py's tiny_dict (about 15 s of training on 2 CPU cores instead
# of the demo's 1,500 pairs x 6 epochs).
SMALL_FLAGS = ["--data.demo_train_pairs", "300", "--train.num_train_epochs", "1", "--train.eval_max_pairs", "50",
               "--eval.num_beams", "1", "--green.measure_power_secs", "1.0"]

# Snippets (identified by a substring of theirs) that are checked but not run, and why.
NOT_RUN = {
    "make test": "runs this very test suite (CI's command)",
    "configs/nllb-600m.yaml": "needs the NLLB-200 600M weights from the hub and a real corpus",
    "make demo-hpo": "3 full fine-tuning runs (minutes); the HPO path runs in tests/test_hpo.py",
    "--hpo.n_trials 20": "20 full fine-tuning runs (an hour); the HPO path runs in tests/test_hpo.py",
    "postgresql://": "needs a PostgreSQL server at dbhost (tests/test_hpo.py runs two workers on a local one)",
    "torchrun": "needs 4 GPUs and the NLLB-200 3.3B weights",
    "deepspeed --num_gpus": "needs 4 GPUs and the NLLB-200 3.3B weights",
    "adaptmllm plan": "run by tests/test_launch.py, which compares its output with the README and docs",
    "deepspeed --hostfile": "needs 2 nodes of 8 GPUs (tests/test_launch.py checks the command adaptmllm plan builds)",
    "gradio_client": "needs a running playground server (tests/test_playground.py drives its API)",
    "adaptmllm serve": "starts a long-running server (tests/test_playground.py)",
    "human-eval-report": "needs a run with annotations (tests/test_humaneval.py)",
    "--engine ctranslate2": "needs a CTranslate2 export of runs/en-ga (tests/test_translate_fast.py)",
    "--format ctranslate2": "needs runs/en-ga (tests/test_translate_fast.py exports the tiny model)",
    "--eval.engine ctranslate2": "needs a real-corpus config my.yaml / runs/en-ga (tests/test_translate_fast.py)",
    "adaptmllm push": "needs the network and a Hugging Face token (tests/test_hub.py uses a local stand-in)",
    "HF_TOKEN": "sets a secret",
    "select-checkpoint": "needs a finished run with several checkpoints (tests/test_eval_metrics.py)",
    "adaptmllm evaluate": "needs runs/NAME of a real corpus (tests/test_eval_metrics.py)",
    "back-translate": "needs runs/ga-en and monolingual text (tests/test_backtranslate.py)",
}
RUN = ("make demo", "adaptmllm.load_config", "adaptmllm translate --model runs/en-ga/model --src eng_Latn --tgt gle_Latn")


def snippets() -> list[tuple[str, str]]:
    """(language, text) of each fenced block of README.md, and ("inline", command) for each inline
    `adaptmllm <command> ...` example."""
    text = README.read_text(encoding="utf-8")
    out = [(lang, body) for lang, body in re.findall(r"^```(\w+)\n(.*?)^```", text, re.S | re.M)
           if lang in ("python", "bash")]
    fenced = "".join(body for _, body in out)
    for cmd in re.findall(r"`(adaptmllm [a-z][a-z-]* [^`]*)`", text):
        cmd = " ".join(cmd.split())
        if "--help" not in cmd and cmd not in " ".join(fenced.split()):
            out.append(("inline", cmd))
    return out


def shell_commands(body: str) -> list[list[str]]:
    """The commands of a shell snippet as argument lists: continuation lines joined, comments, variable
    assignments, ``export`` lines and redirections dropped, ``$VAR`` replaced by 1."""
    cmds = []
    for line in body.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars="<>|;&")
        lex.whitespace_split, lex.commenters = True, "#"
        tokens = list(lex)
        cut = next((i for i, t in enumerate(tokens) if t in ("<", ">", "|", ";", "&")), len(tokens))
        tokens = [re.sub(r"\$\w+", "1", t) for t in tokens[:cut]]
        while tokens and re.match(r"^\w+=", tokens[0]):
            tokens.pop(0)
        if tokens and tokens[0] != "export":
            cmds.append(tokens)
    return cmds


def cli_args(tokens: list[str]) -> list[str] | None:
    """The arguments ``adaptmllm.cli.main`` gets from a command line (``adaptmllm ...``, ``python -m
    adaptmllm.cli ...``, a launcher's ``-m``/``--module adaptmllm.cli ...``), or None."""
    if tokens[0] == "adaptmllm":
        return tokens[1:]
    if "adaptmllm.cli" in tokens:
        return tokens[tokens.index("adaptmllm.cli") + 1:]
    return None


@functools.lru_cache(maxsize=1)
def _parser():
    from adaptmllm.cli import build_parser

    return build_parser()  # built once: its help text comes from parsing every config docstring


def check_parses(args: list[str]) -> None:
    """The real CLI parser accepts ``args`` (every flag exists, every value has its type)."""
    args = ["x" if a == "..." else a for a in args]
    for i, a in enumerate(args[:-1]):  # a user's own config (c.yaml, my.yaml): a preset stands in for it
        if a == "--config" and not (REPO / args[i + 1]).is_file():
            args[i + 1] = str(REPO / "configs" / "demo.yaml")
        elif a == "--config":
            args[i + 1] = str(REPO / args[i + 1])
    try:
        _parser().parse_args(args)
    except SystemExit as e:
        pytest.fail(f"the CLI parser refuses the README's `adaptmllm {' '.join(args)}` (exit {e.code})")


def _reason(text: str) -> str | None:
    return next((why for key, why in NOT_RUN.items() if key in text), None)


def test_every_snippet_is_classified():
    """Each snippet is run by this file or listed in NOT_RUN with its reason."""
    for lang, body in snippets():
        pieces = [" ".join(c) for c in shell_commands(body)] if lang != "python" else [body]
        for piece in pieces:
            assert any(k in piece for k in RUN) or _reason(piece), f"README snippet not covered by a test: {piece!r}"


def test_snippets_not_run_are_valid():
    """What cannot run here still parses: CLI flags and values, make targets, Python syntax."""
    checked = 0
    for lang, body in snippets():
        if lang == "python":
            compile(body, "README.md", "exec")
            checked += 1
            continue
        for tokens in shell_commands(body):
            if tokens[0] == "make":
                r = subprocess.run(["make", "-n", *tokens[1:]], cwd=REPO, capture_output=True, text=True)
                assert r.returncode == 0, f"README's `make {' '.join(tokens[1:])}`: {r.stderr}"
            elif (args := cli_args(tokens)) is not None:
                check_parses(args)
            else:
                pytest.fail(f"README command not understood by this test: {tokens}")
            checked += 1
    assert checked >= 20


def make_demo_args() -> list[str]:
    """The arguments of the ``adaptmllm`` command that ``make demo`` runs (from ``make -n demo``)."""
    r = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True)
    line = next(line for line in r.stdout.splitlines() if re.search(r"(^|/)adaptmllm run ", line))
    return shlex.split(line)[1:]


def test_make_demo_and_python_api_and_translate_run(tmp_path, monkeypatch, capsys):
    """``make demo``'s command, the Python API snippet and the translate example, really run (small settings)."""
    from adaptmllm.cli import main

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    # make demo: its adaptmllm command, plus the small settings and a temporary runs_dir.
    args = make_demo_args()
    assert args[:3] == ["run", "--config", "configs/demo.yaml"]
    args[2] = str(REPO / "configs" / "demo.yaml")
    assert main(args + SMALL_FLAGS + ["--runs_dir", str(runs), "--quiet", "true"]) == 0
    out = capsys.readouterr().out
    assert (runs / "demo" / "metrics.json").is_file() and "report.md" in out

    # The Python API snippet, with the small settings (and runs_dir) set right after load_config.
    body = next(b for lang, b in snippets() if lang == "python" and "adaptmllm.load_config" in b)
    small = (f"cfg.runs_dir = {str(runs)!r}; cfg.name = 'api'; cfg.data.demo_train_pairs = 300; "
             "cfg.train.num_train_epochs = 1; cfg.train.eval_max_pairs = 50; cfg.eval.num_beams = 1; "
             "cfg.green.measure_power_secs = 1.0")
    body = body.replace('"configs/demo.yaml")\n', f'{str(REPO / "configs" / "demo.yaml")!r})\n{small}\n', 1)
    assert small in body, "the README's Python snippet no longer loads configs/demo.yaml"
    namespace: dict = {}
    exec(compile(body, "README.md (Python API)", "exec"), namespace)
    out = capsys.readouterr().out
    assert namespace["result"].model_dir == runs / "api" / "model"
    printed = out.strip().splitlines()[-1]  # the snippet's print (the Trainer prints its log dicts before it)
    assert float(printed.split()[0]) == namespace["result"].metrics["finetuned"]["chrf"]

    # The translate example, on the model of the make-demo run, demo languages instead of en-ga.
    cmd = next(b for lang, b in snippets() if b.startswith("adaptmllm translate --model runs/en-ga/model"))
    tokens = shell_commands(cmd)[0]
    args = [str(runs / "demo" / "model") if t == "runs/en-ga/model" else {"gle_Latn": "qaa_Latn"}.get(t, t)
            for t in tokens[1:]]
    (tmp_path / "in.txt").write_text("The nurse treats the patient.\nThe doctor sees a child.\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", open(tmp_path / "in.txt", encoding="utf-8"))
    assert main(args + ["--num_beams", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(lines)
