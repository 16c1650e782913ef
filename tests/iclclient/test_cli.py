"""The iclserve commands against the app on the fake engine: what they print, write and resume."""

from __future__ import annotations

import argparse
import json

import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import f1_score

from iclclient import Client, JobFailed
from iclclient.cli import _parser, macro_f1, main, mixed_policies, template_fields
from service.app import create_app
from service.config import Settings
from service.state import Runtime
from tests.conftest import load_split
from tests.fakes import FakeEmbedder, FakeScorer

TEMPLATE = "Input: {text}\\nLabel: {label}"


@pytest.fixture
def slow_http(tmp_path):
    """The app on a fake engine of 1,000 tokens a second, without automatic fits: a fit or a batch job runs
    long enough to be seen running (predicts of a few short inputs stay quick)."""
    settings = Settings(data_dir=tmp_path, api_keys=["secret"], auto_fit=False)
    runtime = Runtime(scorer=FakeScorer(tokens_per_s=1000), embedder=FakeEmbedder())
    with TestClient(create_app(settings, runtime=runtime)) as c:
        yield c


def _run(http, capsys, *argv, quiet=True):
    code = main([*argv, "--api-key", "secret", *(["--quiet"] if quiet else [])], http=http)
    out = capsys.readouterr()
    return code, out.out, out.err


def _labeled(n):
    # The fake model prefers the label its query names: half the inputs name theirs.
    return [{"text": f"{label} film number {i}" if i % 4 < 2 else f"film number {i} plain", "label": label}
            for i, label in ((i, "positive" if i % 2 else "negative") for i in range(n))]


def _task_with_examples(http, capsys, tmp_path, n, name="t"):
    _run(http, capsys, "task", "create", name, "--labels", "negative", "positive", "--template", TEMPLATE)
    _run(http, capsys, "examples", "add", str(_jsonl(tmp_path / f"{name}-examples.jsonl", _labeled(n))),
         "--task", name)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_template_fields():
    assert template_fields("P: {premise}\nH: {hypothesis}\nA: {label}") == ["premise", "hypothesis"]


def test_a_task_from_a_dataset_file_to_graded_answers(http, capsys, tmp_path):
    code, out, _ = _run(http, capsys, "task", "create", "sst2", "--labels", "negative", "positive",
                        "--template", "Review: {text}\\nSentiment: {label}")
    assert code == 0 and json.loads(out)["template"] == "Review: {text}\nSentiment: {label}"
    train = _jsonl(tmp_path / "train.jsonl", load_split("sst2", "train", limit=60))
    code, out, _ = _run(http, capsys, "examples", "add", str(train), "--task", "sst2", "--batch", "25")
    assert code == 0 and json.loads(out) == {"added": 60, "n_examples": 60, "n_labeled": 60}
    test_rows = load_split("sst2", "test", limit=30)
    test = _jsonl(tmp_path / "test.jsonl", test_rows)
    answers = tmp_path / "answers.jsonl"
    code, out, _ = _run(http, capsys, "predict", str(test), "--task", "sst2", "--output", str(answers),
                        "--batch", "8", "--demos", "2", "--calibration", "none")
    summary = json.loads(out)
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert code == 0 and summary["answers"] == 30 and [a["index"] for a in lines] == list(range(30))
    assert all(a["gold"] == r["label"] and a["k"] == 2 for a, r in zip(lines, test_rows, strict=True))
    assert summary["accuracy"] == sum(a["label"] == a["gold"] for a in lines) / 30


def test_predict_resumes_where_the_output_stops(http, capsys, tmp_path):
    _run(http, capsys, "task", "create", "t", "--labels", "negative", "positive", "--template",
         "Input: {text}\\nLabel: {label}")
    rows = [{"text": f"film number {i}", "label": "negative"} for i in range(10)]
    data = _jsonl(tmp_path / "in.jsonl", rows)
    answers = tmp_path / "answers.jsonl"
    _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(answers), "--demos", "0")
    first = answers.read_text().splitlines()
    answers.write_text("\n".join(first[:4]) + "\n" + first[4][:10])  # cut short mid-line, as by a crash
    scorer = http.app.state.icl.runtime.scorer
    before = len(scorer.calls)
    code, out, _ = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(answers), "--demos", "0")
    assert code == 0 and len(scorer.calls) - before == 6  # only what was missing was sent
    assert answers.read_text().splitlines() == first
    changed = _jsonl(tmp_path / "changed.jsonl", [{"text": "another film", "label": "positive"}, *rows[1:]])
    for path, options in ((changed, ["--demos", "0"]), (data, ["--demos", "1"])):  # other inputs, other options
        code, _, err = _run(http, capsys, "predict", str(path), "--task", "t", "--output", str(answers), *options)
        assert code == 1 and "holds answers to other inputs or options" in err
    assert answers.read_text().splitlines() == first


