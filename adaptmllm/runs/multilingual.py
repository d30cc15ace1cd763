"""Multilingual fine-tuning: several translation directions in one model, languages the model does
not know, vocabulary extension, replay of general-domain pairs, and a forgetting check on the
directions that were not trained.

``data.directions`` lists the directions (see :class:`adaptmllm.config.DataConfig`). Each direction's
corpus is loaded, cleaned and split by :func:`adaptmllm.data.pairs.prepare_data` exactly as a one-direction
run would (so ``gle_Latn->eng_Latn`` read from the English-Irish corpus gets the English->Irish dev
and test sets reversed), then the directions are mixed (proportional or temperature sampling) with
optional replay pairs. Every training example keeps its own direction: it is tokenized with its
direction's ``src_lang``/``tgt_lang`` and the dev set of each direction is scored with the forced BOS
token of its own target (:func:`adaptmllm.training.train.fine_tune`). Imports nothing heavy at module level.
"""

from __future__ import annotations
import logging
from typing import Any, Sequence

from adaptmllm.config import ConfigError, direction_name
from adaptmllm.data.directions import prepare_directions
from adaptmllm.data.pairs import save_splits
from adaptmllm.data.test_sets import load_forgetting_tests
from adaptmllm.evaluation.outputs import evaluate_outputs
from adaptmllm.evaluation.scoring import forgetting, read_run_lines, score_model
from adaptmllm.inference.translate import engine_model, generation_settings
from adaptmllm.io import atomic_write_json, sweep_temp_files
from adaptmllm.metrics.corpus import check_optional_metrics, macro, write_hypotheses
from adaptmllm.metrics.significance import paired_bootstrap
from adaptmllm.modeling.lora import save_plain_model
from adaptmllm.modeling.model import resolve_model, set_generation_config
from adaptmllm.reporting.plots import plot_history
from adaptmllm.reporting.summary import build_metrics
from adaptmllm.runs.run_folder import dev_better, finish_run, log_to_file, prepare_run_dir, train_summary
from adaptmllm.training.deepspeed import consolidated_model
from adaptmllm.training.green import GreenTracker
from adaptmllm.training.setup import build_model, with_pair
from adaptmllm.training.train import fine_tune

__all__ = []

log = logging.getLogger(__name__)


