#!/usr/bin/env bash
# Re-measure the README's demo table and verdict: run what `make demo` runs, then copy the run's
# metrics.json (and the command) here. tests/test_docs_numbers.py compares the README with this file,
# so after a change to training, selection or scoring: run this, update the README's numbers from the
# new metrics.json (the test's failure message names each one), and commit both.
#
#   docs/results/demo/regenerate.sh              # uses .venv/bin/adaptmllm (make install), like make demo
#   ADAPTMLLM=adaptmllm docs/results/demo/regenerate.sh   # another adaptmllm on the PATH
set -euo pipefail
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
ADAPTMLLM="${ADAPTMLLM:-.venv/bin/adaptmllm}"
RUNS="${RUNS:-runs}"
cmd=(run --config configs/demo.yaml --overwrite true)            # the Makefile's demo recipe
grep -q "adaptmllm ${cmd[*]}" Makefile || { echo "the Makefile's demo command changed: update $0" >&2; exit 1; }
"$ADAPTMLLM" "${cmd[@]}" --runs_dir "$RUNS" --quiet true
out=docs/results/demo
cp "$RUNS/demo/metrics.json" "$out/metrics.json"
cp "$RUNS/demo/config.yaml" "$out/config.yaml"
printf 'adaptmllm %s\n' "${cmd[*]}" > "$out/command.txt"
echo "wrote $out/metrics.json; now update README.md's demo table and verdict from it (tests/test_docs_numbers.py)"
