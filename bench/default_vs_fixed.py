"""What a new user gets: the default request after the automatic fit, against fixed kNN counts.

    python -m bench.default_vs_fixed                                   # every dataset
    python -m bench.default_vs_fixed --quick                           # sst2, trec, subj; 300 test items
    python -m bench.default_vs_fixed --model ~/.cache/iclserve/models/gemma-3-270m-q4_k_m \\
        --datasets sst2 trec subj agnews
    python -m bench.default_vs_fixed --table bench/results/default-vs-fixed-*.json

Per dataset, through the service as a user meets it: a task is created (the benchmarks' template, the label
names as verbalizers) and `--n-train` shuffled training examples are uploaded in one request, which starts the
automatic fit (ICL_AUTO_FIT); the benchmark waits for its job and keeps the task's controller document. Then up
to `--n-test` shuffled test items are classified in requests of `--batch` inputs: with the default request
(`inputs` only), at each fixed count `--k` (kNN, no calibration), and with the default request again once the
fit is deleted (the unfitted default, as a task serves it while its fit runs), all on the same items, each
from an empty prefix cache.

Reported per dataset and as the mean over datasets: the default's macro-F1 (over every label of the task)
against the best fixed count's and against the unfitted default's, each difference with its 95% paired
bootstrap interval; its prompt and computed tokens per input against the reference count's (the cheapest fixed
count within 0.01 macro-F1 of the best); the fit's own estimate of the chosen option against its test
macro-F1; the fit's seconds and engine tokens; and the targets as pass/miss lines. Results go to
bench/results/default-vs-fixed-*.json, with a plot of macro-F1 against prompt tokens beside them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.datasets import Dataset, dataset_names, load_dataset
from bench.harness.figures import indices, label_figures
from bench.harness.host import describe_host, host_line
from bench.harness.results import add_out_argument, read_json, results_path, write_json
from bench.harness.server import add_server_arguments, automatic_fit, dataset_task, served_from
from bench.harness.tables import cell, print_table
from controller.metrics import bootstrap_rows, expected_calibration_error, paired_bootstrap
from iclclient import Client
from iclclient.client import APIError
from iclclient.types import Prediction

QUICK = ["sst2", "trec", "subj"]
QUICK_N_TEST = 300
DEFAULT, UNFITTED = "default", "unfitted"
# Each of the fit's heads forced for every input (`decision`): the embedding head, the hidden-state head.
HEADS = ("head", "hidden")
FIXED_OPTIONS = {"selection": "knn", "calibration": "none"}
DRAWS = 2000
NEAR_BEST = 0.01  # the reference count: within this much macro-F1 of the best fixed count
EPS = 1e-9  # figures equal up to float rounding meet a bound

Target = tuple[str, bool | None, str]  # what, passed (None: nothing to judge), the figures behind it


# --- classifying ----------------------------------------------------------------------------------------------


def options_of(config: str) -> dict[str, Any]:
    """A configuration's predict options: the default request sends the inputs alone."""
    if config in (DEFAULT, UNFITTED):
        return {}
    if config in HEADS:
        return {"decision": config}
    return {"demos": int(config.removeprefix("k=")), **FIXED_OPTIONS}


def item_of(prediction: Prediction, labels: list[str]) -> dict[str, Any]:
    return {**{key: prediction.get(key) for key in
               ("label", "k", "stages", "prompt_tokens", "computed_tokens", "calibration", "fit_id", "decision")},
            "probs": [round(prediction["probs"][label], 5) for label in labels]}


