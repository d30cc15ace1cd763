"""Paired bootstrap significance (sacrebleu's PairedTest) and the verdict built on it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adaptmllm.metrics.significance import bootstrap_indices, resampled_scores, paired_bootstrap

# Hand-made systems: 60 references; "good" gets most of them right, "bad" mangles every segment.
WORDS = ("nurse doctor patient vaccine mask hospital virus clinic medicine fever cough test ward dose "
         "cat dog farmer teacher child woman bird horse friend house river bread book apple garden").split()


def _refs(n: int = 60) -> list[str]:
    rng = np.random.default_rng(7)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 12)))) + " ." for _ in range(n)]


REFS = _refs()
GOOD = [r if i % 6 else r.replace(" .", " today .") for i, r in enumerate(REFS)]  # 50 exact, 10 close
BAD = [" ".join(r.split()[::-1][:3]) for r in REFS]  # three words, reversed


def test_identical_systems_p_one():
    r = paired_bootstrap(BAD, BAD, REFS)
    assert set(r["metrics"]) == {"chrf", "bleu", "ter"}
    for m in r["metrics"].values():
        assert m["p_value"] == 1.0 and m["delta"] == 0.0 and m["delta_ci"] == [0.0, 0.0]
        assert m["significant"] is False and m["better"] is None
        assert "bs:1000" in m["signature"] and "seed:12345" in m["signature"]


def test_clearly_better_and_worse():
    r = paired_bootstrap(BAD, GOOD, REFS)
    assert r["n_samples"] == 1000 and r["n_segments"] == len(REFS) and r["alpha"] == 0.05
    chrf, ter = r["metrics"]["chrf"], r["metrics"]["ter"]
    assert chrf["p_value"] < 0.05 and chrf["significant"] and chrf["better"] == "finetuned"
    assert chrf["delta"] > 30 and 0 < chrf["delta_ci"][0] <= chrf["delta"] <= chrf["delta_ci"][1]
    assert ter["delta"] < 0 and ter["better"] == "finetuned"  # TER: lower is better
    worse = paired_bootstrap(GOOD, BAD, REFS)["metrics"]
    assert worse["chrf"]["better"] == "baseline" and worse["ter"]["better"] == "baseline"
    assert worse["chrf"]["delta_ci"][1] < 0


def test_small_difference_not_significant():
    fine = list(BAD)
    fine[0] = GOOD[0]  # one segment of sixty better
    c = paired_bootstrap(BAD, fine, REFS, metrics=["chrf"])["metrics"]["chrf"]
    assert c["delta"] > 0 and c["p_value"] > 0.05 and not c["significant"] and c["better"] is None
    assert c["delta_ci"][0] <= 0 <= c["delta_ci"][1]


def test_delta_ci_uses_sacrebleus_resamples():
    """Our difference interval is computed on the very resamples sacrebleu's test draws."""
    from sacrebleu.metrics import CHRF
    from sacrebleu.significance import PairedTest

    _, res = PairedTest([("b", BAD), ("f", GOOD)], {"chrf": CHRF(word_order=2)}, [REFS], test_type="bs",
                        n_samples=1000)()
    b_res, f_res = res["chrF2++"]
    idxs = bootstrap_indices(len(REFS), 1000, 12345)
    _, b_samples = resampled_scores(CHRF(word_order=2), BAD, REFS, idxs)
    _, f_samples = resampled_scores(CHRF(word_order=2), GOOD, REFS, idxs)
    assert f_samples.mean() == pytest.approx(f_res.mean, abs=1e-4)
    assert b_samples.mean() == pytest.approx(b_res.mean, abs=1e-4)


