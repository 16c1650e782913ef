"""bench/default_vs_fixed.py's pure parts: the best and reference counts, the fit's estimate, the targets, and
the tables of a tiny synthetic results document (read back through --table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import default_vs_fixed as dvf

LABELS = ["neg", "pos"]
GOLD = ["neg", "pos"] * 100


def run(answers: list[str], prompt_tokens: float, computed_tokens: float | None = None,
        policy: str = "fixed") -> dict[str, Any]:
    """A configuration's run as the benchmark records it (the figures the summary reads)."""
    correct = sum(a == g for a, g in zip(answers, GOLD, strict=True))
    return {"macro_f1": dvf.label_figures(GOLD, answers, LABELS)["macro_f1"], "accuracy": correct / len(GOLD),
            "prompt_tokens_per_input": prompt_tokens,
            "computed_tokens_per_input": prompt_tokens if computed_tokens is None else computed_tokens,
            "demos_policy": [policy], "items": [{"label": a} for a in answers]}


def flipped(n: int) -> list[str]:
    """The gold answers with the first ``n`` wrong."""
    return [("pos" if g == "neg" else "neg") if i < n else g for i, g in enumerate(GOLD)]


def record(choice: dict[str, Any] | None = None) -> dict[str, Any]:
    """A dataset where k=4 is best, k=2 within 0.01 of it and cheaper, the fitted default answers as k=2 at a third
    of its tokens, and the unfitted default worse."""
    controller = {"validation": {"cascade": {"macro_f1": 0.7}}, "cascade": {"stages": [0, 4]},
                  "cost": {"seconds": 12.5, "prompt_tokens": 900, "calibration_tokens": 0, "computed_tokens": 800,
                           "dtype": "bfloat16"}}
    if choice is not None:
        controller["choice"] = choice
    runs = {"default": run(flipped(20), 10, 12, "cascade"), "k=0": run(flipped(80), 5), "k=2": run(flipped(20), 30),
            "k=4": run(flipped(19), 60), "unfitted": run(flipped(40), 60, policy="default")}
    return {"labels": LABELS, "gold": GOLD, "runs": runs, "fit": {"controller": controller}}


# --- counts and estimates -------------------------------------------------------------------------------------


def test_the_reference_is_the_cheapest_count_within_a_hundredth_of_the_best():
    fixed = {k: {"macro_f1": f1, "prompt_tokens_per_input": tokens}
             for k, f1, tokens in [(0, 0.50, 5), (2, 0.79, 30), (4, 0.80, 60), (8, 0.795, 90)]}
    assert dvf.best_count(fixed) == 4
    assert dvf.reference_count(fixed) == 2  # exactly 0.01 below the best still counts
    fixed[2]["macro_f1"] = 0.785
    assert dvf.reference_count(fixed) == 4
    assert dvf.reference_count(fixed, tolerance=0.02) == 2


def test_the_best_count_of_equal_figures_is_the_cheaper():
    fixed = {1: {"macro_f1": 0.6, "prompt_tokens_per_input": 20}, 8: {"macro_f1": 0.6, "prompt_tokens_per_input": 9}}
    assert dvf.best_count(fixed) == 8
    assert dvf.reference_count(fixed) == 8


def test_the_estimate_is_the_choices_where_the_fit_reports_one_else_the_validation_cascades():
    assert dvf.held_back_estimate({"choice": {"option": "k=4", "macro_f1": 0.61},
                                   "validation": {"cascade": {"macro_f1": 0.7}}}) == (0.61, "choice")
    assert dvf.held_back_estimate({"choice": {"held_back": {"macro_f1": 0.55}}}) == (0.55, "choice")
    assert dvf.held_back_estimate({"validation": {"cascade": {"macro_f1": 0.7}}}) == (0.7, "validation cascade")
    assert dvf.held_back_estimate({"validation": {"cascade": None}}) == (None, "none")


def test_what_the_fit_chose_is_its_choices_option_else_its_cascade():
    assert dvf.chosen({"choice": {"option": "k=0 then k=4"}, "cascade": {"stages": [1]}}) == "k=0 then k=4"
    assert dvf.chosen({"cascade": {"stages": [0, 4]}}) == "cascade 0 → 4"
    assert dvf.chosen({}) == "-"