def classify(client: Client, task: str, inputs: list, gold: list[str], labels: list[str], batch: int,
             config: str) -> dict[str, Any]:
    """One configuration over the items, in requests of ``batch`` inputs, from an empty prefix cache."""
    client.reset_prefix_cache()
    options, items, usage, policies = options_of(config), [], Counter(), set()
    began = time.perf_counter()
    for start in range(0, len(inputs), batch):
        body = client.predict(task, inputs[start:start + batch], **options)
        items += [item_of(p, labels) for p in body["predictions"]]
        usage.update({key: value for key, value in body["usage"].items() if isinstance(value, int)})
        policies.add(body.get("demos_policy"))
    n = len(items)
    return {"request": options, "n": n, "demos_policy": sorted(str(p) for p in policies),
            "head_share": sum(i.get("decision") == "head" for i in items) / n,
            "hidden_share": sum(i.get("decision") == "hidden" for i in items) / n,
            "ece": expected_calibration_error(np.array([i["probs"] for i in items]),
                                              indices(gold, labels)),
            "fit_ids": sorted({str(i["fit_id"]) for i in items if i["fit_id"]}), "usage": dict(usage),
            **label_figures(gold, [i["label"] for i in items], labels),
            "prompt_tokens_per_input": usage["prompt_tokens"] / n,
            "computed_tokens_per_input": usage["computed_tokens"] / n,
            "mean_k": float(np.mean([i["k"] for i in items])), "wall_s": round(time.perf_counter() - began, 1),
            "items": items}


def fitted(client: Client, task: str) -> dict[str, Any]:
    """The task's automatic fit, waited for: its job (without the result, which the document repeats), what
    started it, how long the benchmark waited, and the task's whole controller document."""
    began = time.perf_counter()
    job, started_by = automatic_fit(client, task)
    return {"started_by": started_by, "waited_s": round(time.perf_counter() - began, 1),
            "job": {key: value for key, value in job.items() if key != "result"},
            "controller": client.get_controller(task)}


def unfitted(client: Client, task: str) -> None:
    """Delete the fit: the default request is served as before it (no upload follows, so nothing refits)."""
    client.delete_controller(task)


def reusable_runs(path: Path | None, name: str, gold: list[str], model: str, n_train: int) -> dict[str, dict[str, Any]]:
    """The runs that do not depend on the fit (fixed counts, the unfitted default) from an earlier results file,
    for the same dataset, pool (its size: the shuffle is the seed's, which the gold labels check), items and
    model: a rerun after a change to the fit need not score them again."""
    if path is None:
        return {}
    earlier = read_json(path)
    record = earlier["datasets"].get(name)
    if (record is None or record.get("gold") != gold or earlier.get("model") != model
            or record.get("n_train") != n_train):
        return {}
    return {config: {**run, "copied_from": str(path)} for config, run in record["runs"].items()
            if config != DEFAULT and config not in HEADS}


def measure_dataset(args: argparse.Namespace, client: Client, data: Dataset,
                    save: Callable[[dict[str, Any]], None], model: str = "") -> dict[str, Any]:
    """Upload and fit as a user does, then every configuration on the same items; ``save`` after each step."""
    train, test = data.train[:args.n_train], data.test[:args.n_test]
    inputs, gold = data.inputs(test), [row["label"] for row in test]
    task = dataset_task(client, data, train)
    record: dict[str, Any] = {"task": task, "labels": data.labels, "n_train": len(train), "n_test": len(test),
                              "gold": gold, "fit": fitted(client, task), "runs": {}}
    print(json.dumps({"dataset": data.name, "fit": fit_line(record["fit"])}), flush=True)
    save(record)
    if args.baseline:
        record["baseline"] = linear_baseline(data.name, len(train), len(test), gold, data.labels, args)
        save(record)
    copied = reusable_runs(getattr(args, "fixed_from", None), data.name, gold, model, len(train))
    for config in [DEFAULT, *(HEADS if args.heads else ()), *(f"k={k}" for k in args.k), UNFITTED]:
        if config in copied:
            record["runs"][config] = copied[config]
            continue
        if config == UNFITTED:
            unfitted(client, task)
        try:
            record["runs"][config] = got = classify(client, task, inputs, gold, data.labels, args.batch, config)
        except APIError as exc:  # a head the fit did not make (one label, or an engine without hidden states)
            if exc.code != "no_head":
                raise
            print(json.dumps({"dataset": data.name, "config": config, "skipped": exc.message}), flush=True)
            continue
        print(json.dumps({"dataset": data.name, "config": config, **{key: got[key] for key in (
            "macro_f1", "prompt_tokens_per_input", "computed_tokens_per_input", "demos_policy")}}), flush=True)
        save(record)
    record["summary"] = summarise(record, args.seed)
    save(record)
    return record


