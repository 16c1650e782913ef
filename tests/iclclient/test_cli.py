"""The iclserve commands against the app on the fake engine: what they print, write and resume."""

from __future__ import annotations

import json

import pytest

from iclclient.cli import main, template_fields
from tests.conftest import load_split


def _run(http, capsys, *argv):
    code = main([*argv, "--api-key", "secret", "--quiet"], http=http)
    out = capsys.readouterr()
    return code, out.out, out.err


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
    assert code == 0 and json.loads(out)["candidate_k"] == [0, 1]
    code, out, _ = _run(http, capsys, "annotate", "--task", "t", "--budget", "3")
    assert code == 0 and len(json.loads(out)["ids"]) == 3


def test_errors_are_one_line_and_exit_1(http, capsys, tmp_path):
    code, _, err = _run(http, capsys, "fit", "--task", "missing")
    assert code == 1 and "404 task_not_found" in err and "does not exist" in err
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
