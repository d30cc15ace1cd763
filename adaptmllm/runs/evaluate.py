"""Re-evaluate a finished run folder (``adaptmllm evaluate``) and pick another checkpoint as the kept model
(``adaptmllm select-checkpoint``); both finish through :func:`adaptmllm.runs.run_folder.finish_run`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import Config, config_from_dict, config_to_dict, load_config
from adaptmllm.data.readers import Pairs
from adaptmllm.data.test_sets import load_general_test
from adaptmllm.evaluation.outputs import evaluate_outputs
from adaptmllm.evaluation.scoring import (EvaluationError, list_checkpoints, read_run_lines, score_checkpoints,
                                          score_general, score_model)
from adaptmllm.hardware import on_device
from adaptmllm.inference.translate import engine_model, generation_settings
from adaptmllm.metrics.corpus import check_optional_metrics
from adaptmllm.modeling.model import forced_bos_token_id, load_pretrained, set_generation_config
from adaptmllm.reporting.summary import write_metrics
from adaptmllm.runs.run_folder import finish_run
from adaptmllm.training.setup import load_checkpoint_model, prepare_model

__all__ = ["evaluate_run", "select_checkpoint"]

log = logging.getLogger("adaptmllm")


def _run_files(run_dir: Path) -> tuple[Config, dict]:
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "metrics.json").is_file():
        raise EvaluationError(f"{run_dir}: no config.yaml and metrics.json; give the folder of a finished run "
                              "(runs/<name>)")
    return load_config(run_dir / "config.yaml"), json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def _pairs_from_folder(run_dir: Path, config: Config, split: str) -> Any:
    d = run_dir / "data"
    return Pairs(read_run_lines(d / f"{split}.{config.data.src_lang}"),
                 read_run_lines(d / f"{split}.{config.data.tgt_lang}"))


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
        adaptmllm.data.readers.DataError, adaptmllm.metrics.corpus.MetricUnavailable: as :func:`load_general_test`
            and :func:`adaptmllm.metrics.corpus.check_optional_metrics`.
    """
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
            model = load_checkpoint_model(folder, config, run_dir) if folder != model_dir else on_device(model)
            cache["finetuned"] = (model, tok)
        return cache["finetuned"]

    def baseline() -> tuple[Any, Any]:
        if "baseline" not in cache:
            bundle = prepare_model(config, tokenizer_dir=run_dir / "tokenizer", progress=False, reuse_tokenizer=True)
            cache["baseline"] = (on_device(bundle.model), bundle.tokenizer)
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
    return finish_run(run_dir, config, metrics).metrics  # the one end of every run: same files, same verdict


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
    chosen_model = load_checkpoint_model(chosen["path"], config, run_dir)
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

    write_metrics(run_dir, metrics)
    log.info("model/ now holds %s (epoch %s); re-evaluating", chosen["checkpoint"], chosen["epoch"])
    return evaluate_run(run_dir, rescore=True, progress=progress)
