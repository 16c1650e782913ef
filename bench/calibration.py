"""Label-bias calibration: what each mode buys (macro-F1, accuracy) and what it costs (engine tokens and time).

    python -m bench.calibration --datasets sst2 trec agnews rte tweet_eval_hate poem_sentiment \\
        --selection knn random --k 4 8 --seeds 0 1 2 --n-test 100 \\
        --modes none contextual reference default

Modes: `none`, `contextual`, `reference` (domain-context calibration as Fei et al. run it: 20 strings per
demonstration set), `default` (the service's default domain settings), or `domain:m=M,p=P,s=S,sh=H` (M strings
per set, pooling weight P, at most S sets calibrated per batch, s=all for every set; H strings for random
selection's shared set, M if not given).

Each seed draws its own pool (--pool-size training examples), test items, random demonstration set (one for
all inputs) and random strings. Inputs go in batches of --batch, as requests would; domain strings come from
the pool's and the test items' inputs (a task's labeled and unlabeled examples); each mode keeps a bias cache,
as the service does. With `--scorer vllm` (default) every mode runs on an empty prefix cache and its engine
time is measured; with `--scorer transformers` (e.g. `--device cuda` on a machine without vLLM) each distinct
prompt is scored once and only quality and token counts are reported.
`--table FILE...` prints the summary of earlier results.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.harness.cli import argument_parser
from bench.harness.figures import label_figures
from bench.harness.host import describe_host
from bench.harness.inprocess import (
    EmbeddedTask,
    Embeddings,
    add_engine_arguments,
    embedded_task,
    run_benchmark,
    task_data,
)
from bench.harness.results import ResultsLog, add_out_argument, read_rows
from bench.harness.tables import markdown_table, print_table
from controller.bias import BiasCache
from controller.calibration import CalibrationSources, calibrator_for
from controller.counts import TaskDefaults
from controller.domain import DEFAULT_DOMAIN, REFERENCE_DOMAIN, UNFITTED_DOMAIN, DomainSettings
from controller.planning import Prompt
from controller.predictor import PredictOptions, Predictor

# Rows from before random selection shared one demonstration set among all inputs: each input drew its own.
LEGACY_RANDOM = "random/input"


def parse_mode(mode: str) -> tuple[str, DomainSettings]:
    if mode in ("none", "contextual"):
        return mode, DEFAULT_DOMAIN
    if mode == "reference":
        return "domain", REFERENCE_DOMAIN
    if mode == "default":
        return "domain", DEFAULT_DOMAIN
    if mode.startswith("domain:"):
        fields = dict(part.split("=") for part in mode.removeprefix("domain:").split(","))
        max_sets, shared = fields.get("s", "all"), fields.get("sh")
        return "domain", DomainSettings(samples=int(fields.get("m", 20)), pooling=float(fields.get("p", 0.0)),
                                        max_sets=None if max_sets == "all" else int(max_sets),
                                        shared_set_samples=None if shared is None else int(shared))
    raise SystemExit(f"unknown mode {mode!r}")


async def run_mode(args: argparse.Namespace, scorer, task: EmbeddedTask, base: Predictor,
                   batches: list[list[Prompt]], selection: str, mode: str) -> dict[str, Any]:
    """One calibration mode over a configuration's batches, from an empty prefix cache: its answers' figures and
    what they cost."""
    calibration, settings = parse_mode(mode)
    await scorer.reset_prefix_cache()
    biases = BiasCache()  # as the service keeps one per pool version: a repeated set is free
    calibrator = calibrator_for(calibration, CalibrationSources(
        selection=selection, domain=settings, words=lambda words=task.words: words, cache=biases))
    predictor = base.with_calibrator(calibrator)
    predicted: list[str] = []
    usage: dict[str, int] = defaultdict(int)
    engine_s = 0.0
    for prompts in batches:
        plan = predictor.plan_for(prompts)
        t0 = time.perf_counter()
        result = await predictor.run(plan, scorer)
        engine_s += time.perf_counter() - t0
        predicted += [p.label for p in result.predictions]
        for field, value in vars(result.usage).items():
            usage[field] += value
        usage["calibration_prompts"] += len(plan.calibration.prompts)
    n = len(task.queries)
    return {
        "random_demos": "shared" if selection == "random" else None,
        "settings": vars(settings) if calibration == "domain" else None,
        "scorer": args.scorer, "model": scorer.model_name, "n": n, "dtype": getattr(scorer, "dtype", None),
        "host": describe_host(getattr(scorer, "dtype", None)),
        **label_figures(task.gold, predicted, task.data.labels),
        "prompt_tokens_per_input": usage["prompt_tokens"] / n,
        "calibration_prompts_per_input": usage["calibration_prompts"] / n,
        "calibration_computed_tokens_per_input": usage["calibration_tokens"] / n,
        "computed_tokens_per_input": (usage["total_tokens"] - usage["cached_tokens"]) / n,
        "engine_ms_per_input": 1000 * engine_s / n if args.scorer == "vllm" else None,
    }


async def evaluate(args: argparse.Namespace, scorer, embeddings: Embeddings, log: ResultsLog) -> None:
    began = time.perf_counter()
    for seed in args.seeds:  # seeds outermost: a run cut short by --time-limit-s still covers every dataset
        for dataset in args.datasets:
            task = embedded_task(task_data(dataset, args.pool_size, args.n_test, seed), embeddings)
            builder = task.data.builder(scorer, task.pool)
            for selection in args.selection:
                for k in args.k:
                    base = Predictor.from_options(builder, task.data.labels, PredictOptions(
                        demos=k, selection=selection, calibration="none", seed=seed), TaskDefaults(k))
                    batches = [base.prompts_for(task.queries[start:start + args.batch],
                                                task.query_vectors[start:start + args.batch])
                               for start in range(0, len(task.queries), args.batch)]
                    for mode in args.modes:
                        if args.time_limit_s and time.perf_counter() - began > args.time_limit_s:
                            print("time limit reached", flush=True)
                            return
                        figures = await run_mode(args, scorer, task, base, batches, selection, mode)
                        log.append({"dataset": dataset, "seed": seed, "selection": selection, "k": k, "mode": mode,
                                    **figures})


def derived_default(rows: list[dict], random_mode: str) -> list[dict]:
    """The unfitted default's rows from older runs: it leaves kNN demonstrations uncalibrated (so equals `none`)
    and calibrates per-input sets with the same strings as ``random_mode`` (same samples, seeds and sets)."""
    if UNFITTED_DOMAIN.calibrate_knn or parse_mode(random_mode)[1] != DomainSettings(
            samples=UNFITTED_DOMAIN.samples, pooling=UNFITTED_DOMAIN.pooling, max_sets=UNFITTED_DOMAIN.max_sets):
        raise SystemExit(f"{random_mode} is not what the current default does on per-input sets")
    out = []
    for r in rows:
        # Per-input sets: diverse, and random before it shared one set (shared sets take shared_set_samples).
        per_input = r["selection"] == "diverse" or (r["selection"] == "random" and "random_demos" not in r)
        if (r["selection"] == "knn" and r["mode"] == "none") or (per_input and r["mode"] == random_mode):
            out.append({**r, "mode": "default (derived)"})
    return out


def summarise(results: list[dict]) -> None:
    """Summaries per scorer and test-set size: runs that differ in either are not one measurement."""
    kinds = list(dict.fromkeys((r["scorer"], r["n"]) for r in results))
    for scorer, n in kinds:
        if len(kinds) > 1:
            print(f"\n## scorer {scorer}, {n} test items per dataset and seed")
        _summarise([r for r in results if (r["scorer"], r["n"]) == (scorer, n)])


def _summarise(results: list[dict]) -> None:
    """Mean over seeds per (dataset, selection, k, mode), then each mode's gain over none and extra engine
    time, and the share of the reference's macro-F1 gain each mode keeps."""
    latest: dict[tuple, dict] = {}
    results = [{**r, "selection": LEGACY_RANDOM} if r["selection"] == "random" and "random_demos" not in r else r
               for r in results]
    for r in results:  # a configuration rerun for the same seed (a later file) replaces the earlier run
        latest[(r["dataset"], r["selection"], r["k"], r["mode"], r["seed"])] = r
    groups: dict[tuple, list[dict]] = defaultdict(list)
    by_seed: dict[tuple, dict[int, float]] = defaultdict(dict)
    for (*key, seed), r in latest.items():
        groups[tuple(key)].append(r)
        by_seed[tuple(key)][seed] = r["macro_f1"]
    modes = list(dict.fromkeys(r["mode"] for r in results))
    means: dict[tuple, dict[str, float | None]] = {}
    for key, rows in groups.items():
        times = [r["engine_ms_per_input"] for r in rows if r["engine_ms_per_input"] is not None]
        means[key] = {"f1": statistics.mean(r["macro_f1"] for r in rows),
                      "acc": statistics.mean(r["accuracy"] for r in rows),
                      "calib": statistics.mean(r["calibration_prompts_per_input"] for r in rows),
                      "computed": statistics.mean(r["computed_tokens_per_input"] for r in rows),
                      "ms": statistics.median(times) if times else None, "seeds": len(rows)}
    _pivot_tables(means, modes)
    configs = sorted({key[:3] for key in means if (*key[:3], "none") in means})
    for title, scope in _scopes(configs):
        print(f"\nOver {title} (means of per-configuration seed means):\n")
        _overall(scope, modes, means, by_seed)


