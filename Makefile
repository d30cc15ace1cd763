# Fresh machine: `make demo` runs the main job on the embedded default, `make test` runs the tests.
# Both create .venv if missing and install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU build of torch (pip takes it from this machine's disk); on Colab torch is already there.
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo demo-hpo test bench clean dist

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/adaptmllm run --config configs/demo.yaml --overwrite true

# A 3-trial Optuna study on the demo data into runs/demo-hpo/ (hpo/: study, trials.csv, plots; best/: the best model).
demo-hpo: install
	$(VENV)/bin/adaptmllm hpo --config configs/demo-hpo.yaml --overwrite true

test: install
	$(VENV)/bin/lint-imports && $(PY) -m pytest -q tests

# The wheel (dist/adaptmllm-<version>-py3-none-any.whl): copy it to Google Drive and give its path to the
# notebook's set-up cell (ADAPTMLLM_SOURCE) to install this exact code on Colab.
dist: install
	rm -rf dist build
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .
	@ls dist/*.whl

clean:
	rm -rf runs .pytest_cache dist
