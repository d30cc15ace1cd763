"""The one end of every run (adaptmllm.runs.run_folder.finish_run): the same files whatever made the folder.

The run folder is made by hand (the demo's test split, translations a word-dropping "model" wrote), the way a
run that ended without evaluating its outputs (HPO's kept best model) left it: finish_run has to add
significance, error analysis, the verdict, both reports and the model card."""
import json

from adaptmllm.config import config_from_dict, save_config
from adaptmllm.data.demo import demo_splits
from adaptmllm.metrics.corpus import score, write_hypotheses
from adaptmllm.runs.run_folder import finish_run
from conftest import tiny_dict

ENDS = ("metrics.json", "report.md", "report.html", "segments.tsv", "model/README.md")


def _drop_words(text: str, every: int) -> str:
    words = text.split()
    return " ".join(w for i, w in enumerate(words) if i % every != every - 1) or words[0]


def _run_folder(tmp_path):
    config = config_from_dict(tiny_dict(tmp_path / "runs", "hand"))
    run_dir = config.run_dir
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "model").mkdir()
    save_config(config, run_dir / "config.yaml")
    src, ref = demo_splits(config.data.src_lang, config.data.tgt_lang, 10, seed=1)["test"]
    (run_dir / "data" / f"test.{config.data.src_lang}").write_text("\n".join(src) + "\n", encoding="utf-8")
    (run_dir / "data" / f"test.{config.data.tgt_lang}").write_text("\n".join(ref) + "\n", encoding="utf-8")
    base = [_drop_words(r, 2) for r in ref]  # the baseline drops every second word,
    fine = [_drop_words(r, 5) for r in ref]  # the fine-tuned model every fifth
    write_hypotheses(run_dir / "baseline.hyp.txt", base)
    write_hypotheses(run_dir / "finetuned.hyp.txt", fine)
    metrics = {"baseline": score(base, ref), "finetuned": score(fine, ref), "green": None, "kept": "finetuned"}
    return config, run_dir, metrics, len(ref)


def test_finish_run_writes_every_end_file_with_significance_and_verdict(tmp_path):
    config, run_dir, metrics, n_test = _run_folder(tmp_path)
    result = finish_run(run_dir, config, metrics, extra_markdown="## Extra section\n")
    for name in ENDS:
        assert (run_dir / name).is_file(), name
    written = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert written == result.metrics
    assert written["significance"]["n_segments"] == n_test
    chrf = written["significance"]["metrics"]["chrf"]
    assert chrf["delta"] > 0 and chrf["p_value"] < 0.05 and chrf["better"] == "finetuned"
    assert written["verdict"]["outcome"] == "improved"
    assert sum(b["n"] for b in written["error_analysis"]["length_buckets"]) == n_test
    assert result.report.read_text(encoding="utf-8").rstrip().endswith("## Extra section")
    assert "Significance" in result.html.read_text(encoding="utf-8")
    assert config.data.tgt_lang in (run_dir / "model" / "README.md").read_text(encoding="utf-8")


def test_finish_run_keeps_an_evaluation_it_is_given(tmp_path):
    config, run_dir, metrics, _ = _run_folder(tmp_path)
    given = {"significance": None, "error_analysis": {"n": 0, "length_buckets": []}}
    finish_run(run_dir, config, {**metrics, **given})
    written = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert written["significance"] is None and written["error_analysis"] == given["error_analysis"]
    assert not (run_dir / "segments.tsv").exists()  # not recomputed
    assert written["verdict"]["outcome"] == "improved"  # without a test: the older rule, chrF++ first
