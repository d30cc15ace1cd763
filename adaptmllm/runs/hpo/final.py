"""The best trial's model scored on the test set against the baseline into ``<run>/best/`` (kept or retrained,
``hpo.best_model``); the other trials' models removed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import Config, config_to_dict, load_config, save_config
from adaptmllm.data.pairs import save_splits
from adaptmllm.evaluation.scoring import score_model
from adaptmllm.hardware import free_memory
from adaptmllm.inference.translate import generation_settings
from adaptmllm.io import atomic_write_json
from adaptmllm.modeling.model import forced_bos_token_id, load_pretrained, set_generation_config
from adaptmllm.reporting.plots import plot_history
from adaptmllm.reporting.summary import build_metrics
from adaptmllm.runs.hpo.space import suggest, tokenizer_dir
from adaptmllm.runs.hpo.study import RankSync, Timer, study_best
from adaptmllm.runs.pipeline import run
from adaptmllm.runs.run_folder import RunResult, dev_better, finish_run
from adaptmllm.training.green import GreenReport
from adaptmllm.training.setup import prepare_model

__all__ = ["finalize_best", "finalized_best", "remove_other_models"]

log = logging.getLogger("adaptmllm")


# ----------------------------------------------------------------------------- the best model

def remove_other_models(study: Any, hpo_dir: Path, keep_number: Optional[int]) -> None:
    """Delete the models of finished trials other than the best one (running trials are left alone)."""
    from optuna.trial import TrialState

    finished = {t.number for t in study.get_trials(deepcopy=False)
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for folder in hpo_dir.glob("trial-*"):
        try:
            number = int(folder.name.split("-", 1)[1])
        except ValueError:
            continue
        if number in finished:
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            if number != keep_number:
                shutil.rmtree(folder / "model", ignore_errors=True)


def finalize_best(study: Any, config: Config, prepared: Any, progress: bool, timer: Timer,
                  sync: Optional[RankSync] = None, hpo: Optional[dict] = None,
                  hpo_markdown: Optional[str] = None) -> RunResult:
    """Score the best trial's model (kept, or retrained) on the test set against the baseline into ``<run>/best/``.

    Both ways end through :func:`adaptmllm.runs.run_folder.finish_run`, so ``<run>/best`` holds what every run
    folder holds: ``metrics.json`` (significance, error analysis, verdict, and ``hpo`` when given),
    ``report.md`` (with ``hpo_markdown``, the study's HPO section), ``report.html``, ``segments.tsv`` and the
    model card. Returns its :class:`RunResult`."""
    import optuna
    import torch

    number, value = study_best(study)
    best = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    cfg = suggest(optuna.trial.FixedTrial(best.params, number), config)
    hpo_dir, best_dir = config.run_dir / "hpo", config.run_dir / "best"
    trial_model = hpo_dir / f"trial-{number}" / "model"
    here = (trial_model / "config.json").is_file()
    if config.hpo.best_model == "retrain" or not here:
        if not here:
            log.warning("the best trial's model (trial %d, %s) is not on this machine: retraining it with its "
                        "parameters", number, (best.user_attrs.get("result") or {}).get("model_dir", "not kept"))
        final_cfg = dataclasses.replace(cfg, runs_dir=str(config.run_dir), name="best", overwrite=True)
        if sync is not None:  # the other ranks retrain alongside (adaptmllm.runs.pipeline.run on ranks > 0)
            sync.send({"action": "run", "config": config_to_dict(final_cfg)})
        with timer("final"):
            result = run(final_cfg, progress=progress)
            more = {"retrained": True, **({"hpo": hpo} if hpo else {})}
            # the run's evaluation is kept (its metrics hold error_analysis): only metrics.json, reports, card again
            return finish_run(result.run_dir, load_config(result.run_dir / "config.yaml"), {**result.metrics, **more},
                              hpo_markdown=hpo_markdown)
    t0 = time.perf_counter()
    with timer("final"):
        if best_dir.exists():
            shutil.rmtree(best_dir)
        best_dir.mkdir(parents=True)
        save_config(dataclasses.replace(cfg, name="best", runs_dir=str(config.run_dir)), best_dir / "config.yaml")

        save_splits(prepared, best_dir / "data")
        test_src, test_ref = prepared.test.src, prepared.test.tgt
        device = "cuda" if torch.cuda.is_available() else "cpu"
        texts = prepared.train.src + prepared.train.tgt

        def base_bundle() -> Any:
            # the untouched model of the best trial's sizes, over that trial's own vocabulary
            return prepare_model(cfg, texts, tokenizer_dir=tokenizer_dir(cfg), progress=False, reuse_tokenizer=True)

        base = base_bundle()
        base_model, licence = base.base_model, base.licence
        baseline = None
        if cfg.eval.score_baseline:
            baseline = score_model(base.model.to(device), base.tokenizer, cfg, test_src, test_ref,
                                   best_dir / "baseline.hyp.txt", progress, "baseline: translating the test set")
        del base  # one model in memory at a time
        free_memory()
        baseline_dev = study.user_attrs.get("baseline_dev")
        metric = cfg.train.metric_for_best_model
        kept = "finetuned"
        if baseline_dev is not None and not dev_better(metric, value, baseline_dev):
            kept = "baseline"
            log.warning("no trial beat the baseline on the dev set (%s %.2f vs %.2f): keeping the baseline",
                        metric, value, baseline_dev)
        model, tokenizer = load_pretrained(str(trial_model), cfg.data.src_lang, cfg.data.tgt_lang,
                                           local_files_only=True)
        finetuned = score_model(model.to(device), tokenizer, cfg, test_src, test_ref, best_dir / "finetuned.hyp.txt",
                                progress, "fine-tuned: translating the test set")
        n_params = sum(p.numel() for p in model.parameters())
        model_dir = best_dir / "model"
        if kept == "baseline":
            del model
            free_memory()
            model = base_bundle().model
        # generation_config.json: the test's decoding and target language, for a plain model.generate(**inputs)
        set_generation_config(model, generation_settings(cfg), forced_bos_token_id(tokenizer, cfg.data.tgt_lang))
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        del model
        history_src = hpo_dir / f"trial-{number}" / "history.json"
        history = json.loads(history_src.read_text()) if history_src.is_file() else []
        atomic_write_json(best_dir / "history.json", history)
        curves = plot_history(history, best_dir / "training_curves.png")
        green = GreenReport.from_dict(best.user_attrs["green"]).to_dict() if best.user_attrs.get("green") else None
        counts = {k: len(getattr(prepared, k)) for k in ("train", "dev", "test")}
        metrics = build_metrics({
            "baseline": baseline, "finetuned": finetuned, "green": green, "kept": kept,
            "best_checkpoint": str(trial_model),
            "dev": {"metric": metric, "baseline": baseline_dev, "best": value},
            "train": {"global_step": (best.user_attrs.get("result") or {}).get("global_step"),
                      "train_runtime_s": (best.user_attrs.get("result") or {}).get("train_runtime_s"),
                      "resumed_from": None,
                      "n_parameters": n_params},
            "data": counts, "total_runtime_s": round(time.perf_counter() - t0, 2),
        })
        # the one end of every run: significance, error analysis, verdict, report.md/.html, segments.tsv, card
        result = finish_run(best_dir, cfg, {**metrics, "hpo": hpo} if hpo else metrics, prepared.report, curves,
                            model_dir, base_model=base_model, licence=licence, hpo_markdown=hpo_markdown)
    with timer("cleanup"):
        free_memory()
    return result


def finalized_best(config: Config, number: Optional[int], counts: dict) -> Any:
    """The RunResult of ``<run>/best`` when it was written for this very state of the study (same best trial
    and trial counts), else None: rerunning a finished study does not score the test set again."""
    best_dir = config.run_dir / "best"
    try:
        metrics = json.loads((best_dir / "metrics.json").read_text(encoding="utf-8"))
        json.loads((config.run_dir / "hpo" / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    hpo = metrics.get("hpo") or {}
    if number is None or hpo.get("best_trial") != number or hpo.get("counts") != counts:
        return None
    html = best_dir / "report.html"
    return RunResult(best_dir, metrics, best_dir / "model", best_dir / "report.md", html if html.is_file() else None)
