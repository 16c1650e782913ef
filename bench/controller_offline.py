"""Compare meta-controller variants offline on the data of `bench/controller_data.py` (no engine needed).

    python bench/controller_offline.py bench/results/controller-data/*.npz

Each variant is fitted on a file's held-back "train" examples and applied to its "test" items, whose
correctness at every count is known, so a choice of counts is scored exactly: accuracy and mean prompt tokens
without a budget (smallest count expected to be as good as the best) and under budgets (fractions of the best
fixed count's tokens). The token saving is read at the best fixed count's accuracy less one point.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from controller.allocator import allocate, smallest_sufficient  # noqa: E402
from controller.meta import MetaController  # noqa: E402

BUDGET_SHARES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def evaluate(p: np.ndarray, correct: np.ndarray, tokens: np.ndarray, tolerance: float,
             budget: float | None) -> tuple[float, float]:
    if budget is None:
        choice = smallest_sufficient(p, tokens, tolerance)
    elif budget * len(p) < tokens.min(axis=1).sum():
        return float("nan"), float("nan")  # below the zero-shot prompts' cost
    else:
        choice = allocate(p, tokens, int(budget * len(p)))
    rows = np.arange(len(p))
    return float(correct[rows, choice].mean()), float(tokens[rows, choice].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--C", type=float, nargs="+", default=[1.0, 0.1, 0.01])
    parser.add_argument("--embedding-dims", type=int, nargs="+", default=[384, 16, 0],
                        help="embedding components kept as features (0: the neighbourhood features only)")
    parser.add_argument("--tolerance", type=float, nargs="+", default=[0.0, 0.02, 0.05])
    args = parser.parse_args()
    for path in args.files:
        d = np.load(path)
        ks = d["candidate_k"].tolist()
        Xtr, Ytr, Xte, Yte, Tte = (d["train_features"], d["train_correct"], d["test_features"], d["test_correct"],
                                   d["test_prompt_tokens"].astype(np.float64))
        fixed = [(float(Yte[:, j].mean()), float(Tte[:, j].mean())) for j in range(len(ks))]
        best_j = max(range(len(ks)), key=lambda j: (fixed[j][0], -fixed[j][1]))
        best_acc, best_tok = fixed[best_j]
        print(f"\n## {path.stem}: train {len(Xtr)}, test {len(Xte)}")
        print("fixed: " + ", ".join(f"k={k} {a:.3f}@{t:.0f}" for k, (a, t) in zip(ks, fixed, strict=True)))
        print(f"best fixed k={ks[best_j]}: {best_acc:.3f} at {best_tok:.0f} tokens; oracle (cheapest right count): "
              f"{Yte.max(axis=1).mean():.3f}")
        for dims in args.embedding_dims:
            for C in args.C:
                controller = MetaController(candidate_k=ks, C=C, embedding_dims=dims).fit(Xtr, Ytr)
                p = controller.predict_proba(Xte)
                cells = []
                for tol in args.tolerance:
                    acc, tok = evaluate(p, Yte, Tte, tol, None)
                    cells.append(f"tol {tol}: {acc:.3f}@{tok:.0f}")
                curve = [evaluate(p, Yte, Tte, 0.0, share * best_tok) for share in BUDGET_SHARES]
                ok = [(tok, acc) for acc, tok in curve if acc >= best_acc - 0.01]
                saving = f"{1 - min(ok)[0] / best_tok:.0%}" if ok else "none"
                budget_cells = " ".join(f"{s:.0%}:{a:.3f}" for s, (a, _) in zip(BUDGET_SHARES, curve, strict=True))
                print(f"dims {dims:3d} C {C:<5} | " + " | ".join(cells) + f" | budgets {budget_cells} | "
                      f"saving at best-1pt: {saving}")


if __name__ == "__main__":
    main()