def _pivot_tables(means: dict[tuple, dict], modes: list[str]) -> None:
    """One table per figure: a row per (dataset, selection, k), a column per mode."""
    for metric, title, spec in (("f1", "macro-F1", ".3f"), ("acc", "accuracy", ".3f"),
                                ("ms", "engine ms/input (median over seeds)", ".0f")):
        if all(m[metric] is None for m in means.values()):
            continue
        rows = []
        for config in sorted({key[:3] for key in means}):
            cells = []
            for mode in modes:
                m = means.get((*config, mode))
                cells.append("-" if m is None or m[metric] is None else f"{m[metric]:{spec}} ({m['seeds']})")
            rows.append([*config, *cells])
        print_table(["dataset", "selection", "k", *modes], rows, f"{title}, mean over seeds (seeds in brackets):")


def _scopes(configs: list[tuple]) -> list[tuple[str, list[tuple]]]:
    """The sets of configurations summed over, with their titles."""
    # Per-input random sets (runs before random selection shared one set) are another regime: summed apart.
    current = [c for c in configs if c[1] != LEGACY_RANDOM]
    legacy = any(c[1] == LEGACY_RANDOM for c in configs)
    scopes = []
    if len({c[1] for c in current}) > 1 or not legacy:
        scopes.append(("all dataset/selection/k configurations" + (" but per-input random ones" if legacy else ""),
                       current))
    if legacy:
        scopes.append(("kNN and per-input random configurations (before random selection shared one set)",
                       [c for c in configs if c[1] in ("knn", LEGACY_RANDOM)]))
    selections = list(dict.fromkeys(c[1] for c in configs))
    if len(selections) > 1:
        scopes += [(f"{selection} configurations", [c for c in configs if c[1] == selection])
                   for selection in selections]
    return scopes


