"""Paired bootstrap test of two runs' test outputs on the same test set (run from the repository root):

    python docs/results/loresmt2021-search-joint-2026-11-30/compare_runs.py RUN_A RUN_B OUT.json

RUN_A is the reference system ("baseline" in the JSON), RUN_B the one tested against it ("finetuned");
each is a run folder with finetuned.hyp.txt and data/test.<tgt_lang> (the same references, checked).
Writes adaptmllm.metrics.significance.paired_bootstrap's dict (1,000 resamples, chrF++/BLEU/TER) with
the two folders' names."""

import json
import sys
from pathlib import Path

from adaptmllm.evaluation.human import run_languages
from adaptmllm.evaluation.scoring import read_run_lines
from adaptmllm.metrics.significance import paired_bootstrap


def main(a: str, b: str, out: str) -> None:
    runs = [Path(a), Path(b)]
    refs = [read_run_lines(r / "data" / f"test.{run_languages(r)[1]}") for r in runs]
    if refs[0] != refs[1]:
        sys.exit(f"{a} and {b} were not scored on the same test references")
    result = paired_bootstrap(*(read_run_lines(r / "finetuned.hyp.txt") for r in runs), refs[0])
    result["baseline_run"], result["finetuned_run"] = runs[0].name, runs[1].name
    Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for k, m in result["metrics"].items():
        print(f"{k}: {m['baseline']:.2f} -> {m['finetuned']:.2f} ({m['delta']:+.2f}, 95% CI "
              f"{m['delta_ci'][0]:+.2f}..{m['delta_ci'][1]:+.2f}, p = {m['p_value']:.3f})")


if __name__ == "__main__":
    main(*sys.argv[1:4])
