"""The engine arguments and cores the service starts vLLM with (bench/throughput.py starts raw vLLM with the same)."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.engine import compute_cores, engine_arguments


def test_cpu_defaults_cache_prefixes_in_blocks_of_32_and_leave_the_scheduler_limits_to_vllm() -> None:
    arguments = engine_arguments(Path("/models/SmolLM2"), Settings(dtype="float32"), on_cpu=True)
    assert arguments["model"] == "/models/SmolLM2"
    assert arguments["served_model_name"] == ["SmolLM2"]
    assert arguments["dtype"] == "float32"
    assert arguments["enable_prefix_caching"] is True
    assert arguments["enforce_eager"] is True
    assert arguments["block_size"] == 32
    assert "gpu_memory_utilization" not in arguments
    assert "max_num_batched_tokens" not in arguments and "max_num_seqs" not in arguments


def test_scheduler_limits_and_gpu_settings_are_passed_when_set() -> None:
    settings = Settings(dtype="bfloat16", max_num_batched_tokens=4096, max_num_seqs=64, block_size=16)
    arguments = engine_arguments(Path("/models/m"), settings, on_cpu=False)
    assert arguments["max_num_batched_tokens"] == 4096
    assert arguments["max_num_seqs"] == 64
    assert arguments["block_size"] == 16
    assert arguments["enforce_eager"] is False
    assert arguments["gpu_memory_utilization"] == settings.gpu_memory_utilization


def test_the_model_computes_on_every_core_unless_the_first_is_reserved_for_the_service() -> None:
    assert compute_cores([0, 1]) == [0, 1]
    assert compute_cores([0, 1], reserve_first=True) == [1]
    assert compute_cores([2, 3, 4, 5], reserve_first=True) == [3, 4, 5]
    assert compute_cores([7], reserve_first=True) == [7]  # one core: it has to share it
