# Two entry points a new machine needs: `make demo` and `make test`. Both create .venv and install
# eigenloop plus every service under services/ (a new service joins by having a pyproject there).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVICES := $(wildcard services/*/pyproject.toml)
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck contracts bench clean deploy-tools image-tools test-images reliability test-gpu

$(STAMP): pyproject.toml $(SERVICES)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,local,report,kube]" $(foreach s,$(SERVICES),-e $(dir $(s)))
	touch $@

setup: $(STAMP)

demo: setup
	bash scripts/demo.sh $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

contracts: setup
	$(BIN)/python scripts/generate_contracts.py

test: lint typecheck deploy-tools
	$(BIN)/python -m pytest
	$(MAKE) test-images

# Debian tools the deploy tests run: promtool and Prometheus (tests/deploy/test_monitoring.py); for the image
# stage podman, runc (podman's crun cannot run under cgroup v1 hybrid) and debootstrap. Installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends

deploy-tools:
	command -v promtool >/dev/null || { $(SUDO) apt-get update -q && $(APT_INSTALL) prometheus; }

image-tools:
	command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null \
		|| { $(SUDO) apt-get update -q && $(APT_INSTALL) podman runc debootstrap; }

# The slow stage, separate from the unit/integration run: build every torch-free service image from a
# debootstrap base and a wheelhouse made on the host, run each one, check health, drain and the absence of torch.
test-images: setup image-tools
	EIGENLOOP_IMAGE_TESTS=1 $(BIN)/python -m pytest -q tests/deploy/test_images.py

bench: setup
	$(BIN)/python benchmarks/toolenv_overhead.py
	$(BIN)/python benchmarks/domains.py
	$(BIN)/python benchmarks/user_sim_scaling.py
	$(BIN)/python benchmarks/trainer.py
	$(BIN)/python benchmarks/rollout.py
	$(BIN)/python benchmarks/synthesis.py
	$(BIN)/python benchmarks/quickstart_seeds.py
	$(BIN)/python benchmarks/ablations.py  # reuses quickstart_seeds' runs as its full-data rows

# Soak (a few minutes), then every reliability test with its records, rendered as docs/reliability.md.
reliability: setup
	$(BIN)/python benchmarks/soak.py
	EIGENLOOP_RELIABILITY_RECORDS=docs/reliability.json $(BIN)/python -m pytest tests/reliability -q
	$(BIN)/python scripts/reliability_report.py docs/reliability.json benchmarks/results/soak.json > docs/reliability.md

# On a CUDA machine, with its own torch (not the CPU wheel setup installs) and eigenloop importable: the model
# tests again with the inference service and the trainer on the GPU, and the CPU-vs-CUDA comparisons in tests/gpu.
GPU_TESTS := tests/gpu tests/contract/test_inference.py tests/rollout/test_services.py tests/training/test_grpo.py \
	tests/training/test_sft.py
test-gpu:
	EIGENLOOP_TEST_DEVICE=cuda $(PY) -m pytest -q -rs $(GPU_TESTS)

clean:
	rm -rf $(VENV) .eigenloop .pytest_cache .mypy_cache .ruff_cache
