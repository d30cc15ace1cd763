#!/usr/bin/env bash
# Re-measure the README's demo table and verdict: run what `make demo` runs, then copy the run's
# metrics.json, config.yaml and command here, and rewrite the README's demo table and example verdict
# from it (python tests/test_docs_numbers.py, which also compares them in the test suite). After a change
# to training, checkpoint selection or scoring: run this and commit docs/results/demo/ and README.md.
#
#   docs/results/demo/regenerate.sh              # uses .venv/bin/adaptmllm (make install), like make demo
#   ADAPTMLLM=adaptmllm PYTHON=python docs/results/demo/regenerate.sh   # another adaptmllm/python on the PATH
set -euo pipefail
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
ADAPTMLLM="${ADAPTMLLM:-.venv/bin/adaptmllm}"
PYTHON="${PYTHON:-.venv/bin/python}"
RUNS="${RUNS:-runs}"
cmd=(run --config configs/demo.yaml --overwrite true)            # the Makefile's demo recipe
grep -q "adaptmllm ${cmd[*]}" Makefile || { echo "the Makefile's demo command changed: update $0" >&2; exit 1; }
before=$(cut -d' ' -f1 /proc/loadavg)
"$ADAPTMLLM" "${cmd[@]}" --runs_dir "$RUNS" --quiet true
after=$(cut -d' ' -f1 /proc/loadavg)
out=docs/results/demo
cp "$RUNS/demo/metrics.json" "$out/metrics.json"
cp "$RUNS/demo/config.yaml" "$out/config.yaml"
printf 'adaptmllm %s\n' "${cmd[*]}" > "$out/command.txt"
printf '%s CPU cores (%s), load average %s at the start and %s at the end\n' "$(nproc)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$before" "$after" > "$out/machine.txt"
"$PYTHON" tests/test_docs_numbers.py   # README's demo table and verdict from the new metrics.json
echo "wrote $out/metrics.json and README.md's demo table; commit both"
