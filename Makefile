# One-command set-up: `make sweep` (main job) and `make test` (the test suite; what .ci/run calls).
# Both create .venv on first use and install the project into it.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
PRESET ?= tiny
PYTEST_ARGS ?=

.PHONY: setup test sweep clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# With an NVIDIA GPU the default index gives a CUDA build of torch; without one, the pinned CPU
	@# wheel (found locally on our machines; elsewhere set PIP_INDEX_URL/TORCH_INDEX_URL to PyTorch's CPU index).
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing a CUDA build of $(TORCH)"; $(PY) -m pip install -q "$(TORCH)"; \
	else \
		echo "no GPU: installing the CPU build of $(TORCH)"; \
		$(PY) -m pip install -q "$(TORCH)" $${TORCH_INDEX_URL:+--index-url $$TORCH_INDEX_URL}; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

sweep: $(STAMP)
	$(PY) -m jobs.sweep --preset $(PRESET)

clean-venv:
	rm -rf $(VENV)
