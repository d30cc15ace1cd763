"""``adaptmllm`` command line: thin subcommands over the same functions as the Python API.

    adaptmllm run --config configs/demo.yaml --train.learning_rate 3e-4
    adaptmllm hpo --config configs/demo.yaml --hpo.n_trials 20 --hpo.timeout 3600
    adaptmllm translate --model runs/demo/model --src eng_Latn --tgt qaa_Latn < in.txt > out.txt
    adaptmllm export --model runs/demo/model --format ctranslate2 --quantization int8
    adaptmllm translate --engine ctranslate2 --model runs/demo/model-ct2-int8 --src eng_Latn --tgt qaa_Latn < in.txt
    ADAPTMLLM_AUTH=translator:PASSWORD adaptmllm serve --model runs/demo/model --share
    adaptmllm human-eval-report --run runs/demo
    adaptmllm evaluate --run runs/demo --eval.general_test demo     # also select-checkpoint, back-translate
    HF_TOKEN=... adaptmllm push --run runs/demo --repo your-name/nllb-en-ga

Every ``Config`` field is a flag (``--data.train``, ``--train.num_train_epochs``...), with its
docstring as help; ``--config FILE.yaml`` loads a preset first and later flags override it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, Sequence

from adaptmllm.apps.hub import HubError, push_to_hub
from adaptmllm.apps.playground.app import serve
from adaptmllm.apps.playground.auth import AuthError, ShareError, check_share
from adaptmllm.config import (CT2_QUANTIZATIONS, Config, ConfigError, DataConfig, ServeConfig, config_from_dict,
                              mqm_weights, read_config_file, yaml_line)
from adaptmllm.data.readers import DataError, decode_text, load_pairs, read_text
from adaptmllm.evaluation.human import DB_NAME, HumanEvalError
from adaptmllm.evaluation.human_report import write_human_report
from adaptmllm.evaluation.scoring import EvaluationError
from adaptmllm.inference.ct2 import export_ctranslate2, is_ct2_model, load_ct2
from adaptmllm.inference.translate import ENGINES, strip_line_ends, translate_texts
from adaptmllm.io import atomic_write_text
from adaptmllm.languages import LanguageError, check_code
from adaptmllm.metrics.corpus import MetricUnavailable
from adaptmllm.modeling.model import ModelError, load_pretrained, resolve_model
from adaptmllm.reporting.summary import verdict
from adaptmllm.runs.backtranslate import back_translate, mix_pairs, read_monolingual, write_pairs_tsv
from adaptmllm.runs.evaluate import evaluate_run, select_checkpoint
from adaptmllm.runs.hpo.search import run_study
from adaptmllm.runs.hpo.study import HPOError, NoCompletedTrialError
from adaptmllm.runs.pipeline import run
from adaptmllm.runs.run_folder import RunFolderError
from adaptmllm.training.launch import format_cluster_plan, plan_cluster
from adaptmllm.training.resilience import TrainingError
from adaptmllm.training.setup import load_checkpoint_model

__all__ = ["main", "build_parser", "EVAL_COMMANDS", "add_eval_commands", "run_eval_command"]


def _quiet_env() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_parser():
    """The jsonargparse parser with the ``run``, ``hpo``, ``translate``, ``serve`` and ``human-eval-report``
    subcommands (and the others registered below)."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # field docstrings are the help text

    parser = ArgumentParser(prog="adaptmllm", description="Fine-tune NLLB-200 for low-resource language pairs.",
                            exit_on_error=True)
    sub = parser.add_subcommands(dest="command")

    run = ArgumentParser(description="Run data -> model -> fine-tune -> evaluate -> green report into runs/<name>/.")
    run.add_argument("--config", action=ActionConfigFile, help="YAML preset (see configs/)")
    run.add_class_arguments(Config, as_group=False)
    run.add_argument("--quiet", type=bool, default=False, help="no progress bars")
    sub.add_subcommand("run", run, help="fine-tune and evaluate (the whole pipeline)")

    hp = ArgumentParser(description="Hyperparameter search with Optuna over fine-tuning runs into runs/<name>/hpo/, "
                        "then the best model scored against the baseline into runs/<name>/best/. Rerun the same "
                        "command to resume; point several workers at one --hpo.storage to share the study.")
    hp.add_argument("--config", action=ActionConfigFile, help="YAML preset (see configs/)")
    hp.add_class_arguments(Config, as_group=False)
    hp.add_argument("--quiet", type=bool, default=False, help="no progress bars")
    sub.add_subcommand("hpo", hp, help="hyperparameter search (Optuna), resumable and distributed")

    tr = ArgumentParser(description="Translate sentences (one per line) from a file or stdin, batched.")
    tr.add_argument("--model", type=str, required=True, help="model folder, e.g. runs/demo/model")
    tr.add_argument("--src", type=str, required=True, help="source language (FLORES-200 code, e.g. eng_Latn)")
    tr.add_argument("--tgt", type=str, required=True, help="target language (FLORES-200 code, e.g. gle_Latn)")
    tr.add_argument("--input", type=Optional[str], default=None, help="input file (default: stdin)")
    tr.add_argument("--output", type=Optional[str], default=None, help="output file (default: stdout)")
    tr.add_argument("--num_beams", type=int, default=4, help="beam size")
    tr.add_argument("--max_new_tokens", type=int, default=256, help="longest translation in tokens")
    tr.add_argument("--batch_size", type=int, default=32, help="segments per batch")
    _add_fast_arguments(tr)
    sub.add_subcommand("translate", tr, help="translate a file or stdin with a model folder")
    pl = ArgumentParser(description="Plan a run on several GPUs and nodes without them: the launcher commands, "
                        "the hostfile, the DeepSpeed config with its batch arithmetic, and the memory per GPU.")
    pl.add_argument("--config", action=ActionConfigFile, help="YAML preset (see configs/)")
    pl.add_class_arguments(Config, as_group=False)
    pl.add_argument("--nodes", type=int, default=1, help="nodes")
    pl.add_argument("--gpus_per_node", type=int, default=1, help="GPUs per node")
    pl.add_argument("--gpu_memory", type=float, default=80.0, help="memory of each GPU, GiB")
    pl.add_argument("--cpu_memory", type=Optional[float], default=None,
                    help="host RAM per node for CPU offload, GiB (default: this machine's)")
    pl.add_argument("--precision", type=str, default="bf16", help="bf16, fp16 or fp32 (on the GPUs planned for)")
    pl.add_argument("--json", type=bool, default=False, help="print the plan as JSON")
    sub.add_subcommand("plan", pl, help="plan a multi-GPU / multi-node run (commands, DeepSpeed config, memory)")
    _add_export_command(sub)
    _add_serve_commands(sub)
    _add_push_command(sub)

    add_eval_commands(sub)
    return parser


