"""Meta-controller training data: what the held-back queries are classified with."""

from controller.planning import PromptBuilder
from controller.pool import LabeledPool
from controller.templates import PromptTemplate
from controller.training import collect
from tests.fakes import FakeEmbedder, FakeScorer

TEMPLATE = PromptTemplate.parse("Input: {text}\nLabel: {label}")
LABELS = ["positive", "negative"]
TEXTS = [f"{w} film number {i}" for i, w in enumerate(["great", "awful", "fun", "boring"] * 5)]


async def test_random_selection_trains_on_a_set_per_held_back_query():
    embedder, scorer = FakeEmbedder(), FakeScorer()
    pool = LabeledPool(ids=[f"e{i}" for i in range(len(TEXTS))], inputs=[{"text": t} for t in TEXTS],
                       labels=[LABELS[i % 2] for i in range(len(TEXTS))], embeddings=embedder.embed(TEXTS))
    builder = PromptBuilder(TEMPLATE, {label: label for label in LABELS}, pool, scorer.tokenize, 512, 1)
    queries = [{"text": f"held {i}"} for i in range(8)]
    vectors = embedder.embed([q["text"] for q in queries])
    gold = [LABELS[i % 2] for i in range(8)]

    async def demo_sets(selection: str) -> set[tuple[int, ...]]:
        scorer.calls.clear()
        await collect(builder, queries, vectors, gold, LABELS, [3], selection, 0, scorer)
        return {tuple(ids[:-4]) for ids in scorer.calls}  # each prompt less its query line

    # Served random selection is one set of the whole pool, which training cannot reproduce: each held-back
    # query gets its own draw, so the controller learns random demonstrations on average.
    assert len(await demo_sets("random")) > 4
    assert len(await demo_sets("knn")) > 1