def test_fit_and_annotate_follow_their_jobs(http, capsys, tmp_path):
    _run(http, capsys, "task", "create", "t", "--labels", "negative", "positive", "--template",
         "Input: {text}\\nLabel: {label}")
    rows = [{"text": f"{'positive' if i % 2 else 'negative'} film {i}", "label": "positive" if i % 2 else "negative"}
            for i in range(40)] + [{"input": f"unlabeled film {i}"} for i in range(5)]
    _run(http, capsys, "examples", "add", str(_jsonl(tmp_path / "e.jsonl", rows)), "--task", "t")
    code, out, _ = _run(http, capsys, "fit", "--task", "t", "--candidate-k", "0", "1", "--train-size", "20",
                        "--poll", "0.01")
    assert code == 0 and json.loads(out)["candidate_k"] == [0, 1, 4]  # with the task's default count
    code, out, _ = _run(http, capsys, "annotate", "--task", "t", "--budget", "3")
    assert code == 0 and len(json.loads(out)["ids"]) == 3


def test_errors_are_one_line_and_exit_1(http, capsys, tmp_path):
    code, _, err = _run(http, capsys, "fit", "--task", "missing")
    assert code == 1 and "404 task_not_found" in err and "task 'missing' does not exist" in err
    code = main(["task", "create", "x", "--labels", "a", "b", "--template", "{text} {label}", "--url",
                 "http://127.0.0.1:9", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("iclserve task create: no service answers at http://127.0.0.1:9")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('\n{"text": "fine", "label": "a"}\n\n{not json\n')
    _run(http, capsys, "task", "create", "t", "--labels", "a", "b", "--template", "X: {text}\\nY: {label}")
    code, _, err = _run(http, capsys, "examples", "add", str(bad), "--task", "t")
    assert code == 1 and "bad.jsonl:4 is not JSON" in err  # the file's own line number
    code, _, err = _run(http, capsys, "examples", "add", str(tmp_path / "missing.jsonl"), "--task", "t")
    assert code == 1 and "missing.jsonl" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):  # argparse: usage and exit 2
        main(["predict", str(bad), "--task", "t", "--output", str(tmp_path / "o"), "--batch", "0"])
    capsys.readouterr()


def test_a_failed_upload_says_how_to_add_the_rest(http, capsys, tmp_path):
    _run(http, capsys, "task", "create", "t", "--labels", "a", "b", "--template", "X: {text}\\nY: {label}")
    rows = [{"text": f"row {i}", "label": "a"} for i in range(5)] + [{"text": "bad", "label": "c"}]
    path = _jsonl(tmp_path / "e.jsonl", rows)
    code, _, err = _run(http, capsys, "examples", "add", str(path), "--task", "t", "--batch", "4")
    assert code == 1 and "the 4 examples before it are stored: add the rest with --skip 4" in err
    fixed = _jsonl(tmp_path / "e.jsonl", rows[:5] + [{"text": "good", "label": "b"}])
    code, out, _ = _run(http, capsys, "examples", "add", str(fixed), "--task", "t", "--skip", "4")
    assert code == 0 and json.loads(out) == {"added": 2, "n_examples": 6, "n_labeled": 6}


def _subcommands(parser):
    """(path, help) of every subcommand under the parser, groups' actions included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name)
                yield from ((f"{name} {path}", text) for path, text in _subcommands(sub))


def test_help_is_plain_text_and_every_command_says_what_it_does(capsys):
    commands = dict(_subcommands(_parser()))
    assert {"task list", "task show", "task delete", "jobs list", "jobs show", "jobs cancel", "jobs delete",
            "batch submit",
            "batch status", "batch download", "predict", "serve"} <= set(commands)
    assert all(text and text.strip() and "\n" not in text for text in commands.values()), commands
    for argv in (["--help"], *([*path.split(), "--help"] for path in commands)):
        with pytest.raises(SystemExit) as done:
            main(argv)
        out = capsys.readouterr().out
        assert done.value.code == 0 and "``" not in out and out.startswith("usage: iclserve"), argv
    main_help = _parser().format_help()
    assert all(name in main_help for name in ("task", "jobs", "batch", "predict"))


def test_an_unknown_task_says_how_to_create_one_with_the_cli(http, capsys, tmp_path):
    data = _jsonl(tmp_path / "in.jsonl", [{"text": "a film"}])
    for argv in (["predict", str(data), "--task", "movie", "--output", str(tmp_path / "a.jsonl")],
                 ["batch", "submit", str(data), "--task", "movie"], ["task", "show", "movie"],
                 ["task", "delete", "movie"], ["examples", "add", str(data), "--task", "movie"]):
        code, out, err = _run(http, capsys, *argv)
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, argv
        assert "task 'movie' does not exist" in err and "iclserve task create movie --labels" in err
        assert "--template" in err and "iclserve task list" in err and "POST /v1/tasks" not in err


def test_task_list_show_and_delete(http, capsys, tmp_path):
    code, out, _ = _run(http, capsys, "task", "list")
    assert code == 0 and "no tasks yet" in out and "iclserve task create" in out
    _task_with_examples(http, capsys, tmp_path, 6, "movies")
    _run(http, capsys, "task", "create", "news", "--labels", "world", "sports", "business", "--template",
         "Headline: {text}\\nTopic: {label}")
    code, out, _ = _run(http, capsys, "task", "list", "--json")
    tasks = json.loads(out)["tasks"]
    assert code == 0 and [(t["name"], t["n_examples"], t["fit"]["state"]) for t in tasks] == [
        ("movies", 6, "none"), ("news", 0, "none")]
    code, out, _ = _run(http, capsys, "task", "list")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith(("movies", "news"))}
    assert code == 0 and rows["movies"][1:] == ["negative,", "positive", "6", "6", "none"]
    assert rows["news"][1:] == ["world,", "sports,", "business", "0", "0", "none"]
    code, out, _ = _run(http, capsys, "task", "show", "news")
    assert code == 0 and json.loads(out) == {**tasks[1], "created_at": json.loads(out)["created_at"]}
    code, out, _ = _run(http, capsys, "task", "delete", "movies")
    assert code == 0 and json.loads(out) == {"deleted": "movies", "n_examples": 6, "n_labeled": 6, "fit_id": None}
    code, out, _ = _run(http, capsys, "task", "list", "--json")
    assert [t["name"] for t in json.loads(out)["tasks"]] == ["news"]


def test_batch_submit_status_and_download(http, capsys, tmp_path):
    _task_with_examples(http, capsys, tmp_path, 8)
    rows = [{"text": f"{'positive' if i % 3 else 'negative'} film {i}", **({"id": f"r{i}"} if i % 2 else {})}
            for i in range(20)]
    data = _jsonl(tmp_path / "in.jsonl", rows)
    code, out, _ = _run(http, capsys, "batch", "submit", str(data), "--task", "t", "--demos", "2", "--calibration",
                        "batch", "--wait", "--poll", "0.01")
    job = json.loads(out)
    assert code == 0 and job["kind"] == "batch" and job["status"] == "succeeded"
    assert job["batch"] == {**job["batch"], "total": 20, "done": 20, "errors": 0}
    code, out, _ = _run(http, capsys, "batch", "status", job["job_id"])
    assert code == 0 and json.loads(out)["batch"]["done"] == 20
    results = tmp_path / "results.jsonl"
    code, out, _ = _run(http, capsys, "batch", "download", job["job_id"], "--output", str(results))
    assert code == 0 and json.loads(out) == {"job_id": job["job_id"], "status": "succeeded", "output": str(results),
                                             "results": 20, "succeeded": 20, "failed": 0, "pending": 0}
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line.get("id") for line in lines] == [row.get("id") for row in rows]  # the line's id is the client id
    served = http.get(f"/v1/jobs/{job['job_id']}/results", params={"format": "jsonl"},
                      headers={"Authorization": "Bearer secret"})
    assert lines == [json.loads(line) for line in served.text.splitlines()]  # as the service's own JSON Lines
    chunks = [[row["text"] for row in rows[i:i + 16]] for i in (0, 16)]  # the job's chunks, as predicts
    expected = [p["label"] for chunk in chunks for p in Client(api_key="secret", http=http).predict(
        "t", chunk, demos=2, calibration="batch")["predictions"]]
    assert [line["prediction"]["label"] for line in lines] == expected
    code, out, err = _run(http, capsys, "batch", "submit", str(data), "--task", "t")
    assert code == 0 and json.loads(out)["inputs"] == 20 and json.loads(out)["job_id"].startswith("job-")
    Client(api_key="secret", http=http).wait_for_job(json.loads(out)["job_id"], poll_s=0.01)


def test_batch_commands_refuse_other_jobs(http, capsys, tmp_path):
    _task_with_examples(http, capsys, tmp_path, 30)
    fit = Client(api_key="secret", http=http).train_controller("t", [0, 1], train_size=20)
    Client(api_key="secret", http=http).wait_for_job(fit, poll_s=0.01)
    for argv in (["batch", "status", fit], ["batch", "download", fit, "--output", str(tmp_path / "r.jsonl")]):
        code, _, err = _run(http, capsys, *argv)
        assert code == 1 and f"job {fit} is a controller job, not a batch job" in err
    code, _, err = _run(http, capsys, "jobs", "cancel", fit)
    assert code == 1 and "409 not_a_batch_job" in err and "batch" in err.split("not_a_batch_job:")[1]


def test_jobs_list_show_and_cancel(slow_http, capsys, tmp_path):
    http = slow_http
    _task_with_examples(http, capsys, tmp_path, 30)
    _task_with_examples(http, capsys, tmp_path, 4, "other")
    client = Client(api_key="secret", http=http)
    fit = client.train_controller("t", [0, 1], train_size=20)
    client.wait_for_job(fit, poll_s=0.01)
    small = client.create_batch("other", ["a film"], demos=0)
    client.wait_for_job(small, poll_s=0.01)
    big = client.create_batch("t", [f"film number {i} plain" for i in range(60)], demos=2)
    code, out, _ = _run(http, capsys, "jobs", "cancel", big)
    assert code == 0 and json.loads(out)["job_id"] == big and json.loads(out)["status"] == "cancelled"
    code, out, err = _run(http, capsys, "batch", "download", big, "--output", str(tmp_path / "big.jsonl"))
    got = json.loads(out)
    assert code == 0 and got["status"] == "cancelled" and got["results"] == 60 and got["pending"] > 0
    assert f"{got['pending']} of its inputs were never classified" in err
    code, out, _ = _run(http, capsys, "jobs", "list", "--json")
    page = json.loads(out)
    assert code == 0 and page["total"] == 3 and [j["job_id"] for j in page["jobs"]] == [big, small, fit]
    assert all(j["created_at"] and j["updated_at"] for j in page["jobs"])
    code, out, _ = _run(http, capsys, "jobs", "list", "--json", "--task", "t", "--kind", "batch")
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == [big]
    code, out, _ = _run(http, capsys, "jobs", "list", "--json", "--status", "succeeded", "--limit", "1",
                        "--offset", "1")
    assert json.loads(out)["total"] == 2 and [j["job_id"] for j in json.loads(out)["jobs"]] == [fit]
    code, out, _ = _run(http, capsys, "jobs", "list", "--limit", "2")
    listed = [line.split()[0] for line in out.splitlines() if line.strip().startswith("job-")]
    assert code == 0 and listed == [big, small] and "of 3" in out and "next page: --offset 2" in out
    code, out, _ = _run(http, capsys, "jobs", "show", fit)
    assert code == 0 and json.loads(out)["kind"] == "controller" and json.loads(out)["status"] == "succeeded"
    code, _, err = _run(http, capsys, "jobs", "show", "job-none")
    assert code == 1 and "404 job_not_found" in err
    code, _, err = _run(http, capsys, "jobs", "list", "--limit", "101")
    assert code == 1 and "400" in err
    code, out, _ = _run(http, capsys, "jobs", "delete", small)
    assert code == 0 and not out.strip()
    code, _, err = _run(http, capsys, "jobs", "show", small)
    assert code == 1 and "404 job_not_found" in err


def _answers(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_answer_lines_record_the_count_the_calibration_the_policy_and_the_fit(http, capsys, tmp_path):
    _task_with_examples(http, capsys, tmp_path, 30)
    data = _jsonl(tmp_path / "in.jsonl", _labeled(6))
    fixed, auto = tmp_path / "fixed.jsonl", tmp_path / "auto.jsonl"
    _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(fixed), "--demos", "2",
         "--calibration", "none")
    assert {(a["k"], a["calibration"], a["demos_policy"], a["fit_id"]) for a in _answers(fixed)} == {
        (2, "none", "fixed", None)}
    _run(http, capsys, "fit", "--task", "t", "--candidate-k", "0", "1", "--train-size", "20", "--poll", "0.01")
    fit_id = Client(api_key="secret", http=http).get_task("t")["fit"]["fit_id"]
    code, _, err = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(auto))
    answers = _answers(auto)
    assert code == 0 and err == "" and {(a["demos_policy"], a["fit_id"]) for a in answers} == {("cascade", fit_id)}
    assert {a["k"] for a in answers} <= {0, 1} and all(a["calibration"] for a in answers)


def test_answers_resumed_across_a_fit_are_flagged_as_mixed(http, capsys, tmp_path):
    _task_with_examples(http, capsys, tmp_path, 30)
    data = _jsonl(tmp_path / "in.jsonl", _labeled(8))
    answers = tmp_path / "answers.jsonl"
    code, _, err = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(answers))
    assert code == 0 and "warning" not in err
    answers.write_text("".join(line + "\n" for line in answers.read_text().splitlines()[:3]))  # a run cut short
    _run(http, capsys, "fit", "--task", "t", "--candidate-k", "0", "1", "--train-size", "20", "--poll", "0.01")
    fit_id = Client(api_key="secret", http=http).get_task("t")["fit"]["fit_id"]
    code, out, err = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(answers))
    lines = _answers(answers)
    assert code == 0 and json.loads(out)["answers"] == 8 and [a["index"] for a in lines] == list(range(8))
    assert [a["fit_id"] for a in lines] == [None] * 3 + [fit_id] * 5  # resumed lines kept, the rest new
    assert "warning" in err and f"fit_id: {fit_id} (5 lines), null (3 lines)" in err
    assert "demos_policy: cascade (5 lines), default (3 lines)" in err and "new --output" in err


def test_mixed_policies_names_each_value_and_its_lines():
    line = {"fit_id": "fit-a", "demos_policy": "cascade", "k": 1, "calibration": "affine"}
    assert mixed_policies([line, line, {**line, "k": 4, "calibration": "none"}]) == []  # by count: by design
    mixed = mixed_policies([line, line, {**line, "calibration": "none"}, {**line, "fit_id": None}])
    assert mixed == ["fit_id: fit-a (3 lines), null (1 line)",
                     "calibration of the answers with k=1: affine (3 lines), none (1 line)"]
    older = {key: value for key, value in line.items() if key != "fit_id"}  # from before fit_id was recorded
    assert mixed_policies([line, older]) == ["fit_id: fit-a (1 line), not recorded (1 line)"]


def test_predict_waits_for_a_running_fit_with_wait_fit(slow_http, capsys, tmp_path):
    http = slow_http
    _task_with_examples(http, capsys, tmp_path, 40)
    client = Client(api_key="secret", http=http)
    data = _jsonl(tmp_path / "in.jsonl", _labeled(4))
    first = client.train_controller("t", [0, 1], train_size=20)
    assert client.get_task("t")["fit"] == {**client.get_task("t")["fit"], "state": "running", "job_id": first}
    code, out, err = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(tmp_path / "a.jsonl"),
                          "--wait-fit", "--poll", "0.01")
    fit_id = client.get_task("t")["fit"]["fit_id"]
    assert code == 0 and client.get_job(first)["status"] == "succeeded" and err == ""
    assert fit_id and {a["fit_id"] for a in _answers(tmp_path / "a.jsonl")} == {fit_id}  # after the fit ended
    second = client.train_controller("t", [0, 1], train_size=20)
    code, out, err = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(tmp_path / "b.jsonl"))
    assert code == 0 and json.loads(out)["answers"] == 4
    assert f"a fit of task 't' is running (job {second})" in err and "--wait-fit" in err
    code, _, err = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(tmp_path / "c.jsonl"),
                        "--demos", "0", "--calibration", "none")  # the fit takes no part in these answers
    assert code == 0 and "is running" not in err
    client.wait_for_job(second, poll_s=0.01)


def test_a_failed_fit_is_reported_and_predict_goes_on(slow_http, capsys, tmp_path, monkeypatch):
    http = slow_http
    _task_with_examples(http, capsys, tmp_path, 40)
    client = Client(api_key="secret", http=http)
    running = client.train_controller("t", [0, 1], train_size=20)
    wait = Client.wait_for_job

    def fails(self, job_id, **kwargs):  # the fit ends, as failed
        job = wait(self, job_id, **kwargs)
        raise JobFailed({**job, "status": "failed", "error": {"message": "the engine went away"}})

    monkeypatch.setattr(Client, "wait_for_job", fails)
    data = _jsonl(tmp_path / "in.jsonl", _labeled(4))
    code, out, err = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(tmp_path / "a.jsonl"),
                          "--wait-fit", "--poll", "0.01")
    assert code == 0 and json.loads(out)["answers"] == 4 and len(_answers(tmp_path / "a.jsonl")) == 4
    assert f"job {running} failed: the engine went away; predicting with the task's present fit" in err


def test_macro_f1_and_the_confusion_by_hand():
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("c", "a")]
    # a: 1 hit, 1 false positive (c), 1 miss (b) -> 2/4; b: 2 hits, 1 false positive -> 4/5; c: 0.
    assert macro_f1(pairs) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert macro_f1(pairs) == pytest.approx(f1_score([g for g, _ in pairs], [p for _, p in pairs], average="macro"))


def test_the_summary_grades_the_answers(http, capsys, tmp_path):
    _run(http, capsys, "task", "create", "t", "--labels", "negative", "positive", "--template", TEMPLATE)
    rows = [{"text": "positive one", "label": "positive"}, {"text": "positive two", "label": "negative"},
            {"text": "negative three", "label": "negative"}, {"text": "negative four", "label": "negative"}]
    data = _jsonl(tmp_path / "in.jsonl", rows)
    answers = tmp_path / "answers.jsonl"
    code, out, err = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(answers), "--demos", "0",
                          "--calibration", "none", quiet=False)
    summary = json.loads(out)  # stdout stays JSON; the human summary goes to stderr
    assert [a["label"] for a in _answers(answers)] == ["positive", "positive", "negative", "negative"]
    # negative: 2 hits, 1 miss -> F1 4/5; positive: 1 hit, 1 false positive -> 2/3.
    assert summary["accuracy"] == 0.75 and summary["macro_f1"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert summary["graded"] == 4 and summary["confusion"] == {"negative": {"negative": 2, "positive": 1},
                                                               "positive": {"negative": 0, "positive": 1}}
    assert summary["answers"] == summary["predicted"] == 4 and summary["elapsed_s"] > 0
    assert summary["inputs_per_s"] == pytest.approx(4 / summary["elapsed_s"], rel=0.01)
    assert summary["prompt_tokens_per_input"] == sum(a["prompt_tokens"] for a in _answers(answers)) / 4
    for text in ("elapsed", "inputs/s", "accuracy", "macro-F1", "prompt tokens per input", "0.7333",
                 "gold \\ predicted"):
        assert text in err, text
    matrix = [line.split() for line in err.splitlines() if line.split()[:1] in (["negative"], ["positive"])]
    assert matrix == [["negative", "2", "1"], ["positive", "0", "1"]]
    code, out, err = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(answers), "--demos", "0",
                          "--calibration", "none")
    assert code == 0 and err == "" and json.loads(out)["predicted"] == 0 and json.loads(out)["graded"] == 4


def test_predict_and_batch_take_every_calibration_the_api_takes(http, capsys, tmp_path):
    _task_with_examples(http, capsys, tmp_path, 8)
    data = _jsonl(tmp_path / "in.jsonl", _labeled(3))
    for calibration in ("auto", "batch", "domain", "contextual", "none"):
        output = tmp_path / f"{calibration}.jsonl"
        code, _, err = _run(http, capsys, "predict", str(data), "--task", "t", "--output", str(output), "--demos", "1",
                            "--calibration", calibration, "--selection", "random")
        assert code == 0, err
        got = {a["calibration"] for a in _answers(output)}
        assert calibration == "auto" or got <= {calibration, f"{calibration}:fitted"}, (calibration, got)
    for selection in ("knn", "random", "diverse"):
        code, out, err = _run(http, capsys, "batch", "submit", str(data), "--task", "t", "--selection", selection,
                            "--calibration", "domain", "--wait", "--poll", "0.01")
        assert code == 0 and json.loads(out)["status"] == "succeeded", err