def _add_fast_arguments(tr) -> None:
    """Generation options of ``translate``: engine, token budget, sentence splitting, penalties."""
    tr.add_argument("--engine", type=str, default="auto",
                    help="transformers, ctranslate2 (a folder written by adaptmllm export) or auto (by the folder)")
    tr.add_argument("--max_batch_tokens", type=int, default=4096,
                    help="token budget of a batch: segments x longest source in tokens")
    tr.add_argument("--split_sentences", type=bool, default=True,
                    help="translate multi-sentence lines sentence by sentence and join them back")
    tr.add_argument("--length_penalty", type=float, default=1.0, help="beam search length penalty")
    tr.add_argument("--no_repeat_ngram_size", type=int, default=0, help="forbid repeated n-grams of this size (0: off)")
    tr.add_argument("--max_source_length", type=int, default=256,
                    help="longest source sentence in tokens (longer ones are cut between words)")
    tr.add_argument("--device", type=str, default="auto", help="ctranslate2 engine: cpu, cuda or auto")


def _add_export_command(sub) -> None:
    """The ``export`` subcommand: a model folder converted for a faster inference engine."""
    from jsonargparse import ArgumentParser

    ex = ArgumentParser(description="Convert a fine-tuned (or LoRA, merged first) model folder with CTranslate2 "
                        "into a self-contained folder for adaptmllm translate/serve --engine ctranslate2.")
    ex.add_argument("--model", type=str, required=True, help="model folder, e.g. runs/demo/model")
    ex.add_argument("--format", type=str, default="ctranslate2", help="export format (ctranslate2)")
    ex.add_argument("--quantization", type=str, default="int8",
                    help="weights: " + ", ".join(CT2_QUANTIZATIONS) + " (int8: CPU; float16/int8_float16: GPU)")
    ex.add_argument("--output", type=Optional[str], default=None,
                    help="output folder (default: <model>-ct2-<quantization> beside the model folder)")
    ex.add_argument("--force", type=bool, default=False, help="replace an existing output folder")
    sub.add_subcommand("export", ex, help="convert a model for fast inference (CTranslate2)")


