"""Saved results under bench/results/ still print through each benchmark's --table option, with the figures
bench/README.md shows."""

from __future__ import annotations

import importlib
import sys

import pytest

from bench.harness.results import RESULTS

CASES = [
    ("eval_http", ["eval-20261125-175445.json", "eval-domain-20261125-1857.json"],
     ["| sst2 | 4 | knn | none | 100 | 0.650 | 0.647 | 145 | 0 | 144 | 320 |",
      "| agnews | 4 | random | domain | 100 | 0.670 | 0.671 | 328 | 6677 | 2612 | 6251 |"]),
    ("calibration", ["calibration-vllm-20261127-173128.json", "calibration-vllm-20261127-180513.json"],
     ["| default | 8 | 0.492 | +0.221 | - | +1% | +1% |"]),
    ("calibration_auto", ["calibration-auto-vllm-20261202-012730.json", "--bootstrap", "50"],
     ["| agnews | 300×2 | affine | 0.716 / 0.728 / 0.213 / 1.39 |", "### Unfitted default, leave-one-dataset-out"]),
    ("annotation", ["annotation-vllm-20261127-125053.json"],
     ["| 100 | domain | ideal | 1 | 0.542 | 0.583 | 0.667 | 0.583 | 0.594 | -8.8% | 0.43 |"]),
    ("counts_http", ["counts-20261202-214159.json"],
     ["| trec | 0.445 / 0.370 / 13 | 0.590 / 0.562 / 32 |"]),
]


@pytest.mark.parametrize(("module", "arguments", "expected"), CASES, ids=[case[0] for case in CASES])
def test_saved_results_print_again(module, arguments, expected, monkeypatch, capsys):
    files = [str(RESULTS / a) if a.endswith(".json") else a for a in arguments]
    monkeypatch.setattr(sys, "argv", [module, "--table", *files])
    importlib.import_module(f"bench.{module}").main()
    printed = capsys.readouterr().out
    for line in expected:
        assert line in printed
