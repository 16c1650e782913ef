"""Near-twins: above what embedding cosine are two labeled examples copies of one another?

    python -m bench.near_twins                              # all ten datasets, 1,000 training examples each
    python -m bench.near_twins --datasets cr trec --n 500
    python -m bench.near_twins --table bench/results/near-twins-*.json     # re-print saved results

For each dataset, the first --n training rows after a seeded shuffle (the size a user uploads; all of them
where the split is smaller) are embedded as the service embeds an example (``PromptTemplate.embedding_text``:
the input fields in template order, RTE's premise and hypothesis joined by a newline; the service's
``SentenceEmbedder``, normalised, so a dot product is the cosine; cached under --cache as the in-process
benchmarks cache them, float16 per text). Then:

- each example's nearest-other-example cosine (quantiles 50/90/99 and the maximum);
- per criterion (cosine at or above each --thresholds, exact text equality, and equality of the text lower-cased
  with everything but letters and digits dropped, "normalised text"): the pairs that meet it, the duplicate
  groups (connected components of that graph with two or more members), the share of examples in a group, the
  share of its pairs whose labels differ, and the share of normalised-text pairs it catches; 3 sample pairs just
  above each threshold (the lowest cosines that still meet it);
- the effect on kNN: --held-back random examples against the rest as the pool (as a fit holds back), --draws
  times: how often the nearest / any of the --k nearest pool examples meets the criterion, and the k-NN
  majority-vote accuracy of the held-back examples with every neighbour and with the ones meeting the criterion
  excluded (ties go to the label of the nearest tied neighbour); means over the draws.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from bench.harness.cli import argument_parser
from bench.harness.host import describe_host, host_line
from bench.harness.results import add_out_argument, read_rows, save_results
from bench.harness.tables import cell, print_table

DATASETS = ["sst2", "agnews", "trec", "cr", "mr", "subj", "rte", "poem_sentiment", "tweet_eval_hate",
            "tweet_eval_offensive"]
THRESHOLDS = [0.90, 0.93, 0.95, 0.97, 0.98, 0.99, 0.999]
EXACT, NORMALISED = "exact text", "normalised text"
SAMPLE_CHARS = 100
RECOMMENDED = 0.95  # bench/README.md, "near_twins.py"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from bench.harness.inprocess import CACHE

    parser = argument_parser(__doc__, __spec__.name if __spec__ else "bench.near_twins")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--n", type=int, default=1000, help="training examples per dataset (default 1000)")
    parser.add_argument("--thresholds", nargs="+", type=float, default=THRESHOLDS)
    parser.add_argument("--held-back", type=int, default=110, help="held-back examples per draw (default 110)")
    parser.add_argument("--draws", type=int, default=20, help="random held-back sets, averaged (default 20)")
    parser.add_argument("--k", type=int, default=4, help="neighbours retrieved and voting (default 4)")
    parser.add_argument("--samples", type=int, default=3, help="sample pairs per criterion (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=CACHE, help="embedding cache folder")
    parser.add_argument("--at", type=float, default=RECOMMENDED,
                        help=f"the threshold of the summary table (default {RECOMMENDED:g}, the recommendation)")
    parser.add_argument("--table", nargs="+", type=Path, help="print saved results files instead of running")
    add_out_argument(parser)
    return parser.parse_args(argv)


# --- the pure parts -------------------------------------------------------------------------------------------


def normalised(text: str) -> str:
    """The text lower-cased with everything but letters and digits dropped: case, spacing and punctuation
    variants of one sentence become equal."""
    return re.sub(r"[\W_]+", "", text.lower())


def nearest_other(sim: np.ndarray) -> np.ndarray:
    """Each row's largest similarity to another row (the diagonal left out)."""
    masked = sim.astype(np.float64, copy=True)
    np.fill_diagonal(masked, -np.inf)
    return masked.max(axis=1)