def _export(ns) -> int:
    from pathlib import Path

    if ns.format != "ctranslate2":
        print(f"adaptmllm: error: --format: {ns.format!r} is not supported; use ctranslate2", file=sys.stderr)
        return 2
    model = Path(ns.model)
    out = ns.output or str(model.parent / f"{model.name}-ct2-{ns.quantization}")
    print(export_ctranslate2(model, out, ns.quantization, force=ns.force, merge=load_checkpoint_model))
    return 0


def _add_push_command(sub) -> None:
    """The ``push`` subcommand: upload a run's model folder and model card to the Hugging Face Hub."""
    from jsonargparse import ArgumentParser

    ps = ArgumentParser(description="Upload a run's model folder (weights, tokenizer, model card) to the Hugging "
                        "Face Hub. The token is read from $HF_TOKEN (or the Colab secret HF_TOKEN), never "
                        "from the command line, and is never written anywhere.")
    ps.add_argument("--run", type=str, required=True, help="run folder (runs/NAME) or its model/ folder")
    ps.add_argument("--repo", type=str, required=True, help="Hub repository id, e.g. your-name/nllb-en-ga")
    ps.add_argument("--public", type=bool, default=False,
                    help="create the repository as public (default: private; an existing one keeps its visibility)")
    ps.add_argument("--message", type=Optional[str], default=None, help="commit message")
    sub.add_subcommand("push", ps, help="upload a fine-tuned model with its model card to the Hugging Face Hub")


def _push(ns) -> int:
    try:
        url = push_to_hub(ns.run, ns.repo, private=not ns.public, commit_message=ns.message)
    except HubError as e:
        print(f"adaptmllm: error: {e}", file=sys.stderr)
        return 2
    print(url)
    return 0


