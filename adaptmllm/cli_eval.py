"""The evaluation subcommands of ``adaptmllm`` (hooked into :mod:`adaptmllm.cli`)::

    adaptmllm evaluate --run runs/demo --eval.general_test demo --eval.score_checkpoints true
    adaptmllm select-checkpoint --run runs/demo --checkpoint checkpoint-40      # or --epoch 2
    adaptmllm back-translate --model runs/ga-en/model --src_lang eng_Latn --tgt_lang gle_Latn \\
        --input mono.ga --output bt.tsv --mix_with corpus/train.tsv --ratio 1.0 --mixed_output mixed.tsv

Thin front ends over :mod:`adaptmllm.evaluation` and :mod:`adaptmllm.backtranslate`.
"""

from __future__ import annotations

import sys
from typing import Optional

__all__ = ["EVAL_COMMANDS", "add_eval_commands", "run_eval_command"]

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
    from .evaluation import evaluate_run
    from .report import verdict

    overrides = {k: ns.eval[k] for k in _EVAL_OVERRIDES if ns.eval[k] is not None} if ns.get("eval") else {}
    m = evaluate_run(ns.run, overrides, progress=not ns.quiet and sys.stderr.isatty())
    print(f"{ns.run}/report.html\n{verdict(m)}")
    return 0


def _select(ns) -> int:
    from .evaluation import select_checkpoint
    from .report import verdict

    m = select_checkpoint(ns.run, ns.checkpoint, ns.epoch, progress=not ns.quiet and sys.stderr.isatty())
    print(f"{ns.run}/model now holds {m['selected_checkpoint']['checkpoint']}\n{verdict(m)}")
    return 0


def _back_translate(ns) -> int:
    from .backtranslate import back_translate, mix_pairs, read_monolingual, write_pairs_tsv

    if bool(ns.mix_with) != bool(ns.mixed_output):
        print("adaptmllm: error: --mix_with and --mixed_output go together", file=sys.stderr)
        return 2
    targets = read_monolingual(ns.input)
    sources = back_translate(targets, ns.model, ns.src_lang, ns.tgt_lang, tag=ns.tag, num_beams=ns.num_beams,
                             max_new_tokens=ns.max_new_tokens, batch_size=ns.batch_size,
                             progress=sys.stderr.isatty())
    print(write_pairs_tsv(ns.output, ns.src_lang, ns.tgt_lang, sources, targets, True))
    if ns.mix_with:
        from .config import DataConfig
        from .data import load_pairs

        real = load_pairs(ns.mix_with, DataConfig(src_lang=ns.src_lang, tgt_lang=ns.tgt_lang))
        src, tgt, syn, stats = mix_pairs(real.src, real.tgt, sources, targets, ns.ratio, ns.seed)
        print(write_pairs_tsv(ns.mixed_output, ns.src_lang, ns.tgt_lang, src, tgt, syn))
        print(f"mixed: {stats['real']} real + {stats['synthetic']} synthetic pairs (ratio {stats['ratio']:.2f}); "
              "train on it with data.dev and data.test given, so that no synthetic pair is split off into them")
    return 0


def run_eval_command(ns) -> int:
    """Run the subcommand ``ns.command`` (one of :data:`EVAL_COMMANDS`); returns the exit status
    (2 with a one-line message on bad input)."""
    from .config import ConfigError
    from .data import DataError
    from .evaluation import EvaluationError
    from .languages import LanguageError
    from .metrics import MetricUnavailable
    from .model import ModelError

    try:
        if ns.command == "evaluate":
            return _evaluate(ns.evaluate)
        if ns.command == "select-checkpoint":
            return _select(ns["select-checkpoint"])
        return _back_translate(ns["back-translate"])
    except (ConfigError, DataError, EvaluationError, LanguageError, MetricUnavailable, ModelError, ValueError) as e:
        print(f"adaptmllm: error: {e}", file=sys.stderr)
        return 2