def test_a_summary_compares_the_default_with_the_best_the_reference_and_the_unfitted_default():
    summary = dvf.summarise(record(), seed=0)
    assert (summary["best_k"], summary["reference_k"]) == (4, 2)
    runs = record()["runs"]
    vs_best, vs_unfitted = summary["default_vs_best"], summary["fitted_vs_unfitted"]
    assert vs_best["point"] == pytest.approx(runs["default"]["macro_f1"] - runs["k=4"]["macro_f1"])
    assert vs_best["low"] < vs_best["point"] < 0 <= vs_best["high"]  # one item apart: no difference shown
    assert vs_unfitted["point"] == pytest.approx(runs["default"]["macro_f1"] - runs["unfitted"]["macro_f1"])
    assert 0 < vs_unfitted["low"] < vs_unfitted["point"]
    assert summary["prompt_ratio"] == pytest.approx(10 / 30) and summary["computed_ratio"] == pytest.approx(12 / 30)
    assert summary["estimate_error"] == pytest.approx(abs(0.7 - runs["default"]["macro_f1"]))
    assert summary["fixed"]["2"]["prompt_tokens_per_input"] == 30 and summary["dtype"] == "bfloat16"


def test_the_default_is_compared_with_the_better_of_the_best_count_and_the_baseline_and_with_each_head():
    plain = record()
    assert dvf.summarise(plain, seed=0)["linear_baseline"] is None and dvf.summarise(plain, seed=0)["heads"] == {}
    with_more = record()
    with_more["baseline"] = run(flipped(10), 0)  # better than k=4 (19 wrong)
    with_more["runs"]["head"] = run(flipped(30), 0)
    with_more["runs"]["hidden"] = run(flipped(5), 40)
    summary = dvf.summarise(with_more, seed=0)
    assert (summary["better"], summary["better_macro_f1"]) == ("baseline", with_more["baseline"]["macro_f1"])
    assert summary["default_vs_better"]["point"] == pytest.approx(
        with_more["runs"]["default"]["macro_f1"] - with_more["baseline"]["macro_f1"])
    assert set(summary["heads"]) == {"head", "hidden"}
    assert summary["heads"]["hidden"]["prompt_tokens_per_input"] == 40
    assert summary["heads"]["hidden"]["vs_best"]["point"] > 0 > summary["heads"]["head"]["vs_best"]["point"]


def test_the_mean_summary_averages_figures_and_interval_points_but_not_counts():
    mean = dvf.mean_summary([{"a": 1.0, "best_k": 4, "d": {"point": 0.2, "low": 0, "high": 1}, "s": "x", "n": None},
                             {"a": 3.0, "best_k": 8, "d": {"point": 0.4, "low": 0, "high": 1}}])
    assert mean == pytest.approx({"a": 2.0, "d": 0.3})


# --- targets --------------------------------------------------------------------------------------------------


def passing() -> dict[str, Any]:
    return {"default_macro_f1": 0.80, "best_macro_f1": 0.805, "default_vs_best": interval(-0.005, -0.02, 0.01),
            "fitted_vs_unfitted": interval(0.02, 0.0, 0.05), "prompt_ratio": 0.4, "estimate_error": 0.02,
            "better_macro_f1": 0.70, "default_vs_better": interval(0.10, 0.05, 0.15), "default_ece": 0.03}


def interval(point: float, low: float, high: float) -> dict[str, float]:
    return {"point": point, "low": low, "high": high}


def verdicts(summaries: dict[str, dict[str, Any]]) -> list[bool | None]:
    return [passed for _, passed, _ in dvf.targets(summaries)]


def test_every_target_passes_where_the_figures_meet_it():
    assert verdicts({"a": passing(), "b": passing()}) == [True] * 8


@pytest.mark.parametrize(("change", "missed"), [
    ({"default_macro_f1": 0.70}, 0),
    ({"default_vs_best": interval(-0.06, -0.09, -0.031)}, 1),
    ({"fitted_vs_unfitted": interval(-0.011, -0.05, 0.02)}, 2),
    ({"prompt_ratio": 1.01}, 3),
    ({"estimate_error": 0.05}, 4),
    ({"better_macro_f1": 0.90}, 5),
    ({"default_vs_better": interval(-0.05, -0.08, -0.021)}, 6),
    ({"default_ece": 0.2}, 7),
])
def test_one_dataset_off_its_target_misses_that_target_alone(change, missed):
    expected = [True] * 8
    expected[missed] = False
    assert verdicts({"a": passing(), "b": {**passing(), **change}}) == expected