def _add_serve_commands(sub) -> None:
    """The ``serve`` and ``human-eval-report`` subcommands (playground and human evaluation)."""
    from jsonargparse import ArgumentParser

    sv = ArgumentParser(description="Serve the translation playground and human evaluation (Gradio). "
                        "Sharing (--share) needs --auth USER:PASSWORD (or ADAPTMLLM_AUTH, or --auth_file).")
    sv.add_argument("--model", type=str, required=True, help="fine-tuned model folder, e.g. runs/demo/model")
    sv.add_argument("--baseline", type=Optional[str], default=None,
                    help="baseline model (folder or hub name) shown side by side")
    sv.add_argument("--run", type=Optional[str], default=None,
                    help="run folder whose test set annotators rate (default: the model folder's parent)")
    sv.add_argument("--segments", type=Optional[str], default=None,
                    help="TSV of segments to rate (columns source, system, output) instead of a run folder")
    sv.add_argument("--db", type=Optional[str], default=None,
                    help="annotation database (default: <run>/human_eval.sqlite)")
    sv.add_argument("--src", type=Optional[str], default=None, help="source language the page starts with")
    sv.add_argument("--tgt", type=Optional[str], default=None, help="target language the page starts with")
    sv.add_argument("--share", action="store_true", help="create a public gradio.live link (needs --auth)")
    sv.add_argument("--auth", type=Optional[str], default=None,
                    help="USER:PASSWORD required to open the page (default: $ADAPTMLLM_AUTH); "
                         "prefer --auth_file or the variable: a command line is visible to other local users")
    sv.add_argument("--auth_file", type=Optional[str], default=None,
                    help="file with one USER:PASSWORD per line (one login per translator)")
    sv.add_argument("--admin", type=Optional[str], default=None,
                    help="login name(s) of the owner, comma-separated: they alone see the Results tab and export "
                         "the ratings (without logins: this machine, when not shared); annotators never do")
    sv.add_argument("--insecure-share", "--insecure_share", dest="insecure_share", action="store_true",
                    help="allow --share without a password (anyone with the link can use the server)")
    sv.add_class_arguments(ServeConfig, "serve")
    sub.add_subcommand("serve", sv, help="translation playground and human evaluation in the browser")

    hr = ArgumentParser(description="Summarise human evaluation: mean SQM with 95% CI, MQM points per 100 "
                        "source words, error counts by category; CSV, JSON, markdown and a bar chart.")
    hr.add_argument("--run", type=Optional[str], default=None, help="run folder holding human_eval.sqlite")
    hr.add_argument("--db", type=Optional[str], default=None, help="annotation database (instead of --run)")
    hr.add_argument("--out", type=Optional[str], default=None, help="output folder (default: the database's)")
    hr.add_argument("--mqm_preset", type=str, default="mqm",
                    help="severity weights: mqm (minor 1, major 5, non-translation 25) or adaptmllm "
                         "(minor 1, major 10)")
    hr.add_argument("--mqm_minor", type=Optional[float], default=None, help="override the minor weight")
    hr.add_argument("--mqm_major", type=Optional[float], default=None, help="override the major weight")
    hr.add_argument("--mqm_non_translation", type=Optional[float], default=None,
                    help="override the non-translation weight")
    sub.add_subcommand("human-eval-report", hr, help="summary table and chart of the human evaluation")


def config_from_namespace(ns) -> "object":
    d = ns.as_dict()
    for key in ("config", "__path__", "quiet"):
        d.pop(key, None)
    return config_from_dict(d)