def linear_baseline(name: str, n_train: int, n_test: int, gold: list[str], labels: list[str],
                    args: argparse.Namespace) -> dict[str, Any]:
    """What a user could build in ten lines on the same pool and items (``bench/embedding_baseline.py``)."""
    from bench.embedding_baseline import baseline_answers
    from bench.harness.inprocess import CACHE, Embeddings

    found = baseline_answers(name, n_train, n_test, labels, Embeddings(CACHE, "compute"), args.seed, gold)
    return {"items": [{"label": label} for label in found["labels"]], "C": found["C"],
            **label_figures(gold, found["labels"], labels)}


def fit_line(fit: dict[str, Any]) -> dict[str, Any]:
    """What the progress line shows of a fit (a choice without its candidates)."""
    controller = fit["controller"]
    choice = controller.get("choice")
    return {"started_by": fit["started_by"], "cost": controller.get("cost"), "chosen": chosen(controller),
            "choice": {k: v for k, v in choice.items() if k != "candidates"} if isinstance(choice, dict) else choice}


def chosen(controller: dict[str, Any]) -> str:
    """What the fit serves the default request with: its choice's option where it reports one, else its
    cascade's stages."""
    choice = controller.get("choice")
    if isinstance(choice, dict) and choice.get("option"):
        return str(choice["option"])
    stages = (controller.get("cascade") or {}).get("stages") or []
    return "cascade " + " → ".join(map(str, stages)) if stages else "-"


# --- figures --------------------------------------------------------------------------------------------------


