# One-command set-up: `make sweep` (main job) and `make test` (the test suite; what .ci/run calls).
# Both create .venv on first use and install the project into it, every dependency at the exact
# version of requirements.lock (`make lock` regenerates it). torch is pinned here instead: the
# CPU wheel without a GPU, a CUDA build of the same version with one.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
LOCK   := requirements.lock
STAMP  := $(VENV)/.installed
PRESET ?= tiny
PYTEST_ARGS ?=
GPU_CHECK_ARGS ?=

.PHONY: setup test sweep gpu-check lock clean-venv

setup: $(STAMP)

# torch first (the right build for this machine), then the lock, then the project without resolving anything.
define install_into
	$(1)/bin/python -m pip install -q --upgrade "pip==25.3"
	@# With an NVIDIA GPU the default index gives a CUDA build of torch; without one, the pinned CPU
	@# wheel (found locally on our machines; elsewhere set PIP_INDEX_URL/TORCH_INDEX_URL to PyTorch's CPU index).
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing a CUDA build of $(TORCH)"; $(1)/bin/python -m pip install -q "$(TORCH)"; \
	else \
		echo "no GPU: installing the CPU build of $(TORCH)"; \
		$(1)/bin/python -m pip install -q "$(TORCH)" $${TORCH_INDEX_URL:+--index-url $$TORCH_INDEX_URL}; \
	fi
endef

$(STAMP): pyproject.toml $(LOCK) Makefile
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call install_into,$(VENV))
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

sweep: $(STAMP)
	$(PY) -m jobs.sweep --preset $(PRESET)

# Every GPU figure in one call (jobs/gpu_check.py): CUDA tests, short S = 550 R50 training runs in fp32
# and bf16, bench_model and bench_train on CUDA, in under 8 minutes; summary in gpu-check/summary.md.
# A venv made before the GPU was there has the CPU torch: replace it by the CUDA build first.
gpu-check: $(STAMP)
	@$(PY) -c "import sys, torch; sys.exit(torch.version.cuda is None)" || { \
		echo "the venv's torch is a CPU build: installing the CUDA build of $(TORCH)"; \
		$(PY) -m pip uninstall -q -y torch && $(PY) -m pip install -q "$(TORCH)"; }
	$(PY) -m jobs.gpu_check --out gpu-check $(GPU_CHECK_ARGS)

# Resolve pyproject.toml's dependencies (with the test and cluster extras) afresh in a throw-away venv and
# write every installed distribution, transitive ones included, at its exact version.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	$(call install_into,.lock-venv)
	.lock-venv/bin/python -m pip install -q ".[test,cluster]"
	{ echo "# Every dependency of maskaware (with the test and cluster extras) at an exact version: what make setup,"; \
	  echo "# .ci/run and cluster.yaml install. torch is pinned in the Makefile (CPU or CUDA build)."; \
	  echo "# Regenerate with: make lock   (Python 3.11, Linux x86-64)"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -viE '^(torch|maskaware)( @|==)'; } > $(LOCK)
	rm -rf .lock-venv
	@echo "wrote $(LOCK): $$(grep -vc '^#' $(LOCK)) pinned distributions"

clean-venv:
	rm -rf $(VENV)
