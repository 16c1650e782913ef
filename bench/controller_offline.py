"""Accuracy against prompt tokens, fixed counts versus the meta-controller, on the data of
`python -m bench.controller_data`. No engine is needed: the model's answer at every count is known for
every test item, so any choice of counts is scored exactly.

    python -m bench.controller_offline bench/results/controller-data/{trec,sst2,cr,subj}-SmolLM2-135M-Instruct.npz
    # the same controllers (trained on SmolLM2's answers) choosing counts for another model's test answers:
    python -m bench.controller_offline bench/results/controller-data/*-SmolLM2-135M-Instruct.npz \\
        --apply-to gemma-3-270m-q4_k_m
    # hyperparameter grid (embedding components, C, tolerance):
    python -m bench.controller_offline FILES --grid

The controller (the service's defaults) is fitted on a file's held-back "train" examples, as the service's
training job fits it, and chooses counts for the "test" items: without a budget, and under budgets set as
fractions of the best fixed count's tokens. Prints a Markdown table, writes it as JSON with a PNG of the
curves under --out, and states the token saving at the best fixed count's accuracy less one point.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.results import add_out_argument, results_path, write_json
from bench.harness.tables import print_table
from controller.meta import MetaController

BUDGET_SHARES = (0.25, 0.5, 0.75, 1.0)


def score(choice: np.ndarray, correct: np.ndarray, tokens: np.ndarray) -> dict:
    rows = np.arange(len(choice))
    return {"accuracy": float(correct[rows, choice].mean()),
            "prompt_tokens_per_input": float(tokens[rows, choice].mean())}


def curve(controller: MetaController, features: np.ndarray, correct: np.ndarray, tokens: np.ndarray,
          ks: list[int]) -> list[dict]:
    rows = [{"setting": f"k={k}", **score(np.full(len(correct), j), correct, tokens), "mean_k": k}
            for j, k in enumerate(ks)]
    best = max(rows, key=lambda r: (r["accuracy"], -r["prompt_tokens_per_input"]))
    p = controller.predict_proba(features)
    settings: list[tuple[str, int | None]] = [("auto", None)]
    settings += [(f"auto, budget {share:.0%} of best fixed", int(share * best["prompt_tokens_per_input"] * len(p)))
                 for share in BUDGET_SHARES]
    for name, budget in settings:
        if budget is not None and budget < tokens.min(axis=1).sum():
            continue  # less than the zero-shot prompts cost
        choice = controller.choose(p, tokens, budget)
        rows.append({"setting": name, **score(choice, correct, tokens),
                     "mean_k": float(np.asarray(ks)[choice].mean())})
    return rows


def saving_at_best_fixed(rows: list[dict]) -> dict:
    fixed = [r for r in rows if r["setting"].startswith("k=")]
    best = max(fixed, key=lambda r: (r["accuracy"], -r["prompt_tokens_per_input"]))
    ok = [r for r in rows if r["setting"].startswith("auto") and r["accuracy"] >= best["accuracy"] - 0.01]
    out = {"best_fixed": best["setting"], "best_fixed_accuracy": best["accuracy"],
           "best_fixed_tokens": best["prompt_tokens_per_input"], "saving": None, "setting": None}
    if ok:
        cheapest = min(ok, key=lambda r: r["prompt_tokens_per_input"])
        out.update(saving=1 - cheapest["prompt_tokens_per_input"] / best["prompt_tokens_per_input"],
                   setting=cheapest["setting"], accuracy=cheapest["accuracy"])
    return out


def grid(path: Path, dims_options: list[int], cs: list[float], tolerances: list[float]) -> None:
    d = np.load(path)
    ks = d["candidate_k"].tolist()
    print(f"\n## {path.stem}")
    for dims in dims_options:
        for C in cs:
            for tol in tolerances:
                controller = MetaController(candidate_k=ks, C=C, tolerance=tol, embedding_dims=dims)
                controller.fit(d["train_features"], d["train_correct"])
                rows = curve(controller, d["test_features"], d["test_correct"], d["test_prompt_tokens"], ks)
                auto = " ".join(f"{r['setting'].replace('auto, budget ', '').replace(' of best fixed', '')}:"
                                f"{r['accuracy']:.3f}@{r['prompt_tokens_per_input']:.0f}"
                                for r in rows if r["setting"].startswith("auto"))
                s = saving_at_best_fixed(rows)
                saving = f"{s['saving']:.0%}" if s["saving"] is not None else "none"
                print(f"dims {dims:3d} C {C:<5} tol {tol:<4} | {auto} | saving at best-1pt {saving}")


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("files", type=Path, nargs="+", help="controller_data outputs (with a train split)")
    parser.add_argument("--apply-to", help="model whose test answers (DATASET-MODEL.npz beside each file) the "
                                           "controller chooses counts for")
    add_out_argument(parser)
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--embedding-dims", type=int, nargs="+", default=[384, 16, 8, 0])
    parser.add_argument("--C", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--tolerance", type=float, nargs="+", default=[0.0, 0.02, 0.05])
    return parser.parse_args()


def evaluate_file(path: Path, apply_to: str | None) -> dict:
    """The controller fitted on a file's held-back examples, choosing counts for its (or ``apply_to``'s) test."""
    dataset, trained_on = path.stem.split("-", 1)
    d = np.load(path)
    ks = d["candidate_k"].tolist()
    controller = MetaController(candidate_k=ks).fit(d["train_features"], d["train_correct"])
    test = np.load(path.with_name(f"{dataset}-{apply_to}.npz")) if apply_to else d
    rows = curve(controller, test["test_features"], test["test_correct"], test["test_prompt_tokens"], ks)
    return {"dataset": dataset, "controller_trained_on": trained_on, "model": apply_to or trained_on,
            "n_train": len(d["train_correct"]), "n_test": len(test["test_correct"]), "rows": rows,
            "saving": saving_at_best_fixed(rows)}


def main() -> None:
    args = parse_args()
    if args.grid:
        for path in args.files:
            grid(path, args.embedding_dims, args.C, args.tolerance)
        return
    results = [evaluate_file(path, args.apply_to) for path in args.files]
    print_results(results)
    out = write_json(results_path(args.out, f"controller-offline-{args.apply_to or 'same-model'}"), results)
    plot(results, out.with_suffix(".png"))
    print(f"\nresults: {out}\nplot: {out.with_suffix('.png')}")


def describe_saving(s: dict) -> str:
    """``saving_at_best_fixed``'s answer in words."""
    best = f"{s['best_fixed']} ({s['best_fixed_accuracy']:.3f} at {s['best_fixed_tokens']:.0f} tokens)"
    if s["saving"] is None:
        return f"no controller setting within 1 point of {best}"
    return f"{s['saving']:.0%} fewer tokens than {best} with `{s['setting']}` ({s['accuracy']:.3f})"


