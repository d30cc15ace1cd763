"""The whole run: data -> model -> baseline score -> fine-tune (green-tracked) -> evaluate -> report.

Every front end (CLI, notebooks, Python API) calls :func:`run`. A run writes one folder
``<runs_dir>/<name>/``::

    config.yaml          the config used
    data/                cleaned splits (one segment per line) and data_report.json
    tokenizer/           the tiny model's SentencePiece tokenizer (tiny models trained from scratch)
    checkpoints/         Trainer checkpoints (resume from here)
    history.json         loss and dev-metric history;  training_curves.png  its plot
    baseline.hyp.txt     baseline test translations;   finetuned.hyp.txt  fine-tuned ones
    green/emissions.csv  CodeCarbon's log
    model/               the kept model + tokenizer + model card (README.md)
    metrics.json         baseline / finetuned / delta / green / significance / verdict / error_analysis / ...
    report.md            the run report;  report.html  the same, self-contained, plots embedded
    segments.tsv         every test segment with both outputs and their sentence chrF++
    general.*.hyp.txt    general-domain translations of the forgetting check (eval.general_test)
    checkpoint_scores.png  per-epoch in-domain vs general-domain chrF++ (eval.score_checkpoints)
    run.log              the log
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any, Sequence

from adaptmllm.config import Config, ConfigError, config_from_dict
from adaptmllm.data.pairs import prepare_data, save_splits
from adaptmllm.data.test_sets import load_general_test
from adaptmllm.evaluation.outputs import evaluate_outputs
from adaptmllm.evaluation.scoring import score_checkpoints, score_general, score_model
from adaptmllm.hardware import is_main_process
from adaptmllm.inference.translate import engine_model, generation_settings
from adaptmllm.io import atomic_write_json, sweep_temp_files
from adaptmllm.metrics.corpus import check_optional_metrics
from adaptmllm.modeling.lora import save_plain_model
from adaptmllm.modeling.model import forced_bos_token_id, resolve_model, set_generation_config
from adaptmllm.reporting.plots import plot_history
from adaptmllm.reporting.summary import build_metrics
from adaptmllm.runs.multilingual import run_multilingual
from adaptmllm.runs.run_folder import (RunResult, check_run_lengths, dev_better, finish_run, log_to_file,
                                       prepare_run_dir, train_summary)
from adaptmllm.training.deepspeed import consolidated_model
from adaptmllm.training.green import GreenTracker
from adaptmllm.training.setup import prepare_model
from adaptmllm.training.train import fine_tune

__all__ = ["run", "run_other_rank"]

log = logging.getLogger("adaptmllm")


def run(config: Config | dict, progress: bool = True, callbacks: Sequence[Any] = ()) -> RunResult:
    """Run the whole pipeline for ``config`` and write the run folder (see the module docstring).

    The baseline (the model before fine-tuning) and the fine-tuned model are scored on the same
    test set with BLEU, chrF++ and TER. The best checkpoint by the dev metric is kept; if
    fine-tuning never beat the baseline on the dev set, the baseline is what ``model/`` holds, and
    the report says so. ``callbacks`` (``transformers.TrainerCallback`` objects) are passed to the
    Trainer, e.g. the notebook's live plot (:class:`adaptmllm.apps.notebook.results.LivePlot`).

    The two are compared with a paired bootstrap test (p-values, 95% CIs) and an error analysis;
    with ``eval.general_test`` both are also scored on a general-domain set (forgetting check), and
    with ``eval.score_checkpoints`` each remaining checkpoint too (see :mod:`adaptmllm.evaluation.scoring`).

    Raises:
        ConfigError, RunFolderError, adaptmllm.data.readers.DataError, adaptmllm.modeling.model.ModelError: bad input,
            each naming the file or field and the fix.
        adaptmllm.metrics.corpus.MetricUnavailable: ``eval.spm_model``/``eval.comet_model`` set but unusable
            (raised before anything is written).
    """
    if isinstance(config, dict):
        config = config_from_dict(config)
    if not isinstance(config, Config):
        raise ConfigError(f"config: expected adaptmllm.Config or a dict, got {type(config).__name__}")
    if config.data.directions:  # several directions in one model (adaptmllm.runs.multilingual)

        return run_multilingual(config, progress, callbacks)
    t_start = time.perf_counter()
    # Load and clean the data before touching the run folder: bad input fails with nothing written.
    prepared = prepare_data(config.data)
    if not is_main_process():  # a multi-GPU run: ranks > 0 only train alongside rank 0, which writes
        return run_other_rank(config, prepared, progress)
    general = load_general_test(config)  # eval.general_test: the forgetting check's set, or None
    check_optional_metrics(config.eval.spm_model, config.eval.comet_model)
    # The model must be loadable before the run folder is touched: a bad path or an unreachable hub
    # model fails fast with nothing written (ModelError names the fix).
    resolve_model(config.model.name_or_path, config.model.local_files_only)
    fresh = not (config.run_dir.is_dir() and any(config.run_dir.iterdir()))
    run_dir = prepare_run_dir(config)
    swept = sweep_temp_files(run_dir)  # left by a run killed between an atomic write and its rename
    handler = log_to_file(run_dir / "run.log")
    try:
        log.info("run %s: %s -> %s", config.name, config.data.src_lang, config.data.tgt_lang)
        if swept:
            log.info("removed %d temporary file(s) left by a killed run: %s", len(swept), ", ".join(map(str, swept)))
        save_splits(prepared, run_dir / "data")
        counts = {k: len(getattr(prepared, k)) for k in ("train", "dev", "test")}
        log.info("data: %s", counts)

        tok_dir = run_dir / "tokenizer"
        bundle = prepare_model(config, prepared.train.src + prepared.train.tgt, tokenizer_dir=tok_dir,
                               progress=progress, reuse_tokenizer=config.train.resume)
        model, tokenizer = bundle.model, bundle.tokenizer
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model: %s (%s parameters)", bundle.description, f"{n_params:,}")
        too_long = check_run_lengths(tokenizer, model, prepared, config, run_dir, fresh)

        test_src, test_ref = prepared.test.src, prepared.test.tgt
        baseline = None
        general_scores = {"baseline": None, "finetuned": None}
        if config.eval.score_baseline:
            scorer = engine_model(model, tokenizer, config)  # eval.engine ctranslate2: converted once, used twice
            baseline = score_model(scorer, tokenizer, config, test_src, test_ref, run_dir / "baseline.hyp.txt",
                                   progress, "baseline: translating the test set")
            log.info("baseline test: BLEU %.2f chrF++ %.2f TER %.2f", baseline["bleu"], baseline["chrf"], baseline["ter"])
            if general is not None:
                general_scores["baseline"] = score_general(scorer, tokenizer, config, general, run_dir, "baseline",
                                                           progress)
            del scorer

        with GreenTracker(config.green, run_dir / "green", f"adaptmllm-{config.name}") as green:
            trainer, result = fine_tune(
                model, tokenizer, config.train, prepared.train.src, prepared.train.tgt, prepared.dev.src,
                prepared.dev.tgt, run_dir / "checkpoints", config.data.tgt_lang,
                config.model.max_source_length, config.model.max_target_length, progress=progress,
                callbacks=callbacks, generation=generation_settings(config))  # dev decoded as the test is
        atomic_write_json(run_dir / "history.json", result.history)
        curves = plot_history(result.history, run_dir / "training_curves.png")
        model = consolidated_model(trainer)  # under ZeRO-3: the gathered weights as a plain model

        kept = "finetuned"
        if result.baseline_dev is not None and not dev_better(result.metric, result.best_metric, result.baseline_dev):
            kept = "baseline"
            log.warning("fine-tuning never beat the baseline on the dev set (%s %.2f vs %.2f): keeping the baseline",
                        result.metric, result.best_metric or float("nan"), result.baseline_dev)

        scorer = engine_model(model, tokenizer, config)
        if general is not None:
            general_scores["finetuned"] = score_general(scorer, tokenizer, config, general, run_dir, "finetuned", progress)
        finetuned = score_model(scorer, tokenizer, config, test_src, test_ref, run_dir / "finetuned.hyp.txt",
                                progress, "fine-tuned: translating the test set")
        del scorer
        log.info("fine-tuned test: BLEU %.2f chrF++ %.2f TER %.2f", finetuned["bleu"], finetuned["chrf"], finetuned["ter"])

        model_dir = run_dir / "model"
        if model_dir.exists():
            shutil.rmtree(model_dir)
        # generation_config.json: the test's decoding and target language, for a plain model.generate(**inputs)
        decoding = generation_settings(config), forced_bos_token_id(tokenizer, config.data.tgt_lang)
        if kept == "baseline":
            base = prepare_model(config, prepared.train.src + prepared.train.tgt, tokenizer_dir=tok_dir,
                                 progress=False, reuse_tokenizer=True)
            save_plain_model(set_generation_config(base.model, *decoding), model_dir)
        else:
            save_plain_model(set_generation_config(model, *decoding), model_dir)  # LoRA merged: a plain checkpoint
        tokenizer.save_pretrained(model_dir)
        del trainer

        # Significance, error analysis, forgetting check and (eval.score_checkpoints) per-checkpoint scores.
        checkpoints = (score_checkpoints(run_dir, config, tokenizer, prepared.dev, general, progress)
                       if config.eval.score_checkpoints else None)
        evaluation = evaluate_outputs(run_dir, config, test_src, test_ref,
                                      general_scores=general_scores if general is not None else None,
                                      checkpoints=checkpoints, history=result.history,
                                      kept=result.best_checkpoint if kept == "finetuned" else None)
        metrics = build_metrics({
            "baseline": baseline, "finetuned": finetuned, "green": green.report,
            "kept": kept,
            "best_checkpoint": result.best_checkpoint,
            "dev": {"metric": result.metric, "baseline": result.baseline_dev, "best": result.best_metric},
            "train": train_summary(result, n_params),
            "data": counts,
            "too_long": too_long,
            "total_runtime_s": round(time.perf_counter() - t_start, 2),
            **evaluation,
        })
        return finish_run(run_dir, config, metrics, prepared.report, curves, model_dir, config, bundle, t_start)
    finally:
        for name in ("adaptmllm", "transformers"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def run_other_rank(config: Any, prepared: Any, progress: bool = False) -> None:
    """What a rank other than 0 does in a multi-GPU run of :func:`adaptmllm.runs.pipeline.run`: load the same
    model, train alongside rank 0 (same data, same Trainer calls: the collectives must match), take
    part in the consolidation, then return None. Rank 0 scores, saves and writes the run folder.

    Raises:
        ConfigError: the model is the tiny model trained from scratch (its vocabulary is trained per
            run, so ranks could disagree); multi-GPU runs need a pretrained model.
    """
    if config.model.name_or_path == "tiny" and config.data.train is not None:
        raise ConfigError("model.name_or_path: multi-GPU runs need a pretrained model (e.g. facebook/nllb-200-3.3B); "
                          "the tiny model trained from scratch is a single-process CPU demo")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="adaptmllm-rank-") as tok_dir:  # rank 0 saves the tokenizer
        bundle = prepare_model(config, prepared.train.src + prepared.train.tgt, tokenizer_dir=tok_dir, progress=False)
    trainer, _ = fine_tune(bundle.model, bundle.tokenizer, config.train, prepared.train.src, prepared.train.tgt,
                           prepared.dev.src, prepared.dev.tgt, config.run_dir / "checkpoints", config.data.tgt_lang,
                           config.model.max_source_length, config.model.max_target_length, progress=False,
                           generation=generation_settings(config))  # the same dev decoding as rank 0
    consolidated_model(trainer)
    return None