def _overall(configs: list[tuple], modes: list[str], means: dict[tuple, dict], by_seed: dict[tuple, dict]) -> None:
    rows = []
    for mode in modes:
        have = [c for c in configs if (*c, mode) in means]
        if not have:
            continue
        f1 = _mean([means[(*c, mode)]["f1"] for c in have])
        gain = _mean([means[(*c, mode)]["f1"] - means[(*c, "none")]["f1"] for c in have])
        tokens = _ratio([means[(*c, mode)]["computed"] for c in have], [means[(*c, "none")]["computed"] for c in have])
        timed = [c for c in have if means[(*c, mode)]["ms"] is not None]
        extra_time = _ratio([means[(*c, mode)]["ms"] for c in timed], [means[(*c, "none")]["ms"] for c in timed])
        # Against the reference only on the seeds both ran (and none), so seed noise does not count as gain.
        both = [c for c in have if (*c, "reference") in means]
        mode_gain, ref_gain = (_mean([_matched_gain(by_seed, c, m, (mode, "reference")) for c in both])
                               for m in (mode, "reference"))
        share = f"{mode_gain / ref_gain:.0%} of {len(both)}" if both and ref_gain else "-"
        rows.append([mode, len(have), f"{f1:.3f}", f"{gain:+.3f}", share, tokens, extra_time])
    # No blank line of its own: the caller's title ends with one.
    print(markdown_table(["mode", "configurations", "macro-F1", "gain over none",
                          "share of reference gain (where both ran)", "extra computed tokens",
                          "extra engine time (total over total)"], rows))


def _matched_gain(by_seed: dict[tuple, dict[int, float]], config: tuple, mode: str, among: tuple[str, ...]) -> float:
    """``mode``'s mean macro-F1 gain over none in ``config``, over the seeds every mode of ``among`` and none ran."""
    seeds = set(by_seed[(*config, "none")]).intersection(*(by_seed[(*config, m)] for m in among))
    return _mean([by_seed[(*config, mode)][s] - by_seed[(*config, "none")][s] for s in seeds])


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else 0.0


def _ratio(values: list, baseline: list) -> str:
    """Total over total, as extra percent; '-' without figures."""
    if not values or not sum(baseline):
        return "-"
    return f"{100 * (sum(values) / sum(baseline) - 1):+.0f}%"


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "trec", "agnews", "rte", "tweet_eval_hate",
                                                          "poem_sentiment"])
    parser.add_argument("--selection", nargs="+", default=["knn", "random"])
    parser.add_argument("--k", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["none", "contextual", "reference", "default"])
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--time-limit-s", type=float, help="stop starting new configurations after this long")
    add_out_argument(parser)
    parser.add_argument("--table", type=Path, nargs="+", help="only summarise earlier results")
    parser.add_argument("--derive-default", metavar="MODE",
                        help="with --table: add the rows the unfitted default would give, from runs made before it "
                             "existed (kNN rows of `none`, other rows of MODE, e.g. domain:m=2,p=0,s=all)")
    add_engine_arguments(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.table:
        # Only this benchmark's rows: a glob of calibration-*.json also matches calibration_auto.py's files.
        rows = [r for r in read_rows(args.table) if "mode" in r]
        if args.derive_default:
            rows += derived_default(rows, args.derive_default)
        summarise([r for r in rows if r["mode"] in args.modes or r["mode"] == "default (derived)"])
        return
    run_benchmark(args, "calibration", evaluate, summarise)


if __name__ == "__main__":
    main()