def print_results(results: list[dict]) -> None:
    for item in results:
        title = (f"{item['dataset']} on {item['model']} (controller trained on {item['controller_trained_on']}, "
                 f"{item['n_train']} held-back examples; {item['n_test']} test items): "
                 f"{describe_saving(item['saving'])}")
        print_table(["setting", "accuracy", "prompt tok/input", "mean k"],
                    ([r["setting"], f"{r['accuracy']:.3f}", f"{r['prompt_tokens_per_input']:.0f}", f"{r['mean_k']:.2f}"]
                     for r in item["rows"]), title)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 4), squeeze=False)
    for ax, item in zip(axes[0], results, strict=True):
        fixed = [r for r in item["rows"] if r["setting"].startswith("k=")]
        auto = [r for r in item["rows"] if r["setting"].startswith("auto")]
        ax.plot([r["prompt_tokens_per_input"] for r in fixed], [r["accuracy"] for r in fixed], "o-", label="fixed k")
        for r in fixed:
            ax.annotate(r["setting"], (r["prompt_tokens_per_input"], r["accuracy"]), fontsize=7)
        ax.plot([r["prompt_tokens_per_input"] for r in auto], [r["accuracy"] for r in auto], "s", label="controller")
        ax.set_xscale("log")
        ticks = [t for t in (8, 16, 32, 64, 128, 256, 512, 1024)
                 if min(r["prompt_tokens_per_input"] for r in fixed) / 2 <= t <= 2 * max(r["prompt_tokens_per_input"]
                                                                                         for r in fixed)]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{item['dataset']} ({item['model']})", fontsize=9)
        ax.set_xlabel("prompt tokens per input")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