def run_multilingual(config: Any, progress: bool = True, callbacks: Sequence[Any] = ()) -> Any:
    """The pipeline run (:func:`adaptmllm.runs.pipeline.run`) for several ``data.directions`` in one model.

    Writes the run folder as a one-direction run does, with per-direction files: ``data/<src>-<tgt>/``
    (splits), ``baseline.<src>-<tgt>.hyp.txt`` / ``finetuned.<src>-<tgt>.hyp.txt``, and
    ``forgetting.<src>-<tgt>.{baseline,finetuned}.hyp.txt`` for ``eval.forgetting_tests``.
    ``baseline.hyp.txt``/``finetuned.hyp.txt`` hold all directions' test translations in order
    (the pooled significance test and error analysis read them). ``metrics.json``: ``baseline`` and
    ``finetuned`` are the macro averages over the directions; ``directions`` holds per direction its
    ``baseline``, ``finetuned``, ``delta`` and ``significance`` (paired bootstrap);
    ``forgetting_directions`` the untrained directions' scores with ``drop``/``flagged``.

    Raises:
        ConfigError: eval.general_test with several directions (use eval.forgetting_tests),
            or train.select_direction not among data.directions.
        adaptmllm.data.readers.DataError, adaptmllm.modeling.model.ModelError, RunFolderError: bad input, before training.
    """
    import time

    t_start = time.perf_counter()
    if config.eval.general_test:
        raise ConfigError("eval.general_test: with several data.directions use eval.forgetting_tests "
                          "({src_lang, tgt_lang, test} per direction) instead")
    names = [direction_name(d) for d in config.data.directions]
    sel = config.train.select_direction
    if sel is not None and sel not in names:
        raise ConfigError(f"train.select_direction: {sel} is not one of data.directions ({', '.join(names)})")
    multi = prepare_directions(config.data)
    forget_sets = load_forgetting_tests(config)
    check_optional_metrics(config.eval.spm_model, config.eval.comet_model)

    resolve_model(config.model.name_or_path, config.model.local_files_only)  # before the run folder is touched
    run_dir = prepare_run_dir(config)
    sweep_temp_files(run_dir)  # left by a run killed between an atomic write and its rename
    handler = log_to_file(run_dir / "run.log")
    try:
        log.info("run %s: %s", config.name, ", ".join(names))
        for d in multi.directions:
            save_splits(d.prepared, run_dir / "data" / d.slug)
        tok_dir = run_dir / "tokenizer"
        bundle, tok_report = build_model(config, multi, tok_dir, progress, reuse_tokenizer=config.train.resume,
                                         vocab_dir=run_dir / "tokenizer-extension")
        model, tokenizer = bundle.model, bundle.tokenizer
        data_report = {**multi.report, "tokenizer": tok_report}
        atomic_write_json(run_dir / "data" / "data_report.json", data_report)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model: %s (%s parameters)", bundle.description, f"{n_params:,}")

        def score_all(system: str, mdl: Any) -> tuple[dict, dict]:
            mdl = engine_model(mdl, tokenizer, config)  # eval.engine ctranslate2: converted once for every set
            per, fgt = {}, {}
            for d in multi.directions:
                per[d.name] = score_model(mdl, tokenizer, with_pair(config, d.src_lang, d.tgt_lang),
                                          d.prepared.test.src, d.prepared.test.tgt,
                                          run_dir / f"{system}.{d.slug}.hyp.txt", progress,
                                          f"{system}: translating the {d.name} test set")
                log.info("%s %s test: BLEU %.2f chrF++ %.2f", system, d.name, per[d.name]["bleu"], per[d.name]["chrf"])
            for e, pairs in forget_sets:
                name = direction_name(e)
                fgt[name] = score_model(mdl, tokenizer, with_pair(config, e["src_lang"], e["tgt_lang"]), pairs.src,
                                        pairs.tgt, run_dir / f"forgetting.{e['src_lang']}-{e['tgt_lang']}.{system}.hyp.txt",
                                        progress, f"{system}: translating the {name} forgetting test set")
            return per, fgt

        base_per, base_fgt = score_all("baseline", model) if config.eval.score_baseline else ({}, {})
        dev_src, dev_tgt, dev_dirs = [], [], []
        for k, d in enumerate(multi.directions):
            dev_src += d.prepared.dev.src
            dev_tgt += d.prepared.dev.tgt
            dev_dirs += [k] * len(d.prepared.dev)
        with GreenTracker(config.green, run_dir / "green", f"adaptmllm-{config.name}") as green:
            trainer, result = fine_tune(
                model, tokenizer, config.train, multi.train.src, multi.train.tgt, dev_src, dev_tgt,
                run_dir / "checkpoints", multi.languages[0][1], config.model.max_source_length,
                config.model.max_target_length, progress=progress, callbacks=callbacks,
                languages=multi.languages, train_dirs=multi.train_dirs, dev_dirs=dev_dirs, select_direction=sel,
                generation=generation_settings(config))  # dev decoded as the test is
        atomic_write_json(run_dir / "history.json", result.history)
        curves = plot_history(result.history, run_dir / "training_curves.png")

        model = consolidated_model(trainer)
        kept = "finetuned"
        if result.baseline_dev is not None and not dev_better(result.metric, result.best_metric, result.baseline_dev):
            kept = "baseline"
            log.warning("fine-tuning never beat the baseline on the dev set (%s %.2f vs %.2f): keeping the baseline",
                        result.metric, result.best_metric or float("nan"), result.baseline_dev)
        fine_per, fine_fgt = score_all("finetuned", model)
        model_dir = run_dir / "model"
        if model_dir.exists():
            import shutil

            shutil.rmtree(model_dir)
        # generation_config.json: the test's decoding; no forced BOS token (one target language per direction)
        if kept == "baseline":
            base_bundle, _ = build_model(config, multi, tok_dir, False, reuse_tokenizer=True,
                                         vocab_dir=run_dir / "tokenizer-extension")
            save_plain_model(set_generation_config(base_bundle.model, generation_settings(config)), model_dir)
        else:
            save_plain_model(set_generation_config(model, generation_settings(config)), model_dir)
        tokenizer.save_pretrained(model_dir)
        del trainer

        # Pooled files: all directions' test translations in order (significance + error analysis).
        test_src = [s for d in multi.directions for s in d.prepared.test.src]
        test_ref = [t for d in multi.directions for t in d.prepared.test.tgt]
        for system, per in (("baseline", base_per), ("finetuned", fine_per)):
            if per:
                write_hypotheses(run_dir / f"{system}.hyp.txt",
                                 [h for d in multi.directions
                                  for h in read_run_lines(run_dir / f"{system}.{d.slug}.hyp.txt")])
        evaluation = evaluate_outputs(run_dir, with_pair(config, *multi.languages[0]), test_src, test_ref,
                                      history=result.history)
        ev = config.eval
        metric_names = ["chrf", "bleu", "ter"] + (["spbleu"] if ev.spm_model else [])

        directions = {}
        for d in multi.directions:
            b, f = base_per.get(d.name), fine_per[d.name]
            sig = None
            if b is not None:
                sig = paired_bootstrap(read_run_lines(run_dir / f"baseline.{d.slug}.hyp.txt"),
                                       read_run_lines(run_dir / f"finetuned.{d.slug}.hyp.txt"), d.prepared.test.tgt,
                                       metrics=metric_names, bleu_tokenize=ev.bleu_tokenize, spm_model=ev.spm_model,
                                       n_samples=ev.bootstrap_samples, alpha=ev.significance_level)
            directions[d.name] = {"baseline": b, "finetuned": f, "n_segments": len(d.prepared.test),
                                  "delta": {k: f[k] - b[k] for k in ("bleu", "chrf", "ter")} if b else None,
                                  "significance": sig}
        forgetting_dirs = {}
        for e, pairs in forget_sets:
            name = direction_name(e)
            fr = forgetting({"baseline": base_fgt.get(name), "finetuned": fine_fgt[name]}, config)
            fr["source"] = str(e["test"])
            forgetting_dirs[name] = fr
            if fr["flagged"]:
                log.warning("forgetting in %s: chrF++ fell by %.2f points", name, fr["drop"])
        metrics = build_metrics({
            "baseline": macro(list(base_per.values())) if base_per else None,
            "finetuned": macro(list(fine_per.values())), "green": green.report, "kept": kept,
            "macro_average_over": names,
            "directions": directions,
            "forgetting_directions": forgetting_dirs or None,
            "best_checkpoint": result.best_checkpoint,
            "dev": {"metric": result.metric, "baseline": result.baseline_dev, "best": result.best_metric,
                    "selected_by": sel or "macro average"},
            "train": train_summary(result, n_params),
            "data": multi.report["counts"],
            "tokenizer": tok_report,
            "total_runtime_s": round(time.perf_counter() - t_start, 2),
            **evaluation,
        })
        return finish_run(run_dir, config, metrics, data_report, curves, model_dir,
                          with_pair(config, *multi.languages[0]), bundle, t_start)
    finally:
        for name in ("adaptmllm", "transformers"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()