def fixed_counts(runs: dict[str, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(config.removeprefix("k=")): run for config, run in runs.items() if config.startswith("k=")}


def best_count(fixed: dict[int, dict[str, Any]]) -> int:
    """The fixed count of highest macro-F1 (ties: the cheaper)."""
    return max(fixed, key=lambda k: (fixed[k]["macro_f1"], -fixed[k]["prompt_tokens_per_input"]))


def reference_count(fixed: dict[int, dict[str, Any]], tolerance: float = NEAR_BEST) -> int:
    """The cheapest fixed count (prompt tokens per input) within ``tolerance`` macro-F1 of the best."""
    best = max(run["macro_f1"] for run in fixed.values())
    near = [k for k, run in fixed.items() if run["macro_f1"] >= best - tolerance - EPS]
    return min(near, key=lambda k: (fixed[k]["prompt_tokens_per_input"], k))


def held_back_estimate(controller: dict[str, Any]) -> tuple[float | None, str]:
    """The fit's own estimate of the chosen option's macro-F1, and where it comes from: a reported choice's
    held-back figure, else the validation's cascade (fitted on 80% of the held-back examples, measured on the
    rest)."""
    choice = controller.get("choice")
    if isinstance(choice, dict):
        for value in (choice.get("held_back_macro_f1"), (choice.get("held_back") or {}).get("macro_f1"),
                      choice.get("macro_f1")):
            if isinstance(value, int | float):
                return float(value), "choice"
    value = ((controller.get("validation") or {}).get("cascade") or {}).get("macro_f1")
    return (float(value), "validation cascade") if value is not None else (None, "none")


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def answers(run: dict[str, Any], labels: list[str]) -> np.ndarray:
    return indices([item["label"] for item in run["items"]], labels)


def compared(record: dict[str, Any], rows: np.ndarray, a: str, b: str) -> dict[str, float] | None:
    """macro-F1 of run ``a`` minus run ``b`` on the same items, with its paired 95% interval."""
    runs, labels = record["runs"], record["labels"]
    if a not in runs or b not in runs:
        return None
    gold = indices(record["gold"], labels)
    return paired_bootstrap(gold, answers(runs[a], labels), answers(runs[b], labels), len(labels), rows).as_dict()


def quality(record: dict[str, Any], seed: int) -> dict[str, Any]:
    """The default's macro-F1 against the best fixed count's and the unfitted default's."""
    runs = record["runs"]
    fixed = fixed_counts(runs)
    best = best_count(fixed)
    rows = bootstrap_rows(len(record["gold"]), DRAWS, np.random.default_rng(seed))
    return {"best_k": best, "default_macro_f1": runs[DEFAULT]["macro_f1"],
            "best_macro_f1": fixed[best]["macro_f1"], "default_vs_best": compared(record, rows, DEFAULT, f"k={best}"),
            "unfitted_macro_f1": runs[UNFITTED]["macro_f1"] if UNFITTED in runs else None,
            "fitted_vs_unfitted": compared(record, rows, DEFAULT, UNFITTED)}


def cost(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The default's tokens per input against the reference count's."""
    fixed = fixed_counts(runs)
    ref = reference_count(fixed)
    default, reference = runs[DEFAULT], fixed[ref]
    out: dict[str, Any] = {"reference_k": ref, "reference_macro_f1": reference["macro_f1"]}
    for kind in ("prompt", "computed"):
        mine, theirs = default[f"{kind}_tokens_per_input"], reference[f"{kind}_tokens_per_input"]
        out |= {f"default_{kind}_tokens": mine, f"reference_{kind}_tokens": theirs,
                f"{kind}_ratio": ratio(mine, theirs)}
    return out


def fit_figures(fit: dict[str, Any], test_macro_f1: float) -> dict[str, Any]:
    """The fit's estimate against the test, and what the fit cost."""
    controller = fit["controller"]
    estimate, source = held_back_estimate(controller)
    spent = controller.get("cost") or {}
    return {"held_back_estimate": estimate, "held_back_source": source,
            "estimate_error": abs(estimate - test_macro_f1) if estimate is not None else None,
            "chosen": chosen(controller), "fit_seconds": spent.get("seconds"),
            **{f"fit_{key}": spent.get(key) for key in ("prompt_tokens", "calibration_tokens", "computed_tokens")},
            "dtype": spent.get("dtype")}


def heads_figures(record: dict[str, Any], seed: int) -> dict[str, dict[str, Any]]:
    """Each forced head's macro-F1, ECE and tokens, and its difference from the best fixed count."""
    runs = record["runs"]
    best = f"k={best_count(fixed_counts(runs))}"
    rows = bootstrap_rows(len(record["gold"]), DRAWS, np.random.default_rng(seed))
    return {name: {"macro_f1": runs[name]["macro_f1"], "ece": runs[name].get("ece"),
                   "prompt_tokens_per_input": runs[name]["prompt_tokens_per_input"],
                   "vs_best": compared(record, rows, name, best)}
            for name in HEADS if name in runs}


def against_the_better(record: dict[str, Any], seed: int) -> dict[str, Any]:
    """The default against the better of the best fixed count and the linear baseline, paired on the items."""
    baseline = record.get("baseline")
    if baseline is None:
        return {"linear_baseline": None}
    runs, labels = record["runs"], record["labels"]
    best = fixed_counts(runs)[best_count(fixed_counts(runs))]
    better_name, better = max([("best fixed", best), ("baseline", baseline)], key=lambda pair: pair[1]["macro_f1"])
    gold = indices(record["gold"], labels)
    rows = bootstrap_rows(len(gold), DRAWS, np.random.default_rng(seed))
    return {"linear_baseline": baseline["macro_f1"], "better": better_name, "better_macro_f1": better["macro_f1"],
            "default_vs_better": paired_bootstrap(gold, answers(runs[DEFAULT], labels), answers(better, labels),
                                                  len(labels), rows).as_dict()}


def summarise(record: dict[str, Any], seed: int) -> dict[str, Any]:
    """A dataset's figures, all that the tables, the targets and the plot read."""
    runs = record["runs"]
    curve = {str(k): {key: run[key] for key in ("macro_f1", "prompt_tokens_per_input", "computed_tokens_per_input")}
             for k, run in sorted(fixed_counts(runs).items())}
    return {"n": len(record["gold"]), **quality(record, seed), **cost(runs),
            **fit_figures(record["fit"], runs[DEFAULT]["macro_f1"]),
            "unfitted_prompt_tokens": runs[UNFITTED]["prompt_tokens_per_input"] if UNFITTED in runs else None,
            "default_head_share": runs[DEFAULT].get("head_share"),
            "default_hidden_share": runs[DEFAULT].get("hidden_share"),
            "default_ece": runs[DEFAULT].get("ece"),
            "heads": heads_figures(record, seed),
            **against_the_better(record, seed),
            "policies": {config: run["demos_policy"] for config, run in runs.items() if config in (DEFAULT, UNFITTED)},
            "fixed": curve}


def mean_summary(summaries: Iterable[dict[str, Any]]) -> dict[str, float]:
    """The mean over datasets of every figure of their summaries (an interval: its point; not the counts), over
    the datasets that have it."""
    values: dict[str, list[float]] = {}
    for summary in summaries:
        for key, value in summary.items():
            if isinstance(value, dict) and "point" in value:
                value = value["point"]
            if isinstance(value, int | float) and not isinstance(value, bool) and not key.endswith("_k"):
                values.setdefault(key, []).append(float(value))
    return {key: float(np.mean(found)) for key, found in values.items()}


# --- targets --------------------------------------------------------------------------------------------------


def named(summaries: dict[str, dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> list[str]:
    return [name for name, summary in summaries.items() if test(summary)]


def near_best(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> Target:
    default, best = mean["default_macro_f1"], mean["best_macro_f1"]
    return ("mean default macro-F1 ≥ mean best fixed − 0.01", default >= best - 0.01 - EPS,
            f"{default:.3f} vs {best:.3f}")


def never_clearly_below(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> Target:
    below = named(summaries, lambda s: s["default_vs_best"]["high"] < -0.03)
    lowest = min(summaries, key=lambda name: summaries[name]["default_vs_best"]["high"])
    return ("no dataset's interval of default − best fixed wholly below −0.03", not below,
            f"below: {', '.join(below)}" if below else
            f"lowest upper bound {summaries[lowest]['default_vs_best']['high']:+.3f} ({lowest})")


def fit_never_hurts(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> Target:
    what = "fitted default ≥ unfitted − 0.01 on every dataset"
    if "fitted_vs_unfitted" not in mean:
        return what, None, "no unfitted runs"
    worse = named(summaries, lambda s: s["fitted_vs_unfitted"] is not None
                  and s["fitted_vs_unfitted"]["point"] < -0.01 - EPS)
    return what, not worse, f"worse: {', '.join(worse)}" if worse else f"mean {mean['fitted_vs_unfitted']:+.3f}"


def cheaper(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> Target:
    dearer = named(summaries, lambda s: s["prompt_ratio"] is None or s["prompt_ratio"] > 1 + EPS)
    mean_ratio = mean.get("prompt_ratio", np.inf)
    return ("default prompt tokens ≤ the reference's on every dataset, ≤ 0.5× on the mean",
            not dearer and mean_ratio <= 0.5 + EPS,
            f"mean {mean_ratio:.2f}×" + (f"; above 1×: {', '.join(dearer)}" if dearer else ""))


def estimate_holds(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> Target:
    error = mean.get("estimate_error")
    return ("mean |held-back estimate − test| ≤ 0.03", None if error is None else error <= 0.03 + EPS,
            "no estimates" if error is None else f"{error:.3f}")


def beats_the_better(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> Target:
    what = "mean default ≥ mean of the better of best fixed and the linear baseline + 0.03"
    if "better_macro_f1" not in mean:
        return what, None, "no baseline"
    default, better = mean["default_macro_f1"], mean["better_macro_f1"]
    return what, default >= better + 0.03 - EPS, f"{default:.3f} vs {better:.3f} ({default - better:+.3f})"


def never_clearly_below_the_better(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> Target:
    what = "no dataset's interval of default − the better one wholly below −0.02"
    judged = {name: s for name, s in summaries.items() if s.get("default_vs_better") is not None}
    if not judged:
        return what, None, "no baseline"
    below = named(judged, lambda s: s["default_vs_better"]["high"] < -0.02)
    lowest = min(judged, key=lambda name: judged[name]["default_vs_better"]["high"])
    return what, not below, (f"below: {', '.join(below)}" if below else
                             f"lowest upper bound {judged[lowest]['default_vs_better']['high']:+.3f} ({lowest})")


def calibrated(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> Target:
    ece = mean.get("default_ece")
    return ("mean ECE of the default's probabilities ≤ 0.05 (15 bins)", None if ece is None else ece <= 0.05 + EPS,
            "no probabilities" if ece is None else f"{ece:.3f}")


TARGETS = (near_best, never_clearly_below, fit_never_hurts, cheaper, estimate_holds, beats_the_better,
           never_clearly_below_the_better, calibrated)


def targets(summaries: dict[str, dict[str, Any]]) -> list[Target]:
    """Every target, judged on the mean over datasets or on every dataset."""
    mean = mean_summary(summaries.values())
    return [target(summaries, mean) for target in TARGETS]


def print_targets(summaries: dict[str, dict[str, Any]]) -> None:
    print("\nTargets (mean over datasets):")
    for what, passed, figures in targets(summaries):
        print(f"- {'n/a' if passed is None else 'pass' if passed else 'miss'}: {what} ({figures})")


# --- tables ---------------------------------------------------------------------------------------------------


def interval(value: dict[str, float] | None) -> str:
    return "-" if value is None else f"{value['point']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}]"


def signed(value: float | None) -> str:
    return cell(value, "+.3f")


def fixed_table(summaries: dict[str, dict[str, Any]]) -> None:
    counts = sorted({int(k) for s in summaries.values() for k in s["fixed"]})
    rows = [[name, *(f"{s['fixed'][str(k)]['macro_f1']:.3f} / {s['fixed'][str(k)]['prompt_tokens_per_input']:.0f}"
                     if str(k) in s["fixed"] else "-" for k in counts), s["best_k"], s["reference_k"]]
            for name, s in summaries.items()]
    print_table(["dataset", *(f"k={k}" for k in counts), "best k", "ref k"], rows,
                "Fixed kNN counts, no calibration (macro-F1 / prompt tok per input)")


def quality_table(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> None:
    rows = [[name, s["n"], f"{s['default_macro_f1']:.3f}", s["best_k"], f"{s['best_macro_f1']:.3f}",
             interval(s["default_vs_best"]), cell(s["unfitted_macro_f1"]), interval(s["fitted_vs_unfitted"])]
            for name, s in summaries.items()]
    rows.append(["**mean**", "", cell(mean.get("default_macro_f1")), "", cell(mean.get("best_macro_f1")),
                 signed(mean.get("default_vs_best")), cell(mean.get("unfitted_macro_f1")),
                 signed(mean.get("fitted_vs_unfitted"))])
    print_table(["dataset", "n", "default", "best k", "best fixed", "default − best [95%]", "unfitted",
                 "fitted − unfitted [95%]"], rows, "macro-F1: the default request against fixed counts")


def token_table(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> None:
    def line(name: str, s: dict[str, Any], ref: object) -> list[object]:
        return [name, ref, cell(s.get("reference_macro_f1")), cell(s.get("default_prompt_tokens"), ".0f"),
                cell(s.get("reference_prompt_tokens"), ".0f"), cell(s.get("prompt_ratio"), ".2f"),
                cell(s.get("default_computed_tokens"), ".0f"), cell(s.get("reference_computed_tokens"), ".0f"),
                cell(s.get("computed_ratio"), ".2f")]

    rows = [line(name, s, s["reference_k"]) for name, s in summaries.items()] + [line("**mean**", mean, "")]
    print_table(["dataset", "ref k", "ref macro-F1", "default prompt tok", "ref prompt tok", "ratio",
                 "default computed tok", "ref computed tok", "ratio"], rows,
                "Tokens per input: the default against the reference count")


def fit_table(summaries: dict[str, dict[str, Any]], mean: dict[str, float]) -> None:
    def line(name: str, s: dict[str, Any], option: str, source: str, dtype: str) -> list[object]:
        return [name, option, source, cell(s.get("held_back_estimate")), cell(s.get("default_macro_f1")),
                cell(s.get("estimate_error")), cell(s.get("fit_seconds"), ".1f"),
                cell(s.get("fit_prompt_tokens"), ".0f"), cell(s.get("fit_calibration_tokens"), ".0f"),
                cell(s.get("fit_computed_tokens"), ".0f"), dtype]

    rows = [line(name, s, s["chosen"], s["held_back_source"], s["dtype"] or "-")
            for name, s in summaries.items()] + [line("**mean**", mean, "", "", "")]
    print_table(["dataset", "chosen", "estimate from", "held-back", "test", "abs error", "fit s",
                 "fit prompt tok", "fit calib tok", "fit computed tok", "dtype"], rows,
                "The fit: its estimate of the default against the test, and its cost")


def heads_table(summaries: dict[str, dict[str, Any]]) -> None:
    rows = []
    for name, s in summaries.items():
        heads = s.get("heads") or {}
        rows.append([name, cell(s.get("default_ece")), cell(s.get("default_head_share"), ".2f"),
                     cell(s.get("default_hidden_share"), ".2f"),
                     *(f"{heads[h]['macro_f1']:.3f} / {heads[h]['prompt_tokens_per_input']:.0f} / "
                       f"{cell(heads[h]['ece'])}" if h in heads else "-" for h in HEADS),
                     *(interval(heads[h]["vs_best"]) if h in heads else "-" for h in HEADS)])
    print_table(["dataset", "default ECE", "answered by head", "by hidden", "head (macro-F1 / tok / ECE)",
                 "hidden (macro-F1 / tok / ECE)", "head − best fixed", "hidden − best fixed"], rows,
                "The default's calibration and where its answers came from; each head forced")


def print_tables(doc: dict[str, Any]) -> None:
    summaries = {name: record["summary"] for name, record in doc["datasets"].items() if "summary" in record}
    if not summaries:
        print("no dataset finished")
        return
    mean = mean_summary(summaries.values())
    fixed_table(summaries)
    quality_table(summaries, mean)
    token_table(summaries, mean)
    fit_table(summaries, mean)
    heads_table(summaries)
    print_targets(summaries)
    print(f"\n{doc.get('model', '?')}; {host_line(doc['host'])}")


# --- the plot -------------------------------------------------------------------------------------------------


def plot(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """macro-F1 against prompt tokens per input: each dataset's fixed-count curve with the default beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(summaries), figsize=(3.6 * len(summaries), 3.4), squeeze=False)
    for ax, (name, s) in zip(axes[0], summaries.items(), strict=True):
        ks = sorted(s["fixed"], key=int)
        x = [s["fixed"][k]["prompt_tokens_per_input"] for k in ks]
        y = [s["fixed"][k]["macro_f1"] for k in ks]
        ax.plot(x, y, "o-", color="grey", label="fixed k (kNN, no calibration)")
        for k, xk, yk in zip(ks, x, y, strict=True):
            ax.annotate(k, (xk, yk), fontsize=7)
        ax.plot(s["default_prompt_tokens"], s["default_macro_f1"], "*", markersize=11, label="default (fitted)")
        if s["unfitted_macro_f1"] is not None:
            ax.plot(s["unfitted_prompt_tokens"], s["unfitted_macro_f1"], "s", label="default (unfitted)")
        for head, marker in zip(HEADS, ("^", "v"), strict=True):
            if head in s.get("heads", {}):
                figures = s["heads"][head]
                ax.plot(figures["prompt_tokens_per_input"], figures["macro_f1"], marker, label=f"{head} (forced)")
        if s.get("linear_baseline") is not None:
            ax.plot(0, s["linear_baseline"], "x", color="black", label="embeddings + LogisticRegressionCV")
        ax.set_xscale("symlog", linthresh=10)  # a default answered by the embedding head spends 0 tokens
        ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow log range labels its minor ticks over each other
        ax.set(title=name, xlabel="prompt tokens per input", ylabel="macro-F1")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the command line -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--datasets", nargs="+", help="default: every dataset of the MANIFEST (--quick: "
                                                      f"{' '.join(QUICK)})")
    parser.add_argument("--quick", action="store_true", help=f"{' '.join(QUICK)}, --n-test {QUICK_N_TEST}")
    parser.add_argument("--n-train", type=int, default=1000, help="labeled examples uploaded (fewer where the "
                                                                  "training split has fewer)")
    parser.add_argument("--n-test", type=int, help="test items (default 1000; fewer where the split has fewer)")
    parser.add_argument("--batch", type=int, default=100, help="inputs per request")
    parser.add_argument("--k", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16], help="the fixed counts")
    parser.add_argument("--seed", type=int, default=0, help="the shuffles' and the bootstrap's")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="leave out the embeddings + LogisticRegressionCV baseline on the same pool and items")
    parser.add_argument("--no-heads", dest="heads", action="store_false",
                        help="leave out the runs that force each of the fit's heads (decision head, hidden)")
    parser.add_argument("--model", help="a local model folder (default: the service's default model)")
    add_server_arguments(parser)
    add_out_argument(parser)
    parser.add_argument("--table", type=Path, nargs="+", help="only print the tables of earlier results files")
    parser.add_argument("--plot", type=Path, help="with --table: also draw those files' datasets into this PNG")
    parser.add_argument("--fixed-from", type=Path, help="an earlier results file: copy its fixed-count and unfitted "
                                                        "runs where its dataset, items and model are the same "
                                                        "(after a change to the fit only)")
    args = parser.parse_args(argv)
    args.datasets = args.datasets or (QUICK if args.quick else dataset_names())
    args.n_test = args.n_test or (QUICK_N_TEST if args.quick else 1000)
    return args


def merged(paths: list[Path]) -> dict[str, Any]:
    """Results files as one document: the first one's host and model, every file's datasets (later ones win)."""
    docs = [read_json(path) for path in paths]
    return {**docs[0], "datasets": {name: record for doc in docs for name, record in doc["datasets"].items()}}


def saver(doc: dict[str, Any], name: str, path: Path) -> Callable[[dict[str, Any]], None]:
    """Keep dataset ``name``'s record in ``doc`` and rewrite the file, so that a run cut short keeps what it did;
    the host's dtype is the first fit's."""
    def save(record: dict[str, Any]) -> None:
        doc["datasets"][name] = record
        doc["host"]["dtype"] = doc["host"]["dtype"] or (record["fit"]["controller"].get("cost") or {}).get("dtype")
        write_json(path, doc)

    return save


def run(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = {"benchmark": "default_vs_fixed", "args": {k: str(v) for k, v in vars(args).items()},
                           "host": describe_host(), "datasets": {}}
    with served_from(args, model=args.model, auto_fit=True) as service, service.client() as client:
        doc["model"] = client.models()[0]["id"]
        for name in args.datasets:
            measure_dataset(args, client, load_dataset(name, args.seed), saver(doc, name, path), doc["model"])
    summaries = {name: record["summary"] for name, record in doc["datasets"].items()}
    doc["mean"] = mean_summary(summaries.values())
    doc["targets"] = [{"target": what, "passed": passed, "figures": figures}
                      for what, passed, figures in targets(summaries)]
    write_json(path, doc)
    return doc


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table:
        doc = merged(args.table)
        print_tables(doc)
        if args.plot:
            plot({name: record["summary"] for name, record in doc["datasets"].items() if "summary" in record},
                 args.plot)
        return
    path = results_path(args.out, "default-vs-fixed")
    doc = run(args, path)
    figure = path.with_suffix(".png")
    plot({name: record["summary"] for name, record in doc["datasets"].items()}, figure)
    print_tables(doc)
    print(f"\nresults: {path}\nplot: {figure}")


if __name__ == "__main__":
    main()
