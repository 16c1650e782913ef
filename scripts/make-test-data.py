"""Write the test suite's data: label-stratified slices of the shared datasets into tests/data/.

    python scripts/make-test-data.py [--source ../shared/datasets]

Each slice keeps its rows in source order with their 0-based line in the source file (``"line"``), so a test
names the rows it uses by line. Some datasets (MR, CR, SUBJ) are sorted by label, so slices are drawn per
label, in proportion to the split's label distribution (at least a few rows of every label), with a fixed
seed: running this again writes the same files. Rows the tests have always used are kept whatever the draw
(``REQUIRED``). tests/data/README.md lists each slice's source and licence from the datasets' manifest.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = {"train": 300, "test": 200}
MIN_PER_LABEL = 3
# Lines the tests read by position: SST-2's first 40 training rows, its first 6 test rows and every 18th.
REQUIRED = {("sst2", "train"): set(range(40)), ("sst2", "test"): set(range(6)) | set(range(0, 1800, 18))}


def stratified_lines(labels: list[str], n: int, required: set[int], seed: int) -> list[int]:
    """``required`` plus a per-label draw from the other lines, n lines in all (fewer if the split is small)."""
    rng = np.random.default_rng(seed)
    left = n - len(required)
    counts = Counter(labels)
    chosen = set(required)
    for label in sorted(counts):
        quota = max(MIN_PER_LABEL, round(left * counts[label] / len(labels)))
        candidates = [i for i, value in enumerate(labels) if value == label and i not in chosen]
        take = min(quota, len(candidates))
        chosen.update(int(i) for i in rng.choice(candidates, size=take, replace=False))
    return sorted(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data")
    args = parser.parse_args()
    manifest = json.loads((args.source / "MANIFEST.json").read_text())
    summary: dict[str, dict] = {}
    for seed, dataset in enumerate(sorted(manifest)):
        entry = manifest[dataset]
        summary[dataset] = {"source": entry["source"], "license": entry["license"], "labels": entry["labels"],
                            "splits": {}}
        for split, size in SIZES.items():
            path = args.source / dataset / f"{split}.jsonl"
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            lines = stratified_lines([r["label"] for r in rows], size, REQUIRED.get((dataset, split), set()), seed)
            out = args.out / dataset / f"{split}.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("w", encoding="utf-8") as handle:
                for i in lines:
                    handle.write(json.dumps({**rows[i], "line": i}, ensure_ascii=False) + "\n")
            summary[dataset]["splits"][split] = {
                "rows": len(lines), "of": len(rows),
                "label_distribution": dict(sorted(Counter(rows[i]["label"] for i in lines).items()))}
    (args.out / "MANIFEST.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    readme = ["# Test data", "",
              "Label-stratified slices of the ten benchmark datasets the project's benchmarks use (full copies live",
              "outside the repository, in `ICL_DATASETS_DIR`, default `../shared/datasets`). Written by",
              "`python scripts/make-test-data.py`; each row keeps its 0-based `line` in the source split.",
              "Where a source states no licence, the table says so; AG News is for non-commercial research use only.",
              "", "| dataset | train rows | test rows | labels | source | licence |", "|---|---|---|---|---|---|"]
    for dataset, entry in summary.items():
        splits = entry["splits"]
        readme.append(f"| {dataset} | {splits['train']['rows']} of {splits['train']['of']} | "
                      f"{splits['test']['rows']} of {splits['test']['of']} | {', '.join(entry['labels'])} | "
                      f"{entry['source']} | {entry['license']} |")
    (args.out / "README.md").write_text("\n".join(readme) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