def test_tokens_under_the_reference_everywhere_still_miss_above_half_on_the_mean():
    assert verdicts({"a": {**passing(), "prompt_ratio": 0.9}, "b": passing()})[3] is False


def test_targets_without_unfitted_runs_or_estimates_are_not_judged():
    summaries = {"a": {**passing(), "fitted_vs_unfitted": None, "estimate_error": None}}
    assert verdicts(summaries) == [True, True, None, True, None, True, True, True]
    without_baseline = {"a": {key: value for key, value in passing().items()
                              if key not in ("better_macro_f1", "default_vs_better", "default_ece")}}
    assert verdicts(without_baseline)[5:] == [None, None, None]


# --- tables ---------------------------------------------------------------------------------------------------


def results_document() -> dict[str, Any]:
    first, second = record(), record({"option": "k=0 then k=4", "macro_f1": 0.88})
    for one in (first, second):
        one["summary"] = dvf.summarise(one, seed=0)
    return {"model": "tiny-model", "host": {"cpu": "x", "cpu_flags": ["avx2"], "cores": 2, "load_1m": 0.5,
                                            "dtype": "bfloat16"},
            "datasets": {"sst2": first, "trec": second, "cut-short": {"runs": {}}}}


def test_saved_results_print_as_tables_with_the_targets(tmp_path: Path, capsys):
    path = tmp_path / "default-vs-fixed-1.json"
    path.write_text(json.dumps(results_document()))
    dvf.main(["--table", str(path)])
    printed = capsys.readouterr().out
    assert "| sst2 | 0.600 / 5 | 0.900 / 30 | 0.905 / 60 | 4 | 2 |" in printed
    assert "| sst2 | 200 | 0.900 | 4 | 0.905 | -0.005 [-0.015, +0.000] | 0.800 | +0.100 [+0.060, +0.141] |" in printed
    assert "| **mean** | | 0.900 | | 0.905 | -0.005 | 0.800 | +0.100 |" in printed
    assert "| trec | 2 | 0.900 | 10 | 30 | 0.33 | 12 | 30 | 0.40 |" in printed
    assert "| sst2 | cascade 0 → 4 | validation cascade | 0.700 | 0.900 | 0.200 | 12.5 | 900 | 0 | 800 | bfloat16 |" \
        in printed
    assert "| trec | k=0 then k=4 | choice | 0.880 | 0.900 | 0.020 |" in printed
    assert "| **mean** | | | 0.790 | 0.900 | 0.110 | 12.5 |" in printed
    assert "- pass: fitted default ≥ unfitted − 0.01 on every dataset (mean +0.100)" in printed
    assert "- miss: mean |held-back estimate − test| ≤ 0.03 (0.110)" in printed
    assert "cut-short" not in printed  # a dataset the run did not finish
    assert "tiny-model; bfloat16, 2 cores" in printed


def test_runs_that_do_not_depend_on_the_fit_are_copied_only_for_the_same_items_and_model(tmp_path):
    earlier = {"model": "m", "datasets": {"sst2": {"gold": GOLD, "n_train": 100, "runs": {
        "default": run(GOLD, 10), "k=1": run(GOLD, 50), "unfitted": run(flipped(10), 90)}}}}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    copied = dvf.reusable_runs(path, "sst2", GOLD, "m", 100)
    assert set(copied) == {"k=1", "unfitted"} and copied["k=1"]["copied_from"] == str(path)
    assert dvf.reusable_runs(path, "sst2", flipped(1), "m", 100) == {}
    assert dvf.reusable_runs(path, "sst2", GOLD, "other model", 100) == {}
    assert dvf.reusable_runs(path, "sst2", GOLD, "m", 50) == {}
    assert dvf.reusable_runs(path, "trec", GOLD, "m", 100) == {}
    assert dvf.reusable_runs(None, "sst2", GOLD, "m", 100) == {}
