"""The sentence embedder's torch threads: one by default, so that it does not fight the engine for the cores."""

from __future__ import annotations

import pytest

from service.embedder import SentenceEmbedder


class _FakeModel:
    def __init__(self, model_dir: str, device: str) -> None:
        self.device = device

    def get_embedding_dimension(self) -> int:
        return 4


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", _FakeModel)


def test_embedder_computes_on_one_torch_thread_unless_told(fake_model: None) -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        SentenceEmbedder(model_dir="unused")
        assert torch.get_num_threads() == 1
        SentenceEmbedder(model_dir="unused", threads=2)
        assert torch.get_num_threads() == 2
        SentenceEmbedder(model_dir="unused", threads=None)  # leaves torch as it is
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_embedder_of_nothing_is_empty(fake_model: None) -> None:
    embedder = SentenceEmbedder(model_dir="unused", threads=None)
    assert embedder.embed([]).shape == (0, 4)
