"""Would a cascade help `demos: "auto"` before a task is fitted? Replayed on `bench.counts_http` results.

    python -m bench.counts_unfitted bench/results/counts-YYYYmmdd-HHMMSS.json

Before a fit there are no labels to fit thresholds on and no fitted calibration: kNN predictions are then
uncalibrated, which is what the results' `uncalibrated` probabilities at each fixed count are (kNN's stage
prompts are the fixed-count prompts). A label-free cascade would be a fixed chain (a cheap count, then the
default count) and one margin threshold for every task. Its threshold is chosen leaving one dataset out: on
the other datasets, the threshold with the fewest mean tokens whose mean accuracy is within a point of the
default count's; then it is replayed on the dataset left out. Printed against the default count (what
`auto` serves before a fit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.counts_http import test_items
from bench.harness.cli import argument_parser
from bench.harness.datasets import manifest_labels
from bench.harness.results import read_json
from bench.harness.tables import print_table
from controller.cascade import Cascade, replay

THRESHOLDS = np.round(np.linspace(0.0, 1.0, 41), 3)


def dataset_arrays(record: dict) -> tuple[np.ndarray, np.ndarray, list[int]]:
    counts = sorted(int(k) for k in record["fixed"])
    probs = np.array([[item["uncalibrated"] for item in record["fixed"][str(k)]["items"]] for k in counts])
    tokens = np.array([[item["prompt_tokens"] for item in record["fixed"][str(k)]["items"]] for k in counts])
    return probs.transpose(1, 0, 2), tokens.T, counts


def figures(record: dict, cascade: Cascade) -> dict[str, float]:
    probs, tokens, counts = dataset_arrays(record)
    gold = record["gold"]
    played = replay(cascade, probs, tokens, counts)
    return {"accuracy": float(np.mean(played.answers == gold)), "tokens": float(played.tokens.mean())}


def threshold_leaving_out(records: dict[str, dict], held: str, first: int, default_k: int) -> float:
    """On the datasets but ``held``: the threshold with the fewest mean tokens whose mean accuracy is within a
    point of the default count's (2.0, never stopping early, when none is)."""
    others = [n for n in records if n != held]
    base = np.mean([figures(records[n], Cascade((default_k,), ()))["accuracy"] for n in others])
    best = None
    for t in THRESHOLDS:
        scored = [figures(records[n], Cascade((first, default_k), (float(t),))) for n in others]
        accuracy, tokens = np.mean([s["accuracy"] for s in scored]), np.mean([s["tokens"] for s in scored])
        if accuracy >= base - 0.01 and (best is None or tokens < best[1]):
            best = (float(t), tokens)
    return best[0] if best is not None else 2.0


def with_gold(results: dict) -> dict[str, dict]:
    """The results' datasets, each with its test items' gold label indices (the results keep only answers)."""
    records, arguments = results["datasets"], results["args"]
    for name, record in records.items():
        labels = record.get("labels") or manifest_labels(name)
        _, gold = test_items(name, int(arguments["n_test"]), int(arguments["seed"]))
        record["gold"] = np.array([labels.index(g) for g in gold])
    return records


def main() -> None:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("results", type=Path)
    parser.add_argument("--first", type=int, nargs="+", default=[0, 1], help="first-stage counts to try")
    parser.add_argument("--default-k", type=int, default=4)
    args = parser.parse_args()
    records = with_gold(read_json(args.results))
    default = Cascade((args.default_k,), ())
    for first in args.first:
        deltas, savings, rows = [], [], []
        for held in records:
            threshold = threshold_leaving_out(records, held, first, args.default_k)
            mine = figures(records[held], Cascade((first, args.default_k), (threshold,)))
            fixed = figures(records[held], default)
            deltas.append(mine["accuracy"] - fixed["accuracy"])
            savings.append(1 - mine["tokens"] / fixed["tokens"])
            rows.append([held, f"{fixed['accuracy']:.3f}", f"{fixed['tokens']:.0f}", f"{mine['accuracy']:.3f}",
                         f"{mine['tokens']:.0f}", f"{threshold:.3f}"])
        print_table(["dataset", "default k accuracy", "tokens", "cascade accuracy", "tokens", "threshold"], rows,
                    f"chain ({first}, {args.default_k}), threshold chosen leaving the dataset out "
                    "(uncalibrated margins, as before a fit)")
        print(f"mean: accuracy {np.mean(deltas):+.3f}, tokens saved {np.mean(savings):.1%}; worst dataset "
              f"{min(deltas):+.3f}")


if __name__ == "__main__":
    main()