def cosine_links(sim: np.ndarray, threshold: float) -> np.ndarray:
    """The symmetric boolean graph of pairs whose cosine is at or above ``threshold`` (no self-loops)."""
    links = sim >= threshold
    np.fill_diagonal(links, False)
    return links


def equal_links(keys: Sequence[str]) -> np.ndarray:
    """The symmetric boolean graph of pairs with equal keys (no self-loops)."""
    _, codes = np.unique(np.asarray(list(keys), dtype=object).astype(str), return_inverse=True)
    links = codes[:, None] == codes[None, :]
    np.fill_diagonal(links, False)
    return links


def pair_indices(links: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The linked pairs (i < j)."""
    return np.nonzero(np.triu(links, 1))


def groups(links: np.ndarray) -> list[list[int]]:
    """Connected components of the graph with two or more members, each sorted, ordered by their first member."""
    _, component = connected_components(csr_matrix(links), directed=False)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(component.tolist()):
        members.setdefault(c, []).append(i)
    return sorted((m for m in members.values() if len(m) >= 2), key=lambda m: m[0])


def label_disagreement(links: np.ndarray, labels: Sequence[str]) -> float | None:
    """The share of linked pairs whose labels differ (None without pairs)."""
    i, j = pair_indices(links)
    if len(i) == 0:
        return None
    array = np.asarray(labels, dtype=object)
    return float(np.mean(array[i] != array[j]))


def random_pair_disagreement(labels: Sequence[str]) -> float:
    """The chance that two distinct examples drawn at random have different labels (the base rate)."""
    _, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    n = int(counts.sum())
    return 1.0 - float((counts * (counts - 1)).sum()) / (n * (n - 1)) if n > 1 else 0.0


def graph_stats(links: np.ndarray, labels: Sequence[str], reference: np.ndarray | None = None) -> dict[str, Any]:
    """Pairs, duplicate groups, the share of examples in a group, the label disagreement of the pairs, the
    largest group; and, given a ``reference`` graph, the share of its pairs this graph also links."""
    found = groups(links)
    out: dict[str, Any] = {"pairs": int(np.triu(links, 1).sum()), "groups": len(found),
                           "in_groups": sum(map(len, found)) / len(links) if len(links) else 0.0,
                           "largest_group": max(map(len, found), default=0),
                           "label_differs": label_disagreement(links, labels)}
    if reference is not None:
        ref = np.triu(reference, 1)
        out["reference_caught"] = float((ref & links).sum() / ref.sum()) if ref.any() else None
    return out


def band_disagreement(sim: np.ndarray, labels: Sequence[str], edges: Sequence[float]) -> list[dict[str, Any]]:
    """Pairs and their label disagreement per cosine band [edges[i], edges[i+1]), the last band open above."""
    i, j = np.triu_indices(len(sim), 1)
    values = sim[i, j]
    array = np.asarray(labels, dtype=object)
    differs = array[i] != array[j]
    out = []
    for a, b in zip(edges, [*edges[1:], np.inf], strict=True):
        inside = (values >= a) & (values < b)
        out.append({"from": float(a), "to": None if b == np.inf else float(b), "pairs": int(inside.sum()),
                    "label_differs": int(differs[inside].sum())})
    return out


def sample_pairs(links: np.ndarray, sim: np.ndarray, texts: Sequence[str], labels: Sequence[str], count: int,
                 prefer_distinct_text: bool = False) -> list[dict[str, Any]]:
    """``count`` linked pairs with the lowest cosines (those just above a threshold), texts cut to
    ``SAMPLE_CHARS``; ``prefer_distinct_text``: pairs whose texts differ first."""
    i, j = pair_indices(links)
    same = np.array([texts[a] == texts[b] for a, b in zip(i.tolist(), j.tolist(), strict=True)], dtype=bool)
    order = np.lexsort((j, i, sim[i, j], same if prefer_distinct_text else np.zeros(len(i), dtype=bool)))
    return [{"cosine": round(float(sim[i[o], j[o]]), 4), "a": texts[i[o]][:SAMPLE_CHARS],
             "b": texts[j[o]][:SAMPLE_CHARS], "labels": [labels[i[o]], labels[j[o]]]} for o in order[:count]]


def knn_votes(sim: np.ndarray, pool_labels: Sequence[str], k: int, excluded: np.ndarray | None = None) -> list[str]:
    """Each query row's majority label among its ``k`` most similar pool columns, ``excluded`` ones left out;
    a tie goes to the label of the most similar tied neighbour."""
    scores = sim.astype(np.float64, copy=True)
    if excluded is not None:
        scores[excluded] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out = []
    for row, picks in zip(scores, order, strict=True):
        votes: dict[str, int] = {}
        for p in picks.tolist():
            if row[p] > -np.inf:
                votes[pool_labels[p]] = votes.get(pool_labels[p], 0) + 1
        best = max(votes.values(), default=0)
        out.append(next((pool_labels[p] for p in picks.tolist() if votes.get(pool_labels[p]) == best), ""))
    return out


def knn_effect(sim: np.ndarray, links: np.ndarray, labels: Sequence[str], held: np.ndarray,
               k: int) -> dict[str, float]:
    """For the ``held`` rows against the rest as the pool: the share whose nearest / any of ``k`` nearest pool
    examples is linked to them (the same share for a cosine threshold: the nearest is the most similar), the mean
    number of linked ones among the ``k``, the share with any linked pool example, and the k-NN vote accuracy with
    every neighbour and with the linked ones excluded."""
    pool = np.setdiff1d(np.arange(len(sim)), held)
    scores, twins = sim[np.ix_(held, pool)], links[np.ix_(held, pool)]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(twins, order, axis=1)
    gold = [labels[h] for h in held.tolist()]
    pool_labels = [labels[p] for p in pool.tolist()]

    def accuracy(votes: list[str]) -> float:
        return float(np.mean([v == g for v, g in zip(votes, gold, strict=True)]))

    return {"top1_twin": float(top[:, 0].mean()), "topk_twin": float(top.any(axis=1).mean()),
            "topk_twins": float(top.sum(axis=1).mean()), "any_twin": float(twins.any(axis=1).mean()),
            "acc_with": accuracy(knn_votes(scores, pool_labels, k)),
            "acc_without": accuracy(knn_votes(scores, pool_labels, k, excluded=twins))}


def held_back_draws(n: int, held_back: int, draws: int, seed: int) -> list[np.ndarray]:
    """``draws`` random held-back sets of ``held_back`` rows (sorted), seeded."""
    rng = np.random.default_rng(seed)
    size = min(held_back, n - 1)
    return [np.sort(rng.choice(n, size=size, replace=False)) for _ in range(draws)]


def criterion_name(threshold: float | str) -> str:
    return threshold if isinstance(threshold, str) else f"≥{threshold:g}"


def analyse(texts: Sequence[str], labels: Sequence[str], vectors: np.ndarray, thresholds: Sequence[float],
            held_back: int = 110, draws: int = 20, k: int = 4, samples: int = 3, seed: int = 0) -> dict[str, Any]:
    """Everything the benchmark reports for one dataset's embedded examples."""
    sim = vectors @ vectors.T
    nearest = nearest_other(sim)
    norm_links = equal_links([normalised(t) for t in texts])
    criteria: list[tuple[float | str, np.ndarray]] = [(t, cosine_links(sim, t)) for t in sorted(thresholds)]
    criteria += [(EXACT, equal_links(texts)), (NORMALISED, norm_links)]
    sets = held_back_draws(len(texts), held_back, draws, seed)
    rows = []
    for criterion, links in criteria:
        effects = [knn_effect(sim, links, labels, held, k) for held in sets]
        i, j = pair_indices(links)
        cosines = sim[i, j]
        rows.append({"criterion": criterion_name(criterion),
                     "threshold": criterion if isinstance(criterion, float) else None,
                     **graph_stats(links, labels, reference=norm_links),
                     "min_pair_cosine": float(cosines.min()) if len(cosines) else None,
                     "knn": {key: float(np.mean([e[key] for e in effects])) for key in effects[0]},
                     "samples": sample_pairs(links, sim, texts, labels, samples,
                                             prefer_distinct_text=criterion == NORMALISED)})
    return {"n": len(texts),
            "nearest_other": {f"q{q}": float(np.quantile(nearest, q / 100)) for q in (50, 90, 99)}
            | {"max": float(nearest.max())},
            "random_pair_label_differs": random_pair_disagreement(labels),
            "nearest_label_differs": float(np.mean([labels[int(a)] != labels[b] for b, a in
                                                    enumerate(np.argmax(sim - 2 * np.eye(len(sim)), axis=1))])),
            "bands": band_disagreement(sim, labels, sorted(thresholds)),
            "held_back": len(sets[0]), "draws": draws, "k": k, "criteria": rows}


# --- running and printing -------------------------------------------------------------------------------------


def embedded(dataset: str, n: int, seed: int, cache: Path) -> tuple[list[str], list[str], np.ndarray]:
    """The first ``n`` shuffled training rows' embedding texts, labels and vectors, as the service embeds them."""
    from bench.harness.inprocess import Embeddings, task_data

    data = task_data(dataset, n, 0, seed)
    texts = [data.template.embedding_text(data.query(r)) for r in data.pool_rows]
    return texts, [r["label"] for r in data.pool_rows], Embeddings(cache, "compute").get(dataset, texts)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def by_criterion(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["criterion"]: c for c in row["criteria"]}


def print_summary(rows: list[dict[str, Any]], at: float) -> None:
    """One line per dataset at the threshold ``at``: its groups, twins among the held-back examples' neighbours and
    what excluding them does to the k-NN vote."""
    name, k = criterion_name(at), rows[0]["k"]
    if any(name not in by_criterion(r) for r in rows):
        print(f"\n(no summary: {name} is not among the thresholds of these results)")
        return
    table = []
    for r in rows:
        c = by_criterion(r)[name]
        table.append([r["dataset"], r["n"], c["pairs"], c["groups"], pct(c["in_groups"]), pct(c["label_differs"]),
                      pct(c["knn"]["top1_twin"]), pct(c["knn"]["topk_twin"]), cell(c["knn"].get("topk_twins"), ".2f"),
                      cell(c["knn"]["acc_with"]),
                      cell(c["knn"]["acc_without"]), cell(c["knn"]["acc_without"] - c["knn"]["acc_with"], "+.3f")])
    print_table(["dataset", "n", "pairs", "groups", "in groups", "label differs", "top-1 twin", f"top-{k} twin",
                 f"twins in top-{k}", f"{k}-NN acc with twins", "without", "Δ"], table,
                f"Twins at {name}: pairs, duplicate groups, label disagreement; held-back examples "
                f"({rows[0]['held_back']}, mean of {rows[0]['draws']} draws) whose nearest / any of {k} nearest is a "
                f"twin, the mean number of twins among the {k}, and the {k}-NN vote accuracy with and without twins")


def print_tables(rows: list[dict[str, Any]], at: float = RECOMMENDED) -> None:
    names = [c["criterion"] for c in rows[0]["criteria"]]
    print_summary(rows, at)
    print_table(["dataset", "n", "q50", "q90", "q99", "max", "NN label differs", "random pair label differs"],
                [[r["dataset"], r["n"], *(cell(r["nearest_other"][q]) for q in ("q50", "q90", "q99", "max")),
                  pct(r["nearest_label_differs"]), pct(r["random_pair_label_differs"])] for r in rows],
                "Nearest-other-example cosine (quantiles over the examples) and label disagreement of nearest "
                "neighbours and of random pairs")
    for title, show in [
        ("Pairs meeting the criterion", lambda c: str(c["pairs"])),
        ("Duplicate groups (components of ≥ 2)", lambda c: str(c["groups"])),
        ("Share of examples in a duplicate group", lambda c: pct(c["in_groups"])),
        ("Share of pairs whose labels differ", lambda c: pct(c["label_differs"])),
        ("Share of normalised-text pairs caught", lambda c: pct(c.get("reference_caught"))),
        (f"Held-back examples whose top-{rows[0]['k']} includes a twin", lambda c: pct(c["knn"]["topk_twin"])),
        ("Held-back examples whose nearest neighbour is a twin", lambda c: pct(c["knn"]["top1_twin"])),
    ]:
        print_table(["dataset", *names], [[r["dataset"], *(show(by_criterion(r)[c]) for c in names)] for r in rows],
                    title)
    total = {c: [sum(by_criterion(r)[c]["pairs"] for r in rows), 0.0] for c in names}
    for c in names:
        differing = [by_criterion(r)[c]["label_differs"] * by_criterion(r)[c]["pairs"] for r in rows
                     if by_criterion(r)[c]["pairs"]]
        total[c][1] = sum(differing) / total[c][0] if total[c][0] else None
    print_table(["criterion", "pairs", "label differs", "groups", "in groups", "top-k twin", "top-1 twin"],
                [[c, total[c][0], pct(total[c][1]), sum(by_criterion(r)[c]["groups"] for r in rows),
                  pct(np.mean([by_criterion(r)[c]["in_groups"] for r in rows])),
                  pct(np.mean([by_criterion(r)[c]["knn"]["topk_twin"] for r in rows])),
                  pct(np.mean([by_criterion(r)[c]["knn"]["top1_twin"] for r in rows]))] for c in names],
                "All datasets: pairs and their label disagreement pooled; groups summed; shares averaged over "
                "datasets")
    bands = [(b["from"], b["to"]) for b in rows[0]["bands"]]
    print_table(["cosine band", *(r["dataset"] for r in rows), "all"],
                [[f"[{a:g}, {b:g})" if b is not None else f"≥ {a:g}",
                  *(f"{r['bands'][x]['label_differs']}/{r['bands'][x]['pairs']}" for r in rows),
                  pct(sum(r["bands"][x]["label_differs"] for r in rows) / max(1, sum(r["bands"][x]["pairs"]
                                                                                     for r in rows)))]
                 for x, (a, b) in enumerate(bands)],
                "Pairs with differing labels / pairs, per cosine band")
    k = rows[0]["k"]
    print_table(["dataset", "with twins", *(f"without {c}" for c in names)],
                [[r["dataset"], cell(by_criterion(r)[names[0]]["knn"]["acc_with"]),
                  *(cell(by_criterion(r)[c]["knn"]["acc_without"]) for c in names)] for r in rows],
                f"{k}-NN majority-vote accuracy of {rows[0]['held_back']} held-back examples (mean of "
                f"{rows[0]['draws']} draws), every neighbour vs the criterion's twins excluded")
    print(f"\nSample pairs just above each criterion (cosine, labels, texts cut to {SAMPLE_CHARS} characters):")
    for r in rows:
        print(f"\n#### {r['dataset']}")
        for c in r["criteria"]:
            for s in c["samples"]:
                print(f"- {c['criterion']} · {s['cosine']:.4f} · {s['labels'][0]}/{s['labels'][1]} · "
                      f"{s['a']!r} ~ {s['b']!r}")
    print(f"\nhost: {host_line(rows[0]['host'])}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table:
        print_tables(read_rows(args.table), args.at)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for dataset in args.datasets:
        texts, labels, vectors = embedded(dataset, args.n, args.seed, args.cache)
        result = analyse(texts, labels, vectors, args.thresholds, args.held_back, args.draws, args.k, args.samples,
                         args.seed)
        rows.append({"dataset": dataset, "seed": args.seed, **result, "host": describe_host()})
        print(f"{dataset}: {len(texts)} examples, nearest-other cosine median {result['nearest_other']['q50']:.3f}",
              flush=True)
    print_tables(rows, args.at)
    save_results(args.out, "near-twins", rows)


if __name__ == "__main__":
    main()
