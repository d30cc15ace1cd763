"""Evaluation beyond the corpus scores, shared by :func:`adaptmllm.pipeline.run` and the
``adaptmllm evaluate`` / ``adaptmllm select-checkpoint`` commands:

- significance: paired bootstrap of fine-tuned vs baseline (:mod:`adaptmllm.significance`);
- forgetting check: both systems on a general-domain test set (``eval.general_test``), a chrF++
  drop beyond ``eval.forgetting_threshold`` points flagged;
- per-checkpoint scores: each remaining ``checkpoints/checkpoint-*`` on the in-domain dev set and
  the general test set (``eval.score_checkpoints``), so the user can pick the trade-off, and
  :func:`select_checkpoint` keeps the chosen one in ``model/``;
- error analysis (:mod:`adaptmllm.analysis`), every segment in ``segments.tsv``.

Files in the run folder: ``data/general.<src>``/``.<tgt>`` (the general test set as scored),
``general.baseline.hyp.txt``, ``general.finetuned.hyp.txt``, ``segments.tsv``,
``checkpoint_scores.png``. Scores are sacrebleu's, 0-100.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from .config import Config

__all__ = ["GENERAL_DEMO", "EvaluationError", "load_general_test", "demo_general_test", "score_general",
           "forgetting", "list_checkpoints", "score_checkpoints", "plot_checkpoints", "evaluate_outputs",
           "evaluate_run", "select_checkpoint", "read_lines"]

log = logging.getLogger("adaptmllm")

GENERAL_DEMO = "demo"
"""``eval.general_test`` value that selects the embedded demo's held-out general-domain pairs."""


