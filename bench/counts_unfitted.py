"""Would a cascade help `demos: "auto"` before a task is fitted? Replayed on `bench/counts_http.py` results.

    python bench/counts_unfitted.py bench/results/counts-YYYYmmdd-HHMMSS.json

Before a fit there are no labels to fit thresholds on and no fitted calibration: kNN predictions are then
uncalibrated, which is what the results' `uncalibrated` probabilities at each fixed count are (kNN's stage
prompts are the fixed-count prompts). A label-free cascade would be a fixed chain (a cheap count, then the
default count) and one margin threshold for every task. Its threshold is chosen leaving one dataset out: on
the other datasets, the threshold with the fewest mean tokens whose mean accuracy is within a point of the
default count's; then it is replayed on the dataset left out. Printed against the default count (what
`auto` serves before a fit).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from counts_http import test_items  # noqa: E402
from eval_http import manifest_labels  # noqa: E402

from controller.cascade import Cascade, replay  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--first", type=int, nargs="+", default=[0, 1], help="first-stage counts to try")
    parser.add_argument("--default-k", type=int, default=4)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    records = results["datasets"]
    arguments = results["args"]
    for dataset, record in records.items():
        labels = record.get("labels") or manifest_labels(dataset)
        _, gold = test_items(dataset, int(arguments["n_test"]), int(arguments["seed"]))
        record["gold"] = np.array([labels.index(g) for g in gold])
    names = list(records)
    default = Cascade((args.default_k,), ())
    for first in args.first:
        print(f"\nchain ({first}, {args.default_k}), threshold chosen leaving the dataset out "
              f"(uncalibrated margins, as before a fit)")
        print("| dataset | default k accuracy | tokens | cascade accuracy | tokens | threshold |")
        print("|---|---|---|---|---|---|")
        deltas, savings = [], []
        for held in names:
            others = [n for n in names if n != held]
            base = np.mean([figures(records[n], default)["accuracy"] for n in others])
            best = None
            for t in THRESHOLDS:
                cascade = Cascade((first, args.default_k), (float(t),))
                scored = [figures(records[n], cascade) for n in others]
                accuracy, tokens = np.mean([s["accuracy"] for s in scored]), np.mean([s["tokens"] for s in scored])
                if accuracy >= base - 0.01 and (best is None or tokens < best[1]):
                    best = (float(t), tokens)
            threshold = best[0] if best is not None else 2.0
            mine = figures(records[held], Cascade((first, args.default_k), (threshold,)))
            fixed = figures(records[held], default)
            deltas.append(mine["accuracy"] - fixed["accuracy"])
            savings.append(1 - mine["tokens"] / fixed["tokens"])
            print(f"| {held} | {fixed['accuracy']:.3f} | {fixed['tokens']:.0f} | {mine['accuracy']:.3f} | "
                  f"{mine['tokens']:.0f} | {threshold:.3f} |")
        print(f"mean: accuracy {np.mean(deltas):+.3f}, tokens saved {np.mean(savings):.1%}; worst dataset "
              f"{min(deltas):+.3f}")


if __name__ == "__main__":
    main()
