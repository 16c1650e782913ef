"""What a user could build in ten lines: the service's retrieval embeddings and a logistic regression, on the
default-against-fixed benchmark's own pools and test items, at no model tokens.

    python -m bench.embedding_baseline bench/results/default-vs-fixed-YYYYmmdd-HHMMSS.json
    python -m bench.embedding_baseline RESULTS.json --embeddings cache-only     # from .benchcache/ only

For every dataset of a `bench/default_vs_fixed.py` results file, the same `n_train` pool rows and `n_test` test
items (the same shuffles, checked against the file's gold labels) are embedded with the service's
all-MiniLM-L6-v2 (cached in .benchcache/), and two linear classifiers are fitted on the pool:

- `linear_cv`: scikit-learn's `LogisticRegressionCV` with its defaults (ten values of C, five folds): the plain
  baseline a user would write;
- `head`: the service's embedding head (`controller.heads`: balanced class weights, C = 1), with its
  cross-fitted estimate on the pool (near-twin groups kept in one fold) beside its test figure.

Each is compared on the same test items with the file's default request and its best fixed count (paired 95%
bootstrap intervals of the macro-F1 difference). Results go to bench/results/embedding-baseline-*.json.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV

from bench.default_vs_fixed import DEFAULT, DRAWS, answers, best_count, fixed_counts
from bench.harness.cli import argument_parser
from bench.harness.figures import indices
from bench.harness.inprocess import CACHE, Embeddings, TaskData, task_data
from bench.harness.results import add_out_argument, read_json, save_results
from bench.harness.tables import cell, print_table
from controller.heads import EmbeddingHead, cross_fitted
from controller.metrics import bootstrap_rows, macro_f1, paired_bootstrap
from controller.near_twins import cosine_for, twin_components


def linear_cv(pool: np.ndarray, gold: np.ndarray) -> LogisticRegressionCV:
    """The plain baseline: ``LogisticRegressionCV`` with its defaults, quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.9's note on LogisticRegressionCV's attributes
        return LogisticRegressionCV(max_iter=2000).fit(pool, gold)


def embedded(name: str, n_train: int, n_test: int, gold: list[str], embeddings: Embeddings,
             seed: int) -> tuple[TaskData, np.ndarray, np.ndarray]:
    """A default-against-fixed run's pool and test items (checked against its ``gold`` labels), and their
    embeddings: (data, pool vectors, test vectors)."""
    data = task_data(name, n_train, n_test, seed)
    if [row["label"] for row in data.test_rows] != gold:
        raise SystemExit(f"{name}: the test items differ from the results file's (another seed or split?)")
    rows = data.pool_rows + data.test_rows
    vectors = embeddings.get(name, [data.template.embedding_text(data.query(r)) for r in rows])
    return data, vectors[:len(data.pool_rows)], vectors[len(data.pool_rows):]


def classifiers(pool: np.ndarray, gold: np.ndarray, test: np.ndarray, n_labels: int,
                inputs: list[dict[str, str]], fields: tuple[str, ...], seed: int) -> dict[str, Any]:
    """Both classifiers' test answers, and the head's cross-fitted estimate on the pool."""
    plain = linear_cv(pool, gold)
    head = EmbeddingHead.fit(pool, gold, n_labels)
    groups, _ = twin_components(pool, inputs, cosine_for(fields))
    estimate = macro_f1(gold, cross_fitted(pool, gold, n_labels, groups, seed).argmax(axis=1), n_labels)
    return {"linear_cv": plain.classes_[plain.predict_proba(test).argmax(axis=1)],
            "head": head.predict_proba(test).argmax(axis=1), "head_estimate": estimate,
            "linear_cv_C": float(plain.C_[0])}


def baseline_answers(name: str, n_train: int, n_test: int, labels: list[str], embeddings: Embeddings,
                     seed: int, gold: list[str]) -> dict[str, Any]:
    """The plain baseline's test answers (label names) on a default-against-fixed run's pool and items (checked
    against their ``gold`` labels): all-MiniLM-L6-v2 embeddings and ``LogisticRegressionCV`` with its defaults."""
    data, pool, test = embedded(name, n_train, n_test, gold, embeddings, seed)
    plain = linear_cv(pool, indices([r["label"] for r in data.pool_rows], labels))
    return {"labels": [labels[int(i)] for i in plain.classes_[plain.predict_proba(test).argmax(axis=1)]],
            "C": float(plain.C_[0])}


