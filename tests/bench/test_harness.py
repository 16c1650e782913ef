"""The benchmarks' harness (bench/harness/): datasets, results files, tables, the host, figures, and a service of
its own on the fake engine."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
from sklearn.metrics import f1_score

from bench.harness.datasets import (
    TEST_DATA,
    datasets_dir,
    input_of,
    load,
    load_dataset,
    manifest_labels,
    template_for,
)
from bench.harness.figures import label_figures, macro_f1_seen
from bench.harness.host import FLAGS, cpu_flags, describe_host, host_line
from bench.harness.results import RESULTS, ResultsLog, read_json, read_rows, results_path, save_results
from bench.harness.server import dataset_task, fresh_task, served, server_env
from bench.harness.tables import cell, markdown_table, print_table

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512vl
"""


# --- datasets ------------------------------------------------------------------------------------------------


def test_a_dataset_from_tests_data_has_its_manifest_labels_and_both_splits_shuffled_by_the_seed():
    data = load_dataset("trec", seed=3, root=TEST_DATA)
    assert data.labels == json.loads((TEST_DATA / "MANIFEST.json").read_text())["trec"]["labels"]
    train, test = load("trec", "train", TEST_DATA), load("trec", "test", TEST_DATA)
    assert len(data.train) == len(train) == 300 and len(data.test) == len(test) == 200
    assert sorted(r["line"] for r in data.train) == sorted(r["line"] for r in train)
    assert [r["line"] for r in data.train] != [r["line"] for r in train]  # shuffled
    assert load_dataset("trec", seed=3, root=TEST_DATA).train == data.train  # by the seed
    assert load_dataset("trec", seed=4, root=TEST_DATA).train != data.train
    assert {r["label"] for r in data.train} == set(data.labels)


def test_the_datasets_folder_follows_the_environment_at_each_call(monkeypatch):
    monkeypatch.setenv("ICL_DATASETS_DIR", str(TEST_DATA))
    assert datasets_dir() == TEST_DATA
    assert manifest_labels("sst2") == ["negative", "positive"]
    monkeypatch.delenv("ICL_DATASETS_DIR")
    assert datasets_dir().name == "datasets" and datasets_dir().parent.name == "shared"


def test_inputs_and_examples_follow_the_template():
    rte = load_dataset("rte", seed=0, root=TEST_DATA)
    assert rte.template == template_for("rte") and "{premise}" in rte.template
    value = rte.inputs(rte.test[:1])[0]
    assert set(value) == {"premise", "hypothesis"}
    sst2 = load_dataset("sst2", seed=0, root=TEST_DATA)
    assert sst2.inputs(sst2.test[:2]) == [r["text"] for r in sst2.test[:2]]
    assert input_of({"text": "fine", "label": "positive"}, template_for("sst2")) == "fine"
    examples = sst2.examples(sst2.train[:3])
    assert [e["id"] for e in examples] == ["sst2-0", "sst2-1", "sst2-2"]
    assert [e["label"] for e in examples] == [r["label"] for r in sst2.train[:3]]


def test_a_benchmark_asking_for_more_rows_than_a_split_has_stops():
    data = load_dataset("sst2", seed=0, root=TEST_DATA)
    data.require(300, 200)
    with pytest.raises(SystemExit, match="asked for 301"):
        data.require(301, 10)


# --- results and tables --------------------------------------------------------------------------------------


def test_a_results_log_is_written_after_every_row_and_reads_back(tmp_path, capsys):
    path = results_path(tmp_path / "new", "eval")
    assert path.parent.is_dir() and path.name.startswith("eval-") and path.suffix == ".json"
    log = ResultsLog(path)
    log.append({"dataset": "sst2", "accuracy": 0.5})
    assert read_rows([path]) == [{"dataset": "sst2", "accuracy": 0.5}]
    log.append({"dataset": "trec", "accuracy": 0.25, "probs": [0.1, 0.9]}, shown={"dataset": "trec"})
    assert read_rows([path]) == log.rows and len(log.rows) == 2
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [{"dataset": "sst2", "accuracy": 0.5}, {"dataset": "trec"}]


def test_rows_come_from_lists_and_from_logs_of_output_lines(tmp_path):
    listed = tmp_path / "a.json"
    listed.write_text(json.dumps([{"k": 0}, {"k": 4}]))
    logged = tmp_path / "b.json"
    logged.write_text('starting\n{"k": 8}\nnot json\n{"k": 16}\n')
    assert [r["k"] for r in read_rows([listed, logged])] == [0, 4, 8, 16]
    saved = save_results(tmp_path, "x", {"datasets": {}})
    assert read_json(saved) == {"datasets": {}}


def test_every_saved_result_still_reads():
    files = sorted(RESULTS.glob("*.json"))
    assert files, f"no results under {RESULTS}"
    for path in files:
        try:
            value = read_json(path)
        except json.JSONDecodeError:  # an older run kept the log of its output lines
            value = read_rows([path])
        assert value, path