def _plan(ns) -> int:
    import json

    d = ns.as_dict()
    config_path = str(d["config"][0]) if d.get("config") else "config.yaml"
    for key in ("nodes", "gpus_per_node", "gpu_memory", "cpu_memory", "precision", "json"):
        d.pop(key, None)
    ns_config = config_from_namespace(type(ns)(**d))
    try:
        cp = plan_cluster(ns_config, ns.nodes, ns.gpus_per_node, ns.gpu_memory, ns.cpu_memory, config_path,
                          ns.precision)
    except ValueError as e:
        print(f"adaptmllm: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(cp.to_dict(), indent=2) if ns.json else format_cluster_plan(cp))
    return 0


def _translate(ns) -> int:
    check_code(ns.src, "--src")
    check_code(ns.tgt, "--tgt")

    if ns.input:
        from pathlib import Path

        text = read_text(Path(ns.input))
    elif hasattr(sys.stdin, "buffer"):  # bytes, decoded as --input's file is (not Python's surrogateescape)
        text = decode_text(sys.stdin.buffer.read(), "stdin")
    else:
        text = "".join(sys.stdin)
    lines = strip_line_ends(text.split("\n"))
    if lines and lines[-1] == "":
        lines.pop()
    engine = ns.engine
    if engine == "auto":
        engine = "ctranslate2" if is_ct2_model(ns.model) else "transformers"
    if engine not in ENGINES:
        print(f"adaptmllm: error: --engine: {engine!r} is not one of auto, {', '.join(ENGINES)}", file=sys.stderr)
        return 2
    if engine == "ctranslate2":
        model, tokenizer = load_ct2(ns.model, ns.src, ns.tgt, device=ns.device)
    elif is_ct2_model(ns.model):
        print(f"adaptmllm: error: {ns.model} is a CTranslate2 export: use --engine ctranslate2", file=sys.stderr)
        return 2
    else:
        model, tokenizer = load_pretrained(ns.model, ns.src, ns.tgt, local_files_only=True, flag="--model")
        import torch

        if torch.cuda.is_available():  # translate_texts autocasts to bf16/fp16 there
            model = model.to("cuda")
    out = translate_texts(model, tokenizer, lines, ns.src, ns.tgt, num_beams=ns.num_beams,
                          max_new_tokens=ns.max_new_tokens, batch_size=ns.batch_size,
                          max_source_length=ns.max_source_length, progress=sys.stderr.isatty(),
                          desc="translating", max_batch_tokens=ns.max_batch_tokens,
                          length_penalty=ns.length_penalty, no_repeat_ngram_size=ns.no_repeat_ngram_size,
                          split_sentences=ns.split_sentences)
    text = "".join(t.replace("\n", " ") + "\n" for t in out)
    if ns.output:
        atomic_write_text(ns.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _read_auth(ns) -> Optional[list]:
    """Logins from --auth_file, --auth or $ADAPTMLLM_AUTH (never echoed)."""
    entries = []
    if ns.auth_file:
        from pathlib import Path

        for line in Path(ns.auth_file).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                entries.append(line.strip())
    auth = ns.auth or os.environ.get("ADAPTMLLM_AUTH")
    if auth:
        entries.append(auth)
    return entries or None


def _serve(ns) -> int:
    config = ServeConfig(**{k: v for k, v in ns.serve.as_dict().items() if not k.startswith("__")})
    try:  # a shared link without a login is refused first, before the model is looked at
        check_share(ns.share, _read_auth(ns), insecure_share=ns.insecure_share)
    except (ShareError, AuthError) as e:
        print(f"adaptmllm: error: {e}", file=sys.stderr)
        return 2
    resolve_model(ns.model, flag="--model")  # a missing folder fails here, naming the flag (ModelError)
    if ns.baseline:
        resolve_model(ns.baseline, flag="--baseline")
    try:
        server = serve(ns.model, ns.baseline, run_dir=ns.run, segments=ns.segments, db=ns.db, src_lang=ns.src,
                       tgt_lang=ns.tgt, config=config, share=ns.share, auth=_read_auth(ns),
                       insecure_share=ns.insecure_share,
                       admins=[a.strip() for a in (ns.admin or "").split(",") if a.strip()])
    except (ShareError, AuthError, HumanEvalError, OSError) as e:
        print(f"adaptmllm: error: {e}", file=sys.stderr)
        return 2
    print(f"playground: {server.local_url}" + (f"  shared: {server.share_url}" if server.share_url else "")
          + "  (Ctrl-C to stop)", flush=True)
    server.block()
    return 0


def _human_eval_report(ns) -> int:
    from pathlib import Path

    if not ns.db and not ns.run:
        print("adaptmllm: error: give --run runs/NAME or --db PATH", file=sys.stderr)
        return 2
    try:
        weights = mqm_weights(ns.mqm_preset, {"minor": ns.mqm_minor, "major": ns.mqm_major,
                                              "non-translation": ns.mqm_non_translation})
        out = write_human_report(ns.db or Path(ns.run) / DB_NAME, ns.out, weights)
    except (HumanEvalError, ConfigError) as e:
        print(f"adaptmllm: error: {e}", file=sys.stderr)
        return 2
    print(out["markdown"])
    print("\n" + "\n".join(f"{k}: {v}" for k, v in out["paths"].items()))
    return 0


def _hpo(ns) -> int:
    config = config_from_namespace(ns)
    try:
        result = run_study(config, progress=not ns.quiet)
    except NoCompletedTrialError as e:
        print(f"adaptmllm: {e}", file=sys.stderr)
        return 1
    except HPOError as e:
        print(f"adaptmllm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adaptmllm: interrupted; run the same command again to resume the study", file=sys.stderr)
        return 130
    if result is None:  # a rank > 0 of a multi-process worker: rank 0 reports
        return 0
    c = result.counts
    print(f"\nstudy {result.study_name}: {c['complete']} completed, {c['pruned']} pruned, {c['fail']} failed "
          f"({result.storage})")
    print(f"best trial {result.best_trial}: dev {config.train.metric_for_best_model} {result.best_value:.2f} "
          f"{result.best_params}")
    print(f"study folder: {result.hpo_dir}")
    if result.run is not None:
        print(f"{result.run.report}\n{verdict(result.run.metrics)}")
    return 0


def _parsers(parser) -> list:
    """``parser`` and its subcommand parsers, depth first."""
    out = [parser]
    action = getattr(parser, "_subcommands_action", None)
    for sub in (action._name_parser_map.values() if action is not None else ()):
        out += _parsers(sub)
    return out


def config_files(argv: Sequence[str]) -> list[str]:
    """The ``--config FILE`` paths of a ``run``/``hpo`` command line (inline YAML strings left out)."""
    files = []
    for i, a in enumerate(argv):
        value = argv[i + 1] if a == "--config" and i + 1 < len(argv) else a[9:] if a.startswith("--config=") else None
        if value is not None and "\n" not in value and not value.lstrip().startswith("{"):
            files.append(value)
    return files


def usage_error(parser, argv: Sequence[str], error: Exception) -> str:
    """One line for a command-line error of jsonargparse: what is wrong, the closest valid option for an
    unknown one, the file and line for a bad value read from a ``--config`` file, and where the help is."""
    import difflib
    import re

    msg = " ".join(str(error).split())
    command = argv[0] if argv and not argv[0].startswith("-") else None
    parsers = {name: p for p in _parsers(parser) for name in [getattr(p, "prog", "").split()[-1]]}
    sub = parsers.get(command)
    m = re.search(r"unrecognized arguments: (\S+)", msg)
    if m and sub is not None:
        flag = m.group(1).split("=", 1)[0]
        options = [o for a in sub._actions for o in a.option_strings]
        close = difflib.get_close_matches(flag, options, n=3)
        msg = f"{flag}: unknown option" + (f"; did you mean {' or '.join(close)}?" if close else "")
    msg = re.sub(r"Expected a <class '(\w+)'>\. Got value: (.*)$", lambda t: f"expected {'an' if t[1][0] in 'aeiou' else 'a'} {t[1]}, got {t[2]!r}", msg)
    m = re.match(r'Parser key "([\w.]+)": (.*)', msg)
    if m:
        key, problem = m.groups()
        msg = f"{key}: {problem}"
        given = any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv)
        for path in ([] if given else config_files(argv)):  # the value came from a file: name its line
            try:
                line = yaml_line(open(path, encoding="utf-8").read(), key)
            except OSError:
                line = None
            if line:
                msg = f"{path} line {line}: {msg}"
                break
    return f"adaptmllm: error: {msg} (adaptmllm {command + ' ' if sub is not None else ''}--help lists the options)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``adaptmllm`` command. Returns the exit status (2 on bad input)."""
    _quiet_env()
    from jsonargparse import ArgumentError

    argv = list(argv) if argv is not None else sys.argv[1:]
    if argv and argv[0] in ("run", "hpo"):
        try:  # the file, line, field and closest valid key; not jsonargparse's usage and "<unicode string>"
            for path in config_files(argv):
                read_config_file(path)
        except ConfigError as e:
            print(f"adaptmllm: error: {e}", file=sys.stderr)
            return 2
    parser = build_parser()
    for p in _parsers(parser):  # errors come back here as one line, not a usage dump
        p.exit_on_error = False
    try:
        ns = parser.parse_args(argv)
    except ArgumentError as e:
        print(usage_error(parser, argv, e), file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "codecarbon", "datasets", "urllib3", "sacrebleu"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if ns.command == "run":
            config = config_from_namespace(ns.run)
            result = run(config, progress=not ns.run.quiet)
            if result is None:  # rank > 0 of a multi-GPU run: rank 0 reports
                return 0
            m = result.metrics
            print(f"\n{result.report}" + (f"\n{result.html}" if getattr(result, "html", None) else ""))

            print(verdict(m))
            return 0
        if ns.command == "hpo":
            return _hpo(ns.hpo)
        if ns.command == "translate":
            return _translate(ns.translate)
        if ns.command == "plan":
            return _plan(ns.plan)
        if ns.command == "serve":
            return _serve(ns.serve)
        if ns.command == "push":
            return _push(ns.push)
        if ns.command == "export":
            return _export(ns.export)

        if ns.command in EVAL_COMMANDS:
            return run_eval_command(ns)
        if ns.command == "human-eval-report":
            return _human_eval_report(ns["human-eval-report"])
    except (ConfigError, DataError, LanguageError, ModelError, RunFolderError) as e:
        print(f"adaptmllm: error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:  # the run stopped (damaged checkpoint, full disk, out of memory): what to do next
        print(f"adaptmllm: error: {e}", file=sys.stderr)
        return 1
    parser.print_help()
    return 2


EVAL_COMMANDS = ("evaluate", "select-checkpoint", "back-translate")
"""Subcommands this module adds."""


_EVAL_OVERRIDES = {
    "general_test": (Optional[str], "general-domain test set for the forgetting check (a corpus path as data.test "
                                    "takes, or 'demo')"),
    "forgetting_threshold": (Optional[float], "flag a general-domain chrF++ drop of more than this many points"),
    "score_checkpoints": (Optional[bool], "score each remaining checkpoint on dev and general test"),
    "bootstrap_samples": (Optional[int], "paired bootstrap resamples (1000)"),
    "significance_level": (Optional[float], "p-value threshold (0.05)"),
    "error_analysis_n": (Optional[int], "segments listed as most worse / most better"),
    "spm_model": (Optional[str], "local FLORES-200 SentencePiece model: adds spBLEU"),
    "comet_model": (Optional[str], "local COMET checkpoint (pip install 'adaptmllm[comet]'): adds COMET"),
    "engine": (Optional[str], "engine of the translations this command makes (forgetting check, checkpoints): "
                              "transformers or ctranslate2"),
    "ct2_quantization": (Optional[str], "with --eval.engine ctranslate2: float32, int8, int8_float16, float16..."),
}


def add_eval_commands(sub) -> None:
    """Add the ``evaluate``, ``select-checkpoint`` and ``back-translate`` subcommands to ``sub``."""
    from jsonargparse import ArgumentParser

    ev = ArgumentParser(description="(Re-)evaluate a finished run: paired bootstrap significance, error analysis, "
                        "and as asked the forgetting check and per-checkpoint scores; rewrites metrics.json, "
                        "report.md and report.html. Flags not given keep the run's config.yaml values.")
    ev.add_argument("--run", type=str, required=True, help="run folder, e.g. runs/demo")
    for name, (typ, help_text) in _EVAL_OVERRIDES.items():
        ev.add_argument(f"--eval.{name}", type=typ, default=None, help=help_text)
    ev.add_argument("--quiet", type=bool, default=False, help="no progress bars")
    sub.add_subcommand("evaluate", ev, help="significance, error analysis, forgetting check, HTML report of a run")

    sc = ArgumentParser(description="Keep another checkpoint in runs/NAME/model (e.g. the one with the best "
                        "in-domain / general-domain trade-off in report.html), then re-evaluate the run with it.")
    sc.add_argument("--run", type=str, required=True, help="run folder, e.g. runs/demo")
    sc.add_argument("--checkpoint", type=Optional[str], default=None, help="checkpoint name, e.g. checkpoint-40")
    sc.add_argument("--epoch", type=Optional[float], default=None, help="or the epoch of the checkpoint, e.g. 2")
    sc.add_argument("--quiet", type=bool, default=False, help="no progress bars")
    sub.add_subcommand("select-checkpoint", sc, help="keep a chosen checkpoint in model/ and re-evaluate")

    bt = ArgumentParser(description="Back-translation: turn monolingual target-language text into synthetic "
                        "(source, target) pairs with a model of the reverse direction (target -> source); "
                        "synthetic sources are tagged; optionally mix them into a training corpus at a ratio.")
    bt.add_argument("--model", type=str, required=True, help="reverse-direction model folder (tgt_lang -> src_lang)")
    bt.add_argument("--src_lang", type=str, required=True, help="source language of the pair you fine-tune (eng_Latn)")
    bt.add_argument("--tgt_lang", type=str, required=True, help="target language: the monolingual text's (gle_Latn)")
    bt.add_argument("--input", type=str, required=True, help="monolingual target-language text, one sentence a line")
    bt.add_argument("--output", type=str, required=True, help="synthetic pairs TSV to write")
    bt.add_argument("--tag", type=str, default="<BT>", help="marker before each synthetic source ('' for none)")
    bt.add_argument("--num_beams", type=int, default=4, help="beam size")
    bt.add_argument("--max_new_tokens", type=int, default=256, help="longest translation in tokens")
    bt.add_argument("--batch_size", type=int, default=32, help="segments per batch")
    bt.add_argument("--mix_with", type=Optional[str], default=None,
                    help="real training corpus (any data.train form) to mix the synthetic pairs into")
    bt.add_argument("--ratio", type=float, default=1.0, help="synthetic pairs per real pair in the mix")
    bt.add_argument("--mixed_output", type=Optional[str], default=None, help="mixed corpus TSV to write")
    bt.add_argument("--seed", type=int, default=13, help="seed of the synthetic subset and the shuffle")
    sub.add_subcommand("back-translate", bt, help="synthetic pairs from monolingual text, tagged, mixable")


def _evaluate(ns) -> int:
    overrides = {k: ns.eval[k] for k in _EVAL_OVERRIDES if ns.eval[k] is not None} if ns.get("eval") else {}
    m = evaluate_run(ns.run, overrides, progress=not ns.quiet and sys.stderr.isatty())
    print(f"{ns.run}/report.html\n{verdict(m)}")
    return 0


def _select(ns) -> int:
    m = select_checkpoint(ns.run, ns.checkpoint, ns.epoch, progress=not ns.quiet and sys.stderr.isatty())
    print(f"{ns.run}/model now holds {m['selected_checkpoint']['checkpoint']}\n{verdict(m)}")
    return 0


def _back_translate(ns) -> int:
    if bool(ns.mix_with) != bool(ns.mixed_output):
        print("adaptmllm: error: --mix_with and --mixed_output go together", file=sys.stderr)
        return 2
    targets = read_monolingual(ns.input)
    sources = back_translate(targets, ns.model, ns.src_lang, ns.tgt_lang, tag=ns.tag, num_beams=ns.num_beams,
                             max_new_tokens=ns.max_new_tokens, batch_size=ns.batch_size,
                             progress=sys.stderr.isatty())
    print(write_pairs_tsv(ns.output, ns.src_lang, ns.tgt_lang, sources, targets, True))
    if ns.mix_with:
        real = load_pairs(ns.mix_with, DataConfig(src_lang=ns.src_lang, tgt_lang=ns.tgt_lang))
        src, tgt, syn, stats = mix_pairs(real.src, real.tgt, sources, targets, ns.ratio, ns.seed)
        print(write_pairs_tsv(ns.mixed_output, ns.src_lang, ns.tgt_lang, src, tgt, syn))
        print(f"mixed: {stats['real']} real + {stats['synthetic']} synthetic pairs (ratio {stats['ratio']:.2f}); "
              "train on it with data.dev and data.test given, so that no synthetic pair is split off into them")
    return 0


def run_eval_command(ns) -> int:
    """Run the subcommand ``ns.command`` (one of :data:`EVAL_COMMANDS`); returns the exit status
    (2 with a one-line message on bad input)."""
    try:
        if ns.command == "evaluate":
            return _evaluate(ns.evaluate)
        if ns.command == "select-checkpoint":
            return _select(ns["select-checkpoint"])
        return _back_translate(ns["back-translate"])
    except (ConfigError, DataError, EvaluationError, LanguageError, MetricUnavailable, ModelError, ValueError) as e:
        print(f"adaptmllm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