def test_equal_to_sacrebleu_cli_paired_bs(tmp_path):
    ref, base, fine = tmp_path / "ref.txt", tmp_path / "base.txt", tmp_path / "fine.txt"
    for p, lines in ((ref, REFS), (base, BAD), (fine, GOOD)):
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cli = Path(sys.executable).with_name("sacrebleu")
    # (-f json crashes in sacrebleu 2.6 on numpy float32 values: read the text table)
    out = subprocess.run([str(cli), str(ref), "-i", str(base), str(fine), "--paired-bs", "-m", "bleu", "chrf", "ter",
                          "--chrf-word-order", "2", "-w", "4", "-f", "text"], check=True, capture_output=True,
                         text=True).stdout
    cells = re.findall(r"(\d+\.\d+) \((\d+\.\d+) ± (\d+\.\d+)\)", out)
    pvals = [float(p) for p in re.findall(r"p = (\d+\.\d+)", out)]
    assert len(cells) == 6 and len(pvals) == 3
    ours = paired_bootstrap(BAD, GOOD, REFS, metrics=["bleu", "chrf", "ter"])["metrics"]
    for j, name in enumerate(("bleu", "chrf", "ter")):
        b, f = [tuple(map(float, c)) for c in (cells[j], cells[3 + j])]
        m = ours[name]
        assert (m["baseline"], m["baseline_mean"], m["baseline_ci"]) == pytest.approx(b, abs=1e-4)
        assert (m["finetuned"], m["finetuned_mean"], m["finetuned_ci"]) == pytest.approx(f, abs=1e-4)
        assert m["p_value"] == pytest.approx(pvals[j], abs=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(baseline=["a"], finetuned=["a", "b"], references=["a"]), "1 baseline, 2 fine-tuned, 1 references"),
    (dict(baseline=[], finetuned=[], references=[]), "empty"),
    (dict(baseline=["a"], finetuned=["a"], references=["a"], n_samples=10), "at least 100"),
    (dict(baseline=["a"], finetuned=["a"], references=["a"], alpha=1.5), r"\(0, 1\)"),
    (dict(baseline=["a"], finetuned=["a"], references=["a"], metrics=["meteor"]), "unknown metric"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(**kwargs)


# ----------------------------------------------------------------------------- verdict

SIGS = {"bleu": "nrefs:1|tok:13a", "chrf": "nrefs:1|nw:2", "ter": "nrefs:1|tok:tercom"}


def _scores(bleu, chrf, ter):
    return {"bleu": bleu, "chrf": chrf, "ter": ter, "signatures": dict(SIGS), "n_segments": 60}


def _sig(d_chrf, p_chrf, ci=None, d_bleu=1.0, p_bleu=0.01, d_ter=-1.0, p_ter=0.02):
    def one(d, p, ci_):
        significant = p < 0.05
        better = None if not significant or d == 0 else ("finetuned" if d > 0 else "baseline")
        return {"baseline": 40.0, "finetuned": 40.0 + d, "delta": d, "delta_ci": ci_ or [d - 1, d + 1],
                "p_value": p, "significant": significant, "better": better}
    return {"test": "paired bootstrap", "n_samples": 1000, "seed": 12345, "alpha": 0.05, "n_segments": 60,
            "metrics": {"chrf": one(d_chrf, p_chrf, ci), "bleu": one(d_bleu, p_bleu, None),
                        "ter": one(d_ter, p_ter, None)}}


def _m(d_chrf, p_chrf, **kw):
    extra = {k: kw.pop(k) for k in ("kept", "forgetting", "selected_checkpoint") if k in kw}
    return {"baseline": _scores(20, 40, 60), "finetuned": _scores(21, 40 + d_chrf, 59),
            "significance": _sig(d_chrf, p_chrf, **kw), **extra}


@pytest.mark.parametrize("metrics, outcome, words", [
    (_m(3.2, 0.0009, ci=[1.9, 4.4]), "improved",
     ["Fine-tuning improved chrF++ by 3.2 points (95% CI +1.9 to +4.4, p < 0.001)", "BLEU +1.0 (p = 0.010)",
      "TER -1.0 (p = 0.020, lower is better)"]),
    (_m(0.4, 0.31, ci=[-0.5, 1.2]), "unchanged",
     ["did not significantly change chrF++ (+0.4 points, 95% CI -0.5 to +1.2, p = 0.310)"]),
    (_m(-2.5, 0.004, ci=[-3.9, -1.1]), "worse", ["made chrF++ worse by 2.5 points (95% CI -3.9 to -1.1, p = 0.004)"]),
    (_m(0.01, 0.01), "unchanged", ["did not significantly change"]),  # significant but rounds to 0.0
    # model/ holds the baseline (fine-tuning never beat it on dev): the verdict opens with that
    (_m(-2.5, 0.004, kept="baseline"), "worse", ["model/ holds the baseline, unchanged: fine-tuning never beat it on "
                                                 "the dev set. On the test set the discarded fine-tuned checkpoint was "
                                                 "worse too, chrF++ 2.5 points lower"]),
    (_m(3.2, 0.001, kept="baseline"), "improved", ["model/ holds the baseline, unchanged: fine-tuning never beat it "
                                                   "on the dev set. On the test set the discarded fine-tuned checkpoint "
                                                   "would have improved chrF++ by 3.2 points"]),
    (_m(-2.5, 0.004, kept="finetuned"), "worse", ["model/ holds the fine-tuned model because it beat the baseline "
                                                  "on the dev set"]),
    (_m(3.2, 0.001, forgetting={"flagged": True, "drop": 4.24, "threshold": 1.0}), "improved",
     ["Warning: on the general-domain test set chrF++ fell by 4.2 points (more than the 1-point threshold)"]),
    (_m(3.2, 0.001, selected_checkpoint={"checkpoint": "checkpoint-40", "epoch": 2.0}), "improved",
     ["model/ holds checkpoint-40 (epoch 2), selected by hand"]),
])
def test_verdict_with_significance(metrics, outcome, words):
    from adaptmllm.reporting.summary import verdict, verdict_info

    info = verdict_info(metrics)
    assert info["outcome"] == outcome and info["metric"] == "chrf"
    for w in words:
        assert w in info["text"], info["text"]
    assert verdict(metrics) == info["text"]


def test_verdict_info_without_significance_and_without_baseline():
    from adaptmllm.reporting.summary import verdict_info

    legacy = verdict_info({"baseline": _scores(20, 45, 70), "finetuned": _scores(32.3, 55.1, 60)})
    assert legacy["outcome"] == "improved" and legacy["significant"] is None and "+12.3" in legacy["text"]
    alone = verdict_info({"baseline": None, "finetuned": _scores(20, 45, 70)})
    assert alone["outcome"] == "not_compared" and "no comparison" in alone["text"]
    # the older rule no longer claims the baseline is kept when model/ holds the fine-tuned model
    worse = verdict_info({"baseline": _scores(20, 45, 70), "finetuned": _scores(19, 44, 71), "kept": "finetuned"})
    assert worse["outcome"] == "worse" and "baseline is kept" not in worse["text"]


def test_metrics_json_has_verdict_and_significance(tmp_path):
    import json

    from adaptmllm.reporting.summary import write_metrics

    m = json.loads(write_metrics(tmp_path, _m(3.2, 0.001)).read_text())
    assert m["verdict"]["outcome"] == "improved" and m["verdict"]["p_value"] == 0.001
    assert m["significance"]["metrics"]["chrf"]["delta"] == 3.2
