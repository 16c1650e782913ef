"""The client's scikit-learn estimator, as a Python user runs it: `ICLClassifier(...).fit(X, y)` on a shared
dataset's training lines (the service fits the task by itself), then `predict` on held-out lines; accuracy and
macro-F1 with 95% bootstrap intervals. Beside it, on the same test items, the plain baseline a user could write
in ten lines: logistic regression (scikit-learn's LogisticRegressionCV) on the service's own retrieval
embeddings (all-MiniLM-L6-v2), no model tokens; the paired bootstrap of the difference says whether either wins.

    python bench/sklearn_estimator.py --datasets sst2 --n-train 1000 --n-test 500

Without --url it starts `iclserve serve` on a free port with a temporary data directory (bench/eval_http.py),
and stops it at the end. Results are printed and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import f1_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from eval_http import DEFAULT_TEMPLATE, TEMPLATES, input_of, load, save_results, service  # noqa: E402

from iclclient import Client, ICLClassifier  # noqa: E402


def bootstrap(gold: np.ndarray, predicted: dict[str, np.ndarray], draws: int, seed: int) -> dict[str, dict]:
    """Per method: accuracy and macro-F1 with 95% intervals; and for the first two methods, the paired
    difference of macro-F1 (the same resampled items for both)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(gold), (draws, len(gold)))
    labels = np.unique(gold)

    def f1(p: np.ndarray, rows: np.ndarray) -> float:
        return float(f1_score(gold[rows], p[rows], labels=labels, average="macro", zero_division=0))

    out: dict[str, dict] = {}
    for name, p in predicted.items():
        accs = (p[idx] == gold[idx]).mean(axis=1)
        f1s = np.array([f1(p, rows) for rows in idx])
        out[name] = {"accuracy": float((p == gold).mean()), "accuracy_ci": np.percentile(accs, [2.5, 97.5]).tolist(),
                     "macro_f1": f1(p, np.arange(len(gold))), "macro_f1_ci": np.percentile(f1s, [2.5, 97.5]).tolist()}
    first, second = list(predicted)[:2]
    diffs = np.array([f1(predicted[first], rows) - f1(predicted[second], rows) for rows in idx])
    out["difference"] = {"of": f"{first} - {second}",
                         "macro_f1": out[first]["macro_f1"] - out[second]["macro_f1"],
                         "macro_f1_ci": np.percentile(diffs, [2.5, 97.5]).tolist()}
    return out


def linear_baseline(train_texts: list[str], train_labels: list[str], test_texts: list[str]) -> np.ndarray:
    """Logistic regression on the service's retrieval embeddings: what a user could write in ten lines."""
    from service.embedder import SentenceEmbedder

    embedder = SentenceEmbedder()
    with warnings.catch_warnings():  # scikit-learn's notices of defaults that change in later releases
        warnings.simplefilter("ignore", FutureWarning)
        model = LogisticRegressionCV(max_iter=2000).fit(embedder.embed(train_texts), train_labels)
    return model.predict(embedder.embed(test_texts))


def text_of(value: str | dict) -> str:
    return value if isinstance(value, str) else "\n".join(value.values())


def run(url: str, dataset: str, n_train: int, n_test: int, seed: int, draws: int, template: str | None) -> dict:
    template = template or TEMPLATES.get(dataset, DEFAULT_TEMPLATE)
    rng = random.Random(seed)
    train = rng.sample(load(dataset, "train"), n_train)
    test = rng.sample(load(dataset, "test"), min(n_test, len(load(dataset, "test"))))
    X_train, y_train = [input_of(r, template) for r in train], [r["label"] for r in train]
    X_test, y_test = [input_of(r, template) for r in test], np.array([r["label"] for r in test])
    began = time.perf_counter()
    clf = ICLClassifier(task=f"sk-{dataset}", url=url, template=template).fit(X_train, y_train)
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    served = clf.predict(X_test)
    predict_s = time.perf_counter() - began
    linear = linear_baseline([text_of(x) for x in X_train], y_train, [text_of(x) for x in X_test])
    with Client(url) as client:
        model = client.models()[0]["id"]
        cost = client.get_controller(f"sk-{dataset}").get("cost") if clf.fit_state_ == "fitted" else None
    return {"dataset": dataset, "template": template, "model": model, "dtype": cost.get("dtype") if cost else None,
            "n_train": n_train, "n_test": len(test), "seed": seed, "fit_state": clf.fit_state_,
            "fit_id": clf.fit_id_, "fit_s": round(fit_s, 1), "predict_s": round(predict_s, 1),
            "inputs_per_s": round(len(test) / predict_s, 2),
            "figures": bootstrap(y_test, {"ICLClassifier": np.asarray(served), "minilm_logistic": linear},
                                 draws, seed)}


def cpu_flags() -> str:
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[-1].split("\n", 1)[0].split()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return " ".join(flag for flag in wanted if flag in flags) or "none of " + ", ".join(wanted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["sst2"])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--template", help="the task's template (default: the benchmarks' per dataset; \\n: a "
                        "newline)")
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    results = []
    with service(args.url) as url:
        for dataset in args.datasets:
            template = args.template.replace("\\n", "\n") if args.template else None
            result = run(url, dataset, args.n_train, args.n_test, args.seed, args.draws, template)
            results.append(result)
            figures = result["figures"]
            print(f"\n{dataset}, template {result['template']!r}: {result['model']} ({result['dtype']}), "
                  f"CPU flags {cpu_flags()}; {result['n_train']} train, {result['n_test']} test; "
                  f"fit {result['fit_s']} s ({result['fit_state']}), predict {result['predict_s']} s "
                  f"({result['inputs_per_s']} inputs/s)")
            for name in ("ICLClassifier", "minilm_logistic"):
                f = figures[name]
                print(f"  {name:16s} accuracy {f['accuracy']:.3f} [{f['accuracy_ci'][0]:.3f}, "
                      f"{f['accuracy_ci'][1]:.3f}]  macro-F1 {f['macro_f1']:.3f} [{f['macro_f1_ci'][0]:.3f}, "
                      f"{f['macro_f1_ci'][1]:.3f}]")
            d = figures["difference"]
            print(f"  {d['of']}: macro-F1 {d['macro_f1']:+.3f} [{d['macro_f1_ci'][0]:+.3f}, "
                  f"{d['macro_f1_ci'][1]:+.3f}] (paired, 95%)")
    print(f"\nwritten {save_results(args.out, 'sklearn-estimator', results)}")


if __name__ == "__main__":
    main()
