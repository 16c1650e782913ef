"""The embedder is part of every task's pool and of its fit's heads: when the service starts with another
embedder than the one that made the stored embeddings, it embeds every stored example again before it serves,
and the fits made with the old embedder stop serving until they are fitted again (which starts by itself)."""

from __future__ import annotations

import logging
import time

from service.records import task_template
from service.state import TextEmbedder
from service.store import Store

logger = logging.getLogger(__name__)

EMBEDDER_KEY = "embedder"
_CHUNK = 512  # examples embedded per call


def adopt_embedder(store: Store, embedder: TextEmbedder) -> int:
    """Make the store's embeddings the embedder's; the examples embedded again (0 when it made them already).
    A store that never recorded its embedder (made before the service recorded it) was made by this one's
    predecessor only if it says so: the first record is taken as the truth."""
    identity = embedder.identity
    recorded = store.setting(EMBEDDER_KEY)
    if recorded == identity:
        return 0
    if recorded is None:
        store.mark_fits_embedder(identity)
        store.put_setting(EMBEDDER_KEY, identity)
        return 0
    began, total = time.perf_counter(), 0
    logger.warning("the examples were embedded by %s, not %s: embedding them again before serving", recorded,
                   identity)
    store.mark_fits_embedder(recorded)  # their heads read the old embeddings: refitted, not served
    for task in store.list_tasks():
        template = task_template(task)
        rows = store.example_inputs(task.id)
        for start in range(0, len(rows), _CHUNK):
            part = rows[start:start + _CHUNK]
            vectors = embedder.embed([template.embedding_text(text) for _, text in part])
            store.replace_embeddings(task.id, {row_id: vector for (row_id, _), vector in zip(part, vectors,
                                                                                             strict=True)})
            total += len(part)
        logger.info("task '%s': %d examples embedded again", task.name, len(rows))
    store.put_setting(EMBEDDER_KEY, identity)
    logger.info("%d examples embedded again by %s in %.1f s", total, identity, time.perf_counter() - began)
    return total