class EvaluationError(RuntimeError):
    """A run folder cannot be (re-)evaluated as asked: a file is missing or a checkpoint is unknown.
    The message names the file or the choices."""


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file (one segment per line, as the run folder stores them).

    Raises:
        EvaluationError: the file is missing.
    """
    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"{p}: missing; is this a finished adaptmllm run folder?")
    text = p.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ----------------------------------------------------------------------------- general test set

def demo_general_test(tgt_lang: str, n: int = 200, seed: int = 13) -> tuple[list[str], list[str]]:
    """``n`` general-domain demo pairs English -> ``tgt_lang`` that the demo base never saw in its
    pretraining (its sources are removed), the demo's stand-in for FLORES-200 devtest.

    Raises:
        ValueError: ``tgt_lang`` is not a demo language.
    """
    from . import demo
    from .config import TinyModelConfig
    from .model import DEMO_BASE_SEED

    seen: set[str] = set()
    pretrain = TinyModelConfig().pretrain_pairs
    for i, lang in enumerate(demo.DEMO_TARGETS):
        seen.update(demo.general_pairs(lang, pretrain, seed=DEMO_BASE_SEED + i)[0])
    src, tgt = demo.general_pairs(tgt_lang, 4 * n, seed=10_000 + seed)
    keep = [i for i, s in enumerate(src) if s not in seen][:n]
    return [src[i] for i in keep], [tgt[i] for i in keep]


def load_general_test(config: Config) -> Optional[Any]:
    """The general-domain test set of the forgetting check (``eval.general_test``) as
    :class:`adaptmllm.data.Pairs`, or None when it is not set. Loaded as given (not cleaned, like
    ``data.test``), with the ``data.*`` column/suffix settings and the format detected from the path;
    ``demo``: :func:`demo_general_test` with ``data.test_size`` pairs.

    Raises:
        adaptmllm.data.DataError: the corpus cannot be read, is empty, or ``demo`` is asked for a pair
            the demo does not have.
    """
    from .data import DataError, Pairs, load_pairs

    spec = config.eval.general_test
    if not spec:
        return None
    if spec == GENERAL_DEMO:
        if config.data.src_lang != "eng_Latn":
            raise DataError(f"eval.general_test=demo: the demo's general-domain pairs are English (eng_Latn) -> "
                            f"demo language, not {config.data.src_lang}; give a general-domain test set such as "
                            "FLORES-200 devtest for your pair")
        try:
            src, tgt = demo_general_test(config.data.tgt_lang, config.data.test_size, config.data.seed)
        except ValueError as e:
            raise DataError(f"eval.general_test=demo: {e}") from e
        return Pairs(src, tgt)
    try:
        pairs = load_pairs(spec, dataclasses.replace(config.data, format="auto"))
    except DataError as e:
        raise DataError(f"eval.general_test: {e}") from e
    if not len(pairs):
        raise DataError(f"eval.general_test: {spec} holds no pairs")
    return pairs


def score_general(model: Any, tokenizer: Any, config: Config, general: Any, run_dir: str | os.PathLike,
                  system: str, progress: bool = False) -> dict:
    """Translate the general test set with ``model`` and score it like the test set (see
    :func:`adaptmllm.pipeline.score_model`); writes ``general.<system>.hyp.txt`` and, once,
    ``data/general.<src>``/``.<tgt>``. ``system`` is ``baseline`` or ``finetuned``. Returns the scores."""
    from .io import atomic_write_text
    from .pipeline import score_model

    run_dir = Path(run_dir)
    for side, segs in ((config.data.src_lang, general.src), (config.data.tgt_lang, general.tgt)):
        p = run_dir / "data" / f"general.{side}"
        if not p.is_file():
            atomic_write_text(p, "".join(" ".join(s.splitlines()) + "\n" for s in segs))
    s = score_model(model, tokenizer, config, general.src, general.tgt, run_dir / f"general.{system}.hyp.txt",
                    progress, f"{system}: translating the general-domain test set")
    log.info("%s general-domain test: BLEU %.2f chrF++ %.2f TER %.2f", system, s["bleu"], s["chrf"], s["ter"])
    return s


def forgetting(general_scores: dict, config: Config, significance: Optional[dict] = None) -> dict:
    """The forgetting check's verdict from ``{"baseline": scores or None, "finetuned": scores}``.

    Returns ``{"source", "n_segments", "baseline", "finetuned", "delta": {bleu, chrf, ter},
    "metric": "chrf", "drop": chrF++ points lost (negative: gained), "threshold", "flagged",
    "significance"}``. ``flagged`` is True when the chrF++ drop exceeds ``eval.forgetting_threshold``
    (None without a baseline score). Fine-tuning on a narrow domain can cost general quality: the
    field's cautionary example is an English-Romanian baseline at 41.6 BLEU falling to 30.9 after
    fine-tuning on a broad corpus (the figures the issue tracker cites).
    """
    base, fine = general_scores.get("baseline"), general_scores["finetuned"]
    keys = [k for k in ("bleu", "chrf", "ter", "spbleu", "comet") if base and k in base and k in fine]
    delta = {k: fine[k] - base[k] for k in keys} if base else None
    drop = None if delta is None else -delta["chrf"]
    thr = float(config.eval.forgetting_threshold)
    return {"source": config.eval.general_test, "n_segments": fine.get("n_segments"), "baseline": base,
            "finetuned": fine, "delta": delta, "metric": "chrf", "drop": drop, "threshold": thr,
            "flagged": None if drop is None else bool(drop > thr), "significance": significance}


# ----------------------------------------------------------------------------- checkpoints

def list_checkpoints(run_dir: str | os.PathLike) -> list[dict]:
    """The checkpoints left in ``<run_dir>/checkpoints``, oldest first: ``{"checkpoint": name,
    "path", "step", "epoch"}`` (epoch from its ``trainer_state.json``, None if unreadable)."""
    from .resilience import checkpoint_folders, checkpoint_step

    out = []
    for p in reversed(checkpoint_folders(Path(run_dir) / "checkpoints")):
        epoch = None
        try:
            epoch = json.loads((p / "trainer_state.json").read_text(encoding="utf-8")).get("epoch")
        except (OSError, ValueError):
            pass
        out.append({"checkpoint": p.name, "path": str(p), "step": checkpoint_step(p), "epoch": epoch})
    return out


def _on_device(model: Any) -> Any:
    """The model on the GPU when one is visible (fp32, as the pipeline scores after training), else as is."""
    import torch

    return model.to("cuda") if torch.cuda.is_available() else model


def _load_model(folder: str | os.PathLike, config: Optional[Config] = None,
                run_dir: Optional[str | os.PathLike] = None) -> Any:
    """A checkpoint as a plain model on the GPU when there is one. A LoRA checkpoint (PEFT adapters
    only, ``adapter_config.json``) is loaded onto the run's base model (``config``, its tokenizer in
    ``run_dir/tokenizer``) and merged."""
    from transformers import AutoModelForSeq2SeqLM

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        return _on_device(AutoModelForSeq2SeqLM.from_pretrained(str(folder)))
    from peft import PeftModel

    from .model import _prepare_base_model

    if config is None or run_dir is None:
        raise EvaluationError(f"{folder} holds LoRA adapters: the run's config and folder are needed to load its base")
    base = _prepare_base_model(config, tokenizer_dir=Path(run_dir) / "tokenizer", progress=False,
                               reuse_tokenizer=True).model
    return _on_device(PeftModel.from_pretrained(base, str(folder)).merge_and_unload())


def _scores(model: Any, tokenizer: Any, config: Config, src: list[str], ref: list[str]) -> dict:
    from .metrics import score
    from .translate import engine_model, eval_kwargs, translate_texts

    hyps = translate_texts(engine_model(model, tokenizer, config), tokenizer, src, config.data.src_lang,
                           config.data.tgt_lang, **eval_kwargs(config))
    s = score(hyps, ref, config.eval.bleu_tokenize)
    return {k: s[k] for k in ("bleu", "chrf", "ter", "n_segments")}


def score_checkpoints(run_dir: str | os.PathLike, config: Config, tokenizer: Any, dev: Any,
                      general: Optional[Any] = None, progress: bool = False) -> list[dict]:
    """Score every remaining checkpoint on the in-domain dev set (its first ``train.eval_max_pairs``
    pairs, as training evaluates) and on the general test set, with the eval settings
    (``eval.num_beams``...). Returns :func:`list_checkpoints`'s entries (without ``path``) with
    ``"dev"`` and ``"general"`` (None without a general set) score dicts (BLEU, chrF++, TER, 0-100).
    Takes one model load and two translation passes per checkpoint."""
    from tqdm.auto import tqdm

    from .translate import engine_model

    n = config.train.eval_max_pairs or len(dev)
    dev_src, dev_ref = list(dev.src[:n]), list(dev.tgt[:n])
    out = []
    for c in tqdm(list_checkpoints(run_dir), desc="scoring checkpoints", disable=not progress):
        model = engine_model(_load_model(c["path"], config, run_dir), tokenizer, config)  # converted once
        row = {k: v for k, v in c.items() if k != "path"}
        row["dev"] = _scores(model, tokenizer, config, dev_src, dev_ref)
        row["general"] = _scores(model, tokenizer, config, list(general.src), list(general.tgt)) if general else None
        log.info("%s (epoch %s): dev chrF++ %.2f%s", c["checkpoint"], c["epoch"], row["dev"]["chrf"],
                 f", general chrF++ {row['general']['chrf']:.2f}" if row["general"] else "")
        out.append(row)
        del model
    return out


def plot_checkpoints(history: list[dict], checkpoints: list[dict], forgetting_info: Optional[dict],
                     path: str | os.PathLike, kept: Optional[str] = None) -> Optional[Path]:
    """Per-epoch chrF++ curves to a PNG: in-domain dev from the training history (greedy, every
    evaluation, epoch 0 = baseline), in-domain dev and general-domain test of each remaining
    checkpoint (beam search), the baseline's general score at epoch 0, and the kept checkpoint
    marked. Returns the path, or None when there is nothing to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .io import atomic_write_bytes

    hist = [(e["epoch"], e["eval_chrf"]) for e in history or [] if e.get("eval_chrf") is not None
            and e.get("epoch") is not None]
    ck = [c for c in checkpoints or [] if c.get("epoch") is not None]
    if not hist and not ck:
        return None
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if hist:
        ax.plot([h[0] for h in hist], [h[1] for h in hist], marker="o", markersize=3, color="tab:blue", alpha=0.5,
                label="in-domain dev (training evaluation, greedy)")
    if ck:
        ax.plot([c["epoch"] for c in ck], [c["dev"]["chrf"] for c in ck], marker="s", color="tab:blue",
                linestyle="none", label="in-domain dev, checkpoint (beam)")
        gen = [(c["epoch"], c["general"]["chrf"]) for c in ck if c.get("general")]
        base = (forgetting_info or {}).get("baseline")
        if base:
            gen = [(0.0, base["chrf"])] + gen
        if gen:
            ax.plot([g[0] for g in gen], [g[1] for g in gen], marker="D", color="tab:red",
                    label="general-domain test")
        for c in ck:
            if kept and c["checkpoint"] == Path(kept).name:
                ax.axvline(c["epoch"], color="grey", linestyle=":", label=f"kept: {c['checkpoint']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("chrF++ (0-100)")
    ax.set_title("In-domain vs general-domain quality per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(Path(path), buf.getvalue())


# ----------------------------------------------------------------------------- all together

def evaluate_outputs(run_dir: str | os.PathLike, config: Config, test_src: list[str], test_ref: list[str], *,
                     general_scores: Optional[dict] = None, checkpoints: Optional[list] = None,
                     history: Optional[list] = None, kept: Optional[str] = None) -> dict:
    """Significance, error analysis and the forgetting check from the translations already in the
    run folder (``baseline.hyp.txt`` when present, ``finetuned.hyp.txt``, ``general.*.hyp.txt``).

    Returns the entries to merge into ``metrics.json``: ``significance`` (see
    :func:`adaptmllm.significance.paired_bootstrap`; None without baseline translations),
    ``error_analysis`` (see :func:`adaptmllm.analysis.error_analysis`, without the per-segment
    scores, which go to ``segments.tsv``), ``forgetting`` (see :func:`forgetting`, when
    ``general_scores`` is given) and ``checkpoints`` (when given; its plot goes to
    ``checkpoint_scores.png``).

    Raises:
        EvaluationError: ``finetuned.hyp.txt`` is missing.
    """
    from .analysis import error_analysis, write_segments_tsv
    from .significance import paired_bootstrap

    run_dir, ev = Path(run_dir), config.eval
    fine = read_lines(run_dir / "finetuned.hyp.txt")
    base_path = run_dir / "baseline.hyp.txt"
    base = read_lines(base_path) if base_path.is_file() else None
    metrics = ["chrf", "bleu", "ter"] + (["spbleu"] if ev.spm_model else [])
    out: dict = {"significance": None}
    if base is not None:
        out["significance"] = paired_bootstrap(base, fine, test_ref, metrics=metrics, bleu_tokenize=ev.bleu_tokenize,
                                               spm_model=ev.spm_model, n_samples=ev.bootstrap_samples,
                                               alpha=ev.significance_level)
    analysis = error_analysis(test_src, test_ref, fine, base, n=ev.error_analysis_n, src_lang=config.data.src_lang)
    write_segments_tsv(run_dir / "segments.tsv", analysis, test_src, test_ref, fine, base)
    analysis.pop("sentence_chrf")
    out["error_analysis"] = analysis
    if general_scores and general_scores.get("finetuned"):
        sig = None
        gb, gf = run_dir / "general.baseline.hyp.txt", run_dir / "general.finetuned.hyp.txt"
        gref = run_dir / "data" / f"general.{config.data.tgt_lang}"
        if general_scores.get("baseline") and gb.is_file() and gf.is_file() and gref.is_file():
            sig = paired_bootstrap(read_lines(gb), read_lines(gf), read_lines(gref), metrics=metrics,
                                   bleu_tokenize=ev.bleu_tokenize, spm_model=ev.spm_model,
                                   n_samples=ev.bootstrap_samples, alpha=ev.significance_level)
        out["forgetting"] = forgetting(general_scores, config, sig)
        if out["forgetting"]["flagged"]:
            log.warning("forgetting: general-domain chrF++ fell by %.2f points (threshold %.2f)",
                        out["forgetting"]["drop"], out["forgetting"]["threshold"])
    if checkpoints is not None:
        out["checkpoints"] = checkpoints
        png = plot_checkpoints(history or [], checkpoints, out.get("forgetting"), run_dir / "checkpoint_scores.png",
                               kept)
        out["checkpoint_plot"] = png.name if png else None
    return out


def _run_files(run_dir: Path) -> tuple[Config, dict]:
    from .config import load_config

    if not (run_dir / "config.yaml").is_file() or not (run_dir / "metrics.json").is_file():
        raise EvaluationError(f"{run_dir}: no config.yaml and metrics.json; give the folder of a finished run "
                              "(runs/<name>)")
    return load_config(run_dir / "config.yaml"), json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def _pairs_from_folder(run_dir: Path, config: Config, split: str) -> Any:
    from .data import Pairs

    d = run_dir / "data"
    return Pairs(read_lines(d / f"{split}.{config.data.src_lang}"), read_lines(d / f"{split}.{config.data.tgt_lang}"))


def evaluate_run(run_dir: str | os.PathLike, eval_overrides: Optional[dict] = None, *, rescore: bool = False,
                 progress: bool = False) -> dict:
    """(Re-)evaluate a finished run folder and rewrite ``metrics.json``, ``report.md``, ``report.html``
    and the model card: significance, error analysis, and, as ``eval`` asks (``config.yaml``'s eval
    section updated with ``eval_overrides``, e.g. ``{"general_test": "demo", "score_checkpoints": True}``),
    the forgetting check and the per-checkpoint scores. The models are loaded only when something must
    be translated: the baseline as the run built it, the fine-tuned model from ``model/`` (or, when
    ``model/`` holds the baseline, from the best checkpoint). With ``rescore``, the test set is
    translated again with ``model/`` (after :func:`select_checkpoint`). ``config.yaml`` is left as it
    was; the overrides are recorded in ``metrics.json`` under ``evaluated_with``. Returns the metrics.

    Raises:
        EvaluationError: not a finished run folder, or a needed file is missing.
        ConfigError: an unknown or invalid eval override.
        adaptmllm.data.DataError, adaptmllm.metrics.MetricUnavailable: as :func:`load_general_test`
            and :func:`adaptmllm.metrics.check_optional_metrics`.
    """
    from .config import config_from_dict, config_to_dict
    from .metrics import check_optional_metrics
    from .model import base_licence, load_pretrained, prepare_model
    from .pipeline import score_model
    from .report import write_metrics, write_model_card, write_report
    from .translate import engine_model

    run_dir = Path(run_dir)
    config, metrics = _run_files(run_dir)
    if eval_overrides:
        d = config_to_dict(config)
        d["eval"].update(eval_overrides)
        config = config_from_dict(d)
        metrics["evaluated_with"] = {"eval": dict(eval_overrides)}
    ev = config.eval
    check_optional_metrics(ev.spm_model, ev.comet_model)
    general = load_general_test(config)
    test = _pairs_from_folder(run_dir, config, "test")
    model_dir = run_dir / "model"
    src, tgt = config.data.src_lang, config.data.tgt_lang
    cache: dict[str, Any] = {}

    def finetuned() -> tuple[Any, Any]:
        if "finetuned" not in cache:
            folder = model_dir
            best = metrics.get("best_checkpoint")
            if metrics.get("kept") == "baseline":  # model/ holds the baseline: the fine-tuned weights are the checkpoint's
                found = next((c for c in ([run_dir / "checkpoints" / Path(best).name, Path(best)] if best else [])
                              if c.is_dir()), None)
                if found is None:
                    raise EvaluationError(f"model/ holds the baseline and the fine-tuned checkpoint {best} is gone: "
                                          "nothing left to translate with the fine-tuned model")
                folder = found
            model, tok = load_pretrained(str(model_dir), src, tgt, local_files_only=True)
            model = _load_model(folder, config, run_dir) if folder != model_dir else _on_device(model)
            cache["finetuned"] = (model, tok)
        return cache["finetuned"]

    def baseline() -> tuple[Any, Any]:
        if "baseline" not in cache:
            bundle = prepare_model(config, tokenizer_dir=run_dir / "tokenizer", progress=False, reuse_tokenizer=True)
            cache["baseline"] = (_on_device(bundle.model), bundle.tokenizer)
        return cache["baseline"]

    def for_scoring(load: Any) -> tuple[Any, Any]:
        # the model of ``load`` converted for eval.engine once, however many sets it translates
        key = f"{load.__name__}:{ev.engine}"
        if key not in cache:
            m, tok = load()
            cache[key] = (engine_model(m, tok, config), tok)
        return cache[key]

    if rescore:
        m, tok = for_scoring(finetuned)
        metrics["finetuned"] = score_model(m, tok, config, test.src, test.tgt, run_dir / "finetuned.hyp.txt",
                                           progress, "fine-tuned: translating the test set")
    general_scores = None
    if general is not None:
        # Reuse what an earlier evaluation of the same general test set left, re-translate the rest.
        old = metrics.get("forgetting") or {}
        same = old.get("source") == ev.general_test and (run_dir / "data" / f"general.{tgt}").is_file()
        if not same:
            for name in ("general.baseline.hyp.txt", "general.finetuned.hyp.txt"):
                (run_dir / name).unlink(missing_ok=True)
            for side in (src, tgt):
                (run_dir / "data" / f"general.{side}").unlink(missing_ok=True)
        general_scores = {"baseline": None, "finetuned": None}
        if same and old.get("baseline") and (run_dir / "general.baseline.hyp.txt").is_file():
            general_scores["baseline"] = old["baseline"]
        elif ev.score_baseline and metrics.get("baseline") is not None:
            general_scores["baseline"] = score_general(*for_scoring(baseline), config, general, run_dir, "baseline", progress)
        if same and not rescore and old.get("finetuned") and (run_dir / "general.finetuned.hyp.txt").is_file():
            general_scores["finetuned"] = old["finetuned"]
        else:
            general_scores["finetuned"] = score_general(*for_scoring(finetuned), config, general, run_dir, "finetuned", progress)
    checkpoints = None
    if ev.score_checkpoints:
        dev = _pairs_from_folder(run_dir, config, "dev")
        checkpoints = score_checkpoints(run_dir, config, finetuned()[1], dev, general, progress)
    history = []
    if (run_dir / "history.json").is_file():
        history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    kept = (metrics.get("selected_checkpoint") or {}).get("checkpoint") or (
        metrics.get("best_checkpoint") if metrics.get("kept") != "baseline" else None)
    extra = evaluate_outputs(run_dir, config, test.src, test.tgt, general_scores=general_scores,
                             checkpoints=checkpoints if checkpoints is not None else metrics.get("checkpoints"),
                             history=history, kept=kept)
    if general is None:
        metrics.pop("forgetting", None)
    metrics.update(extra)
    metrics.pop("verdict", None)
    write_metrics(run_dir, metrics)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    data_report = None
    if (run_dir / "data" / "data_report.json").is_file():
        data_report = json.loads((run_dir / "data" / "data_report.json").read_text(encoding="utf-8"))
    curves = run_dir / "training_curves.png"
    write_report(run_dir, config, metrics, data_report, str(curves) if curves.is_file() else None)
    from .report_html import write_html_report

    write_html_report(run_dir, config, metrics, data_report, str(curves) if curves.is_file() else None)
    if (model_dir / "README.md").is_file():
        name = config.model.name_or_path
        write_model_card(model_dir, config, metrics, name, base_licence(name))
    return metrics


def select_checkpoint(run_dir: str | os.PathLike, checkpoint: Optional[str] = None, epoch: Optional[float] = None,
                      *, progress: bool = False) -> dict:
    """Keep checkpoint ``checkpoint`` (a name such as ``checkpoint-40``) or the one at ``epoch`` in
    ``<run_dir>/model`` (weights and generation config replaced, tokenizer kept; the old folder is
    swapped out only once the new one is complete), then re-evaluate the run with it
    (:func:`evaluate_run` with ``rescore``), so that ``metrics.json`` and the reports describe the
    model ``model/`` now holds. ``metrics.json`` records the choice under ``selected_checkpoint``.
    Returns the new metrics.

    Raises:
        EvaluationError: not a finished run, neither or both of ``checkpoint``/``epoch`` given, or no
            such checkpoint (the message lists those left, with their epochs).
    """
    run_dir = Path(run_dir)
    config, metrics = _run_files(run_dir)
    if (checkpoint is None) == (epoch is None):
        raise EvaluationError("give either --checkpoint NAME or --epoch N (one of them)")
    cks = list_checkpoints(run_dir)
    if not cks:
        raise EvaluationError(f"{run_dir / 'checkpoints'}: no checkpoints left to select from")
    if checkpoint is not None:
        found = [c for c in cks if c["checkpoint"] == Path(str(checkpoint)).name]
    else:
        found = [c for c in cks if c["epoch"] is not None and abs(float(c["epoch"]) - float(epoch)) < 1e-6]
    if not found:
        have = ", ".join(f"{c['checkpoint']} (epoch {c['epoch']})" for c in cks)
        raise EvaluationError(f"no checkpoint {checkpoint if checkpoint is not None else f'at epoch {epoch}'}; "
                              f"left: {have}")
    chosen = found[0]
    model_dir = run_dir / "model"
    tmp, old = run_dir / "model.selecting", run_dir / "model.previous"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    from .model import forced_bos_token_id
    from .translate import generation_settings, set_generation_config

    chosen_model = _load_model(chosen["path"], config, run_dir)
    bos = None
    if not config.data.directions and model_dir.is_dir():  # one target language: its forced BOS token too
        from transformers import AutoTokenizer

        bos = forced_bos_token_id(AutoTokenizer.from_pretrained(str(model_dir)), config.data.tgt_lang)
    # generation_config.json: the run's decoding, as the pipeline saves it (a checkpoint's has max_length 20)
    set_generation_config(chosen_model, generation_settings(config), bos).save_pretrained(tmp)
    if model_dir.is_dir():
        for f in model_dir.iterdir():  # tokenizer files and the model card
            if f.is_file() and not (tmp / f.name).exists():
                shutil.copy2(f, tmp / f.name)
        model_dir.rename(old)
    tmp.rename(model_dir)
    shutil.rmtree(old, ignore_errors=True)
    metrics["selected_checkpoint"] = {"checkpoint": chosen["checkpoint"], "step": chosen["step"],
                                      "epoch": chosen["epoch"], "previously_kept": metrics.get("kept"),
                                      "previous_best_checkpoint": metrics.get("best_checkpoint")}
    metrics["kept"] = "finetuned"
    metrics.pop("verdict", None)
    from .report import write_metrics

    write_metrics(run_dir, metrics)
    log.info("model/ now holds %s (epoch %s); re-evaluating", chosen["checkpoint"], chosen["epoch"])
    return evaluate_run(run_dir, rescore=True, progress=progress)
