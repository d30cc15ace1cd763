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
from pathlib import Path
from typing import Any, Optional, Sequence

from .config import Config, ConfigError, config_from_dict, config_to_dict, save_config
from .config import diff_dicts as _diff
from .io import atomic_write_json, sweep_temp_files
from .run_folder import RunFolderError, RunResult, finish_run, mark_run_folder, remove_run_folder

__all__ = ["RunResult", "RunFolderError", "run", "score_model", "prepare_run_dir", "RESUME_MAY_CHANGE"]

log = logging.getLogger("adaptmllm")


RESUME_MAY_CHANGE = ("num_train_epochs", "max_steps")
"""``train.*`` settings a resumed run may change: its length (end a killed run early and score it, or extend it)."""


def prepare_run_dir(config: Config) -> Path:
    """Create (or reopen, on resume) the run folder and write ``config.yaml`` into it.

    The folder gets the marker file of :mod:`adaptmllm.run_folder` (``.adaptmllm-run``): ``overwrite``
    deletes only a folder that is an adaptmllm run.

    On resume, the run's length (:data:`RESUME_MAY_CHANGE`: ``train.num_train_epochs``,
    ``train.max_steps``) may differ from the folder's ``config.yaml``, to end a run early (it then
    finishes, is scored and reported) or extend it; the change is logged, and ``config.yaml`` takes
    the new length. A linear or cosine schedule is then stretched or squeezed from the resumed step
    on; ``train.lr_scheduler: inverse_sqrt`` does not depend on the length.

    Raises:
        RunFolderError: the folder holds another run; pass ``overwrite`` to replace it (the old
            folder is deleted first, never mixed), ``train.resume`` to continue it, or another
            ``name``; or it is resumed with other settings than the run's length.
            Or ``overwrite`` was asked for a folder that is not an adaptmllm run (nothing is deleted).
    """
    run_dir = config.run_dir
    old = run_dir / "config.yaml"
    if run_dir.exists() and any(run_dir.iterdir()):
        if config.train.resume and old.is_file():
            from .config import load_config

            prev = config_to_dict(load_config(old))
            now = config_to_dict(config)
            for d in (prev, now):
                d["train"]["resume"] = False
                d["overwrite"] = False
            length = {k: (prev["train"][k], now["train"][k]) for k in RESUME_MAY_CHANGE
                      if prev["train"][k] != now["train"][k]}
            if length:
                log.warning("train.resume: the run's length changes (%s)%s", ", ".join(
                    f"train.{k} {a} -> {b}" for k, (a, b) in length.items()),
                    "" if config.train.lr_scheduler in ("inverse_sqrt", "constant") else
                    f"; the {config.train.lr_scheduler} learning-rate schedule follows the new length from here on")
                for k in length:
                    prev["train"][k] = now["train"][k]
            if prev != now:
                changed = _diff(prev, now)
                raise RunFolderError(f"{run_dir}: train.resume asks to continue this run, but its config.yaml differs "
                                     f"in {', '.join(changed)}; resume with the same settings, or pick another --name")
        elif config.overwrite:
            remove_run_folder(run_dir)  # only an adaptmllm run folder: anything else is refused
        else:
            raise RunFolderError(f"{run_dir} already holds a run; pass --overwrite true to replace it, "
                                 "--train.resume true to continue it, or --name NAME for a new run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    mark_run_folder(run_dir)
    return run_dir


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("adaptmllm", "transformers"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("adaptmllm").setLevel(logging.INFO)
    return handler


def score_model(model: Any, tokenizer: Any, config: Config, src: list[str], refs: list[str],
                hyp_path: Optional[Path] = None, progress: bool = False, desc: str = "translating") -> dict:
    """Translate ``src`` with the eval settings of ``config`` and score against ``refs``.

    ``model`` is converted for ``eval.engine`` (:func:`adaptmllm.translate.engine_model`) unless it already
    is a CTranslate2 model: a caller scoring one model on several sets converts it once and passes that.

    Returns :func:`adaptmllm.metrics.score`'s dict plus ``seconds`` (generation time). Writes the
    hypotheses one per line to ``hyp_path`` when given.
    """
    from .metrics import score, write_hypotheses
    from .translate import engine_model, eval_kwargs, translate_texts

    t0 = time.perf_counter()
    hyps = translate_texts(engine_model(model, tokenizer, config), tokenizer, src, config.data.src_lang,
                           config.data.tgt_lang, progress=progress, desc=desc, **eval_kwargs(config))
    seconds = time.perf_counter() - t0
    if hyp_path is not None:
        write_hypotheses(hyp_path, hyps)
    return {**score(hyps, refs, config.eval.bleu_tokenize, spm_model=config.eval.spm_model,
                    comet_model=config.eval.comet_model, sources=src), "seconds": round(seconds, 3)}


def _check_lengths(tokenizer: Any, model: Any, prepared: Any, config: Config, run_dir: Path, fresh: bool) -> dict:
    """:func:`adaptmllm.data.check_lengths` for the run: counts of segments longer than the model takes
    (added to ``data/data_report.json``; check_lengths warns in the log); with ``data.too_long: reject`` its
    DataError, after removing the run folder if this run created it (so nothing half-made is left)."""
    from .data import DataError, check_lengths

    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    try:
        out = check_lengths(tokenizer, prepared, config.data, config.model.max_source_length,
                            config.model.max_target_length, limit)
    except DataError:
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    atomic_write_json(run_dir / "data" / "data_report.json", prepared.to_dict())
    return out


def _dev_better(metric: str, a: Optional[float], b: Optional[float]) -> bool:
    """Is dev score ``a`` better than ``b`` (``ter``: lower is better)?"""
    if a is None or b is None:
        return a is not None
    return a < b if metric == "ter" else a > b


def train_summary(result: Any, n_params: int) -> dict:
    """The ``train`` section of ``metrics.json`` from a :class:`adaptmllm.train.FineTuneResult`: global
    step, training time (s), checkpoint resumed from, parameter count, memory plan, auto-batch retries
    and the batch finally used."""
    return {"global_step": result.global_step, "train_runtime_s": round(result.train_runtime_s, 2),
            "resumed_from": result.resumed_from, "n_parameters": n_params,
            "memory_plan": result.memory_plan, "auto_batch": result.auto_batch, "batch": result.batch}


def run(config: Config | dict, progress: bool = True, callbacks: Sequence[Any] = ()) -> RunResult:
    """Run the whole pipeline for ``config`` and write the run folder (see the module docstring).

    The baseline (the model before fine-tuning) and the fine-tuned model are scored on the same
    test set with BLEU, chrF++ and TER. The best checkpoint by the dev metric is kept; if
    fine-tuning never beat the baseline on the dev set, the baseline is what ``model/`` holds, and
    the report says so. ``callbacks`` (``transformers.TrainerCallback`` objects) are passed to the
    Trainer, e.g. the notebook's live plot (:class:`adaptmllm.notebook.LivePlot`).

    The two are compared with a paired bootstrap test (p-values, 95% CIs) and an error analysis;
    with ``eval.general_test`` both are also scored on a general-domain set (forgetting check), and
    with ``eval.score_checkpoints`` each remaining checkpoint too (see :mod:`adaptmllm.evaluation`).

    Raises:
        ConfigError, RunFolderError, adaptmllm.data.DataError, adaptmllm.model.ModelError: bad input,
            each naming the file or field and the fix.
        adaptmllm.metrics.MetricUnavailable: ``eval.spm_model``/``eval.comet_model`` set but unusable
            (raised before anything is written).
    """
    if isinstance(config, dict):
        config = config_from_dict(config)
    if not isinstance(config, Config):
        raise ConfigError(f"config: expected adaptmllm.Config or a dict, got {type(config).__name__}")
    if config.data.directions:  # several directions in one model (adaptmllm.multilingual)
        from .multilingual import run_multilingual

        return run_multilingual(config, progress, callbacks)
    from .data import prepare_data, save_splits
    from .green import GreenTracker
    from .model import prepare_model
    from .report import build_metrics, plot_history
    from .train import fine_tune

    t_start = time.perf_counter()
    # Load and clean the data before touching the run folder: bad input fails with nothing written.
    prepared = prepare_data(config.data)
    from .deepspeed import consolidated_model, is_main_process, run_other_rank
    from .lora import save_plain_model

    if not is_main_process():  # a multi-GPU run: ranks > 0 only train alongside rank 0, which writes
        return run_other_rank(config, prepared, progress)
    from .evaluation import evaluate_outputs, load_general_test, score_checkpoints, score_general
    from .model import forced_bos_token_id, resolve_model
    from .translate import engine_model, generation_settings, set_generation_config
    from .metrics import check_optional_metrics

    general = load_general_test(config)  # eval.general_test: the forgetting check's set, or None
    check_optional_metrics(config.eval.spm_model, config.eval.comet_model)
    # The model must be loadable before the run folder is touched: a bad path or an unreachable hub
    # model fails fast with nothing written (ModelError names the fix).
    resolve_model(config.model.name_or_path, config.model.local_files_only)
    fresh = not (config.run_dir.is_dir() and any(config.run_dir.iterdir()))
    run_dir = prepare_run_dir(config)
    swept = sweep_temp_files(run_dir)  # left by a run killed between an atomic write and its rename
    handler = _log_to_file(run_dir / "run.log")
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
        too_long = _check_lengths(tokenizer, model, prepared, config, run_dir, fresh)

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
        if result.baseline_dev is not None and not _dev_better(result.metric, result.best_metric, result.baseline_dev):
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
