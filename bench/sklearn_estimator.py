"""The client's scikit-learn estimator, as a Python user runs it: `ICLClassifier(...).fit(X, y)` on a shared
dataset's training lines (the service fits the task by itself), then `predict` on held-out lines; accuracy and
macro-F1 with 95% bootstrap intervals. Beside it, on the same test items, the plain baseline a user could write
in ten lines: logistic regression (scikit-learn's LogisticRegressionCV) on the service's own retrieval
embeddings (all-MiniLM-L6-v2), no model tokens; the paired bootstrap of the difference says whether either wins.

    python -m bench.sklearn_estimator --datasets sst2 --n-train 1000 --n-test 500

Without --url it starts `iclserve serve` on a free port with a temporary data directory, and stops it at the
end. Results are printed and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import random
import time
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegressionCV

from bench.harness.cli import argument_parser
from bench.harness.datasets import input_of, load, manifest_labels, template_for
from bench.harness.figures import indices
from bench.harness.host import describe_host, host_line
from bench.harness.results import add_out_argument, save_results
from bench.harness.server import add_server_arguments, served_from
from controller.metrics import accuracy_rows, bootstrap, bootstrap_rows, paired_bootstrap
from iclclient import Client, ICLClassifier

BASELINE = "minilm_logistic"


def figures(gold: np.ndarray, predicted: dict[str, np.ndarray], n_labels: int, draws: int, seed: int
            ) -> dict[str, dict]:
    """Per method: accuracy and macro-F1 (over every label of the task) with 95% intervals; and for the first two
    methods, the paired difference of macro-F1 (the same resampled items for both)."""
    rows = bootstrap_rows(len(gold), draws, np.random.default_rng(seed))
    out: dict[str, dict] = {}
    for name, p in predicted.items():
        acc, f1 = bootstrap(gold, p, n_labels, rows, accuracy_rows), bootstrap(gold, p, n_labels, rows)
        out[name] = {"accuracy": acc.point, "accuracy_ci": [acc.low, acc.high],
                     "macro_f1": f1.point, "macro_f1_ci": [f1.low, f1.high]}
    first, second = list(predicted)[:2]
    difference = paired_bootstrap(gold, predicted[first], predicted[second], n_labels, rows)
    out["difference"] = {"of": f"{first} - {second}", "macro_f1": difference.point,
                         "macro_f1_ci": [difference.low, difference.high]}
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
    template = template or template_for(dataset)
    rng = random.Random(seed)
    train = rng.sample(load(dataset, "train"), n_train)
    test = rng.sample(load(dataset, "test"), min(n_test, len(load(dataset, "test"))))
    X_train, y_train = [input_of(r, template) for r in train], [r["label"] for r in train]
    X_test, y_test = [input_of(r, template) for r in test], [r["label"] for r in test]
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
    labels = manifest_labels(dataset)
    answers = {"ICLClassifier": indices(list(served), labels), BASELINE: indices(list(linear), labels)}
    dtype = cost.get("dtype") if cost else None
    return {"dataset": dataset, "template": template, "model": model, "dtype": dtype, "host": describe_host(dtype),
            "n_train": n_train, "n_test": len(test), "seed": seed, "fit_state": clf.fit_state_,
            "fit_id": clf.fit_id_, "fit_s": round(fit_s, 1), "predict_s": round(predict_s, 1),
            "inputs_per_s": round(len(test) / predict_s, 2),
            "figures": figures(indices(y_test, labels), answers, len(labels), draws, seed)}


def print_result(result: dict) -> None:
    figures = result["figures"]
    print(f"\n{result['dataset']}, template {result['template']!r}: {result['model']}, "
          f"{host_line(result['host'])}; {result['n_train']} train, {result['n_test']} test; "
          f"fit {result['fit_s']} s ({result['fit_state']}), predict {result['predict_s']} s "
          f"({result['inputs_per_s']} inputs/s)")
    for name in ("ICLClassifier", BASELINE):
        f = figures[name]
        print(f"  {name:16s} accuracy {f['accuracy']:.3f} [{f['accuracy_ci'][0]:.3f}, "
              f"{f['accuracy_ci'][1]:.3f}]  macro-F1 {f['macro_f1']:.3f} [{f['macro_f1_ci'][0]:.3f}, "
              f"{f['macro_f1_ci'][1]:.3f}]")
    d = figures["difference"]
    print(f"  {d['of']}: macro-F1 {d['macro_f1']:+.3f} [{d['macro_f1_ci'][0]:+.3f}, "
          f"{d['macro_f1_ci'][1]:+.3f}] (paired, 95%)")


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--datasets", nargs="+", default=["sst2"])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--template", help="the task's template (default: the benchmarks' per dataset; \\n: a "
                        "newline)")
    add_server_arguments(parser)
    add_out_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    template = args.template.replace("\\n", "\n") if args.template else None
    results = []
    with served_from(args) as service:
        for dataset in args.datasets:
            results.append(run(service.url, dataset, args.n_train, args.n_test, args.seed, args.draws, template))
            print_result(results[-1])
    save_results(args.out, "sklearn-estimator", results)


if __name__ == "__main__":
    main()