def measure(name: str, record: dict[str, Any], embeddings: Embeddings, seed: int) -> dict[str, Any]:
    data, pool, test = embedded(name, record["n_train"], record["n_test"], record["gold"], embeddings, seed)
    labels = record["labels"]
    gold_pool = indices([r["label"] for r in data.pool_rows], labels)
    found = classifiers(pool, gold_pool, test, len(labels), [data.query(r) for r in data.pool_rows],
                        data.template.fields, seed)
    gold = indices(record["gold"], labels)
    runs = record["runs"]
    fixed = fixed_counts(runs)
    best = best_count(fixed)
    draws = bootstrap_rows(len(gold), DRAWS, np.random.default_rng(seed))
    out: dict[str, Any] = {"n_train": record["n_train"], "n_test": len(gold), "best_k": best,
                           "best_macro_f1": fixed[best]["macro_f1"],
                           "default_macro_f1": runs[DEFAULT]["macro_f1"] if DEFAULT in runs else None,
                           "head_estimate": found["head_estimate"], "linear_cv_C": found["linear_cv_C"]}
    for name_ in ("linear_cv", "head"):
        mine = np.asarray(found[name_])
        out[f"{name_}_macro_f1"] = macro_f1(gold, mine, len(labels))
        out[f"{name_}_vs_best"] = paired_bootstrap(gold, mine, answers(fixed[best], labels), len(labels),
                                                   draws).as_dict()
        if DEFAULT in runs:
            out[f"{name_}_vs_default"] = paired_bootstrap(gold, mine, answers(runs[DEFAULT], labels), len(labels),
                                                          draws).as_dict()
    return out


def _diff(value: dict[str, float] | None) -> str:
    return "-" if value is None else f"{value['point']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}]"


def print_tables(doc: dict[str, Any]) -> None:
    rows = []
    for name, s in doc["datasets"].items():
        rows.append([name, f"{cell(s['default_macro_f1'])}", f"{cell(s['best_macro_f1'])} (k={s['best_k']})",
                     cell(s["linear_cv_macro_f1"]), cell(s["head_macro_f1"]), cell(s["head_estimate"]),
                     _diff(s.get("head_vs_default")), _diff(s["head_vs_best"])])
    means = {key: float(np.mean([s[key] for s in doc["datasets"].values() if s.get(key) is not None]))
             for key in ("default_macro_f1", "best_macro_f1", "linear_cv_macro_f1", "head_macro_f1", "head_estimate")}
    rows.append(["**mean**", *(cell(means[k]) for k in ("default_macro_f1", "best_macro_f1", "linear_cv_macro_f1",
                                                         "head_macro_f1", "head_estimate")), "", ""])
    print_table(["dataset", "default", "best fixed", "LogisticRegressionCV", "head", "head, cross-fitted on pool",
                 "head − default", "head − best fixed"], rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name if __spec__ else "bench.embedding_baseline")
    parser.add_argument("results", type=Path, help="a bench/default_vs_fixed.py results file")
    parser.add_argument("--cache", type=Path, default=CACHE, help="embedding cache folder")
    parser.add_argument("--embeddings", choices=["compute", "cache-only"], default="compute")
    add_out_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    source = read_json(args.results)
    seed = int(source["args"].get("seed", 0))
    embeddings = Embeddings(args.cache, args.embeddings)
    doc: dict[str, Any] = {"benchmark": "embedding_baseline", "source": str(args.results), "seed": seed,
                           "datasets": {}}
    for name, record in source["datasets"].items():
        if "runs" not in record or not fixed_counts(record["runs"]):
            continue
        doc["datasets"][name] = measure(name, record, embeddings, seed)
        print(name, {k: v for k, v in doc["datasets"][name].items() if not isinstance(v, dict)}, flush=True)
    print_tables(doc)
    save_results(args.out, "embedding-baseline", doc)


if __name__ == "__main__":
    main()