def test_a_markdown_table_has_a_header_a_rule_and_a_line_per_row():
    text = markdown_table(["mode", "seconds", "note"], [["batch", cell(1.234, ".2f"), ""], ["c8", cell(None), "x"]])
    assert text.splitlines() == ["| mode | seconds | note |", "|---|---|---|", "| batch | 1.23 | |",
                                 "| c8 | - | x |"]
    with pytest.raises(ValueError, match="2 cells under 3 columns"):
        markdown_table(["a", "b", "c"], [[1, 2]])


def test_a_printed_table_stands_under_its_title(capsys):
    print_table(["a"], [[1]], "Title:")
    assert capsys.readouterr().out == "\nTitle:\n\n| a |\n|---|\n| 1 |\n"


# --- host, figures -------------------------------------------------------------------------------------------


def test_the_host_names_its_cpu_flags_cores_load_and_dtype():
    assert cpu_flags(CPUINFO) == ["avx2", "avx512f", "avx512_bf16"]
    assert cpu_flags("") == []
    host = describe_host("bfloat16", cpuinfo=CPUINFO)
    assert host["cpu"] == "AMD EPYC 9R14 96-Core Processor" and host["cpu_flags"] == ["avx2", "avx512f", "avx512_bf16"]
    assert host["cores"] == os.cpu_count() and host["load_1m"] >= 0 and host["dtype"] == "bfloat16"
    assert host_line(host).startswith("bfloat16, ") and "avx512_bf16" in host_line(host)
    assert "none of " + ", ".join(FLAGS) in host_line(describe_host(cpuinfo=""))
    assert set(cpu_flags()) <= set(FLAGS)  # this machine's


def test_figures_are_scikit_learns_over_every_label_or_over_the_labels_seen():
    labels = ["a", "b", "c"]
    gold, predicted = ["a", "a", "b", "b"], ["a", "b", "b", "b"]  # "c" neither gold nor predicted
    figures = label_figures(gold, predicted, labels)
    assert figures["accuracy"] == 0.75
    assert figures["macro_f1"] == pytest.approx(f1_score(gold, predicted, labels=labels, average="macro",
                                                         zero_division=0))
    assert macro_f1_seen(gold, predicted) == pytest.approx(f1_score(gold, predicted, average="macro"))
    assert macro_f1_seen(gold, predicted) > figures["macro_f1"]


def test_server_settings_come_as_key_value_pairs():
    assert server_env(["ICL_MAX_NUM_SEQS=8", "X=a=b"]) == {"ICL_MAX_NUM_SEQS": "8", "X": "a=b"}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        server_env(["ICL_MAX_NUM_SEQS"])


# --- a service of its own ------------------------------------------------------------------------------------


def test_a_fake_engine_service_starts_takes_a_task_predicts_and_stops(tmp_path: Path):
    data = load_dataset("sst2", seed=0, root=TEST_DATA)
    began = time.monotonic()
    with served(engine="fake", data_dir=tmp_path, auto_fit=False) as service:
        assert service.process is not None and service.admin_key
        with service.client(timeout=60) as client:
            fresh_task(client, "bench-sst2", data.labels, data.template, data.examples(data.train[:40]), chunk=16)
            assert client.list_examples("bench-sst2", limit=100)["total"] == 40
            assert dataset_task(client, data, data.train[:20]) == "bench-sst2"  # anew
            assert client.list_examples("bench-sst2", limit=100)["total"] == 20
            assert client.get_task("bench-sst2")["labels"] == data.labels
            service.reset_prefix_cache()  # the admin key of its own opens /v1/admin
            body = client.predict("bench-sst2", data.inputs(data.test[:5]), demos=2, selection="knn")
        assert len(body["predictions"]) == 5
        assert {p["label"] for p in body["predictions"]} <= set(data.labels)
        assert all(len(p["demo_ids"]) == 2 and p["demo_ids"][0].startswith("sst2-") for p in body["predictions"])
        process = service.process
    assert process.poll() is not None  # stopped with the block
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{service.url}/health", timeout=2)
    assert (tmp_path / "server.log").is_file()
    assert time.monotonic() - began < 20


def test_a_benchmark_stopped_with_sigterm_stops_the_service_it_started(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    script = ("import sys, time\n"
              "from pathlib import Path\n"
              "from bench.harness.server import served\n"
              "with served(engine='fake', data_dir=Path(sys.argv[1])) as service:\n"
              "    print(service.process.pid, flush=True)\n"
              "    time.sleep(120)\n")
    runner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    server = None
    try:
        server = int(runner.stdout.readline())
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(server), "the service outlived its benchmark"
    finally:
        runner.kill()
        if server is not None and alive(server):
            os.kill(server, signal.SIGKILL)
