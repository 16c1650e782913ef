"""iclserve: the command line of the in-context-learning classification service.

The server's commands (serve, prepare-model) start the service; the others call a running service:

    iclserve task create movie --labels negative positive --template 'Input: {text}\\nLabel: {label}'
    iclserve examples add --task movie train.jsonl
    iclserve predict --task movie test.jsonl --output answers.jsonl
    iclserve batch submit --task movie big.jsonl --wait
    iclserve batch download JOB_ID --output results.jsonl
    iclserve fit --task movie
    iclserve annotate --task movie --budget 18
    iclserve task list
    iclserve jobs list --task movie

Files are JSON Lines. A line is an example as the API takes it ({"input": ..., "label": ..., "id": ...}) or a
dataset's own row ({"text": ..., "label": ...}, {"premise": ..., "hypothesis": ..., ...}), whose template
fields become the input. --url (or ICL_URL) and --api-key (or ICL_API_KEY) say where the service is.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import string
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from iclclient.client import APIError, Client, ClientError, JobFailed
from iclclient.types import ExampleIn, FitState, InputValue, Job, Prediction, Task
from service.cli import SERVER_COMMANDS, add_server_commands, run_server_command

SELECTIONS = ["knn", "random", "diverse"]
CALIBRATIONS = ["auto", "batch", "domain", "contextual", "none"]
DECISIONS = ["auto", "tokens", "head", "hidden"]
JOB_KINDS = ["controller", "annotation", "batch"]
JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]
CREATE_HINT = "iclserve task create NAME --labels LABEL LABEL ... --template 'Input: {text}\\nLabel: {label}'"


def template_fields(template: str) -> list[str]:
    """The input fields of a task's template, in order (`{label}` excluded)."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return list(dict.fromkeys(n for n in names if n != "label"))


def read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The file's objects, each with where it stands (`FILE:LINE`); blank lines skipped."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ClientError(f"{where} is not JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise ClientError(f"{where} is not a JSON object")
            rows.append((where, row))
    return rows


def input_of(row: dict[str, Any], fields: list[str], where: str) -> InputValue:
    """A line's input: its `input`, or the template's fields taken from the line."""
    if "input" in row:
        return row["input"]
    missing = [f for f in fields if f not in row]
    if missing:
        raise ClientError(f"{where} has neither 'input' nor the template's field(s) {missing}")
    return str(row[fields[0]]) if len(fields) == 1 else {f: str(row[f]) for f in fields}


def example_of(row: dict[str, Any], fields: list[str], where: str) -> ExampleIn:
    example: ExampleIn = {"input": input_of(row, fields, where)}
    if row.get("label") is not None:
        example["label"] = row["label"]
    if row.get("id") is not None:
        example["id"] = str(row["id"])
    return example


def _read_inputs(task: Task, path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[InputValue]]:
    """A file's lines and the input of each, as the task's template takes it."""
    fields = template_fields(task["template"])
    rows = read_jsonl(path)
    return rows, [input_of(row, fields, where) for where, row in rows]


def answer_key(value: InputValue, gold: object, options: dict[str, Any]) -> str:
    """What an answer answers: its input, its gold label and the predict options, hashed. A resumed run
    keeps only answers whose key it would write itself."""
    text = json.dumps([value, gold, options], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def macro_f1(pairs: Sequence[tuple[str, str]]) -> float:
    """The mean F1 over every label that occurs as gold or predicted in (gold, predicted) pairs, as
    scikit-learn's `f1_score(average="macro")` counts it."""
    labels = {gold for gold, _ in pairs} | {predicted for _, predicted in pairs}
    scores = []
    for label in labels:
        hits = sum(gold == label == predicted for gold, predicted in pairs)
        misses = sum((gold == label) != (predicted == label) for gold, predicted in pairs)  # false pos. and neg.
        scores.append(2 * hits / (2 * hits + misses))
    return sum(scores) / len(scores) if scores else 0.0


def confusion(pairs: Sequence[tuple[str, str]], labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """{gold: {predicted: count}} over the labels that occur, in the task's order (others after)."""
    seen = {label for pair in pairs for label in pair}
    order = [label for label in labels if label in seen] + sorted(seen - set(labels))
    counts = Counter(pairs)
    golds = {gold for gold, _ in pairs}
    return {gold: {predicted: counts[gold, predicted] for predicted in order} for gold in order if gold in golds}


def _batches(items: list[Any], size: int, start: int = 0) -> Iterator[tuple[int, list[Any]]]:
    for begin in range(start, len(items), size):
        yield begin, items[begin:begin + size]


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _warn(command: str, message: str) -> None:
    print(f"iclserve {command}: {message}", file=sys.stderr)


def _console(stream: Any) -> Console:
    # Markup off: labels and task names are shown as they are, brackets included. Output that is not a
    # terminal is not cut to 80 columns, so that a table's rows stay whole in a pipe.
    return Console(file=stream, width=None if stream.isatty() else 200, markup=False, highlight=False)


def _verbalizer(text: str) -> tuple[str, str]:
    label, sep, words = text.partition("=")
    if not sep or not label or not words:
        raise argparse.ArgumentTypeError(f"{text!r} is not LABEL=WORDS")
    return label, words


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _demos(text: str) -> str | int:
    if text == "auto":
        return text
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{value}: demos is "auto" or a count of 0 or more')
    return value


def _follow(client: Client, job_id: str, desc: str, args: argparse.Namespace) -> Job:
    """Wait for a job to end behind a progress bar; its final state (``JobFailed`` if it failed)."""
    bar, update = _progress_bar(desc, args.quiet)
    with bar:
        return client.wait_for_job(job_id, poll_s=args.poll, on_progress=update)


def _progress_bar(desc: str, quiet: bool) -> tuple[tqdm, Any]:
    bar = tqdm(total=100, unit="%", desc=desc, disable=quiet, bar_format="{l_bar}{bar}| {n:.0f}/{total}% [{elapsed}]")

    def update(fraction: float) -> None:
        bar.n = round(100 * fraction, 1)
        bar.refresh()

    return bar, update


# --- tasks ------------------------------------------------------------------------------------------------


def cmd_task_create(client: Client, args: argparse.Namespace) -> int:
    verbalizers = dict(args.verbalizer) if args.verbalizer else None
    _print(client.create_task(args.name, args.labels, args.template.replace("\\n", "\n"), verbalizers,
                              args.instruction, args.separator, args.default_k))
    return 0


def _labels_text(labels: list[str], shown: int = 6) -> str:
    if len(labels) <= shown:
        return ", ".join(labels)
    return ", ".join(labels[:shown - 1]) + f", … ({len(labels)} labels)"


def _fit_text(fit: FitState) -> str:
    if fit["state"] == "running":
        return f"running ({fit['job_id']})"
    if fit["state"] == "fitted" and fit.get("fit_id"):
        return f"fitted ({fit['fit_id']})"
    return fit["state"]


def cmd_task_list(client: Client, args: argparse.Namespace) -> int:
    tasks = client.list_tasks()
    if args.json:
        _print({"tasks": tasks})
    elif not tasks:
        print(f"no tasks yet; create one with `{CREATE_HINT}`")
    else:
        table = Table("name", "labels", "examples", "labeled", "fit", box=box.SIMPLE_HEAD)
        for task in tasks:
            table.add_row(task["name"], _labels_text(task["labels"]), str(task["n_examples"]),
                          str(task["n_labeled"]), _fit_text(task["fit"]))
        _console(sys.stdout).print(table)
    return 0


def cmd_task_show(client: Client, args: argparse.Namespace) -> int:
    _print(client.get_task(args.name))
    return 0


def cmd_task_delete(client: Client, args: argparse.Namespace) -> int:
    task = client.get_task(args.name)
    client.delete_task(args.name)
    _print({"deleted": task["name"], "n_examples": task["n_examples"], "n_labeled": task["n_labeled"],
            "fit_id": task["fit"].get("fit_id")})
    return 0


# --- examples ---------------------------------------------------------------------------------------------


def cmd_examples_add(client: Client, args: argparse.Namespace) -> int:
    task = client.get_task(args.task)
    fields = template_fields(task["template"])
    rows = read_jsonl(args.file)[args.skip:]
    examples = [example_of(row, fields, where) for where, row in rows]
    summary = {"added": 0, "n_examples": task["n_examples"], "n_labeled": task["n_labeled"]}
    with tqdm(total=len(examples), unit="example", desc=f"adding to {args.task}", disable=args.quiet) as bar:
        for begin, batch in _batches(examples, args.batch):
            try:
                added = client.add_examples(args.task, batch)
            except ClientError as exc:
                done = args.skip + begin
                raise ClientError(f"{exc} (the batch from {rows[begin][0]} on; the {done} examples before it "
                                  f"are stored: add the rest with --skip {done})") from exc
            summary = {**added, "added": summary["added"] + added["added"]}
            bar.update(len(batch))
    _print(summary)
    return 0


# --- predict ----------------------------------------------------------------------------------------------


def _answered(output: Path) -> list[dict[str, Any]]:
    """The answers an earlier run already wrote (from a torn or foreign line on, nothing is kept)."""
    if not output.exists():
        return []
    answers = []
    for line in output.read_text(encoding="utf-8").splitlines():
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(answer, dict):
            break
        answers.append(answer)
    return answers


def _fit_matters(options: dict[str, Any]) -> bool:
    """Whether the task's fit may take part in answers with these options: a fixed count with a fixed
    calibration other than "batch" (whose lone input takes the fit's estimate) never uses it."""
    return options["demos"] in (None, "auto") or options["calibration"] in (None, "auto", "batch")


def _wait_fit(client: Client, task: Task, options: dict[str, Any], args: argparse.Namespace) -> None:
    """Say that a fit of the task is running and, with --wait-fit, wait for it to end."""
    fit = task["fit"]
    if fit["state"] != "running" or fit["job_id"] is None:
        return
    job_id = fit["job_id"]
    if not args.wait_fit:
        if _fit_matters(options):
            _warn("predict", f"a fit of task '{task['name']}' is running (job {job_id}): answers made once it "
                             "ends follow the new fit, those before it the present policy; --wait-fit waits for "
                             "it to end first")
        return
    try:
        _follow(client, job_id, f"{task['name']}: waiting for the fit ({job_id})", args)
    except JobFailed as exc:  # the answers are still wanted: the task's present fit or defaults give them
        _warn("predict", f"the fit {exc}; predicting with the task's present fit, if any")


def _answer_line(index: int, key: str, row: dict[str, Any], gold: str | None, prediction: Prediction,
                 demos_policy: str | None) -> dict[str, Any]:
    line = {"index": index, "key": key, "label": prediction["label"], "probs": prediction["probs"],
            "k": prediction["k"], "prompt_tokens": prediction["prompt_tokens"],
            "calibration": prediction["calibration"], "demos_policy": demos_policy,
            "fit_id": prediction.get("fit_id")}
    if row.get("id") is not None:
        line["id"] = row["id"]
    if gold is not None:
        line["gold"] = gold
    return line


def _resume(args: argparse.Namespace, count: int, keys: list[str]) -> int:
    """Keep what an earlier run into the output answered of these lines; how many that is."""
    done = _answered(args.output)
    if len(done) > count or any(a.get("index") != i or a.get("key") != keys[i] for i, a in enumerate(done)):
        raise ClientError(f"{args.output} holds answers to other inputs or options than these lines of "
                          f"{args.file}; remove it or choose another --output")
    args.output.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in done), encoding="utf-8")
    return len(done)


def _value_of(answer: dict[str, Any], field: str) -> str:
    if field not in answer:
        return "not recorded"
    return "null" if answer[field] is None else str(answer[field])


def _counted(counts: Counter[str]) -> str:
    return ", ".join(f"{value} ({n} line{'' if n == 1 else 's'})" for value, n in counts.most_common())


def mixed_policies(answers: list[dict[str, Any]]) -> list[str]:
    """What the answers do not share: `fit_id` or `demos_policy` with more than one value, or a count
    answered with more than one calibration (the fit's calibration may differ from count to count)."""
    mixed = []
    for field in ("fit_id", "demos_policy"):
        counts = Counter(_value_of(answer, field) for answer in answers)
        if len(counts) > 1:
            mixed.append(f"{field}: {_counted(counts)}")
    by_count: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for answer in answers:
        by_count[_value_of(answer, "k")][_value_of(answer, "calibration")] += 1
    for k, counts in sorted(by_count.items()):
        if len(counts) > 1:
            mixed.append(f"calibration of the answers with k={k}: {_counted(counts)}")
    return mixed


def _warn_mixed(output: Path, answers: list[dict[str, Any]]) -> None:
    mixed = mixed_policies(answers)
    if not mixed:
        return
    why = ("Lines written by an older iclserve do not record how they were made, so they cannot be told apart"
           if any("not recorded" in m for m in mixed) else
           "A fit ended or was replaced between them (the automatic fit finishing halfway through, say)")
    _warn("predict", f"warning: the answers in {output} were not all made the same way ({'; '.join(mixed)}). "
                     f"{why}: for answers from one fit, rerun into a new --output (with --wait-fit while a fit runs)")


def _grade(answers: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    pairs = [(str(a["gold"]), str(a["label"])) for a in answers if "gold" in a]
    if not pairs:
        return {}
    return {"accuracy": sum(gold == predicted for gold, predicted in pairs) / len(pairs),
            "macro_f1": macro_f1(pairs), "graded": len(pairs), "confusion": confusion(pairs, labels)}


def _summary(answers: list[dict[str, Any]], labels: list[str], output: Path, predicted: int,
             elapsed: float) -> dict[str, Any]:
    tokens = sum(a["prompt_tokens"] for a in answers)
    elapsed = round(elapsed, 4)  # the rate is of the time shown
    summary: dict[str, Any] = {"answers": len(answers), "output": str(output),
                               "prompt_tokens_per_input": tokens / max(len(answers), 1), "predicted": predicted,
                               "elapsed_s": elapsed, "inputs_per_s": round(predicted / elapsed, 3) if elapsed else None}
    return {**summary, **_grade(answers, labels)}


def _show_summary(summary: dict[str, Any]) -> None:
    """The summary for a person, on stderr: figures, then the confusion matrix (rows gold, columns
    predicted)."""
    figures = Table(title=f"{summary['answers']} answers in {summary['output']}", show_header=False,
                    box=box.SIMPLE)
    rate = summary["inputs_per_s"]
    figures.add_row("elapsed", f"{summary['elapsed_s']:.1f} s ({summary['predicted']} inputs predicted)")
    figures.add_row("inputs/s", "-" if rate is None else f"{rate:.1f}")
    figures.add_row("prompt tokens per input", f"{summary['prompt_tokens_per_input']:.1f}")
    if "accuracy" in summary:
        figures.add_row("accuracy", f"{summary['accuracy']:.4f} ({summary['graded']} graded)")
        figures.add_row("macro-F1", f"{summary['macro_f1']:.4f}")
    console = _console(sys.stderr)
    console.print(figures)
    if "confusion" in summary:
        console.print(_confusion_table(summary["confusion"]))


def _confusion_table(matrix: dict[str, dict[str, int]]) -> Table:
    columns = list(next(iter(matrix.values())))
    table = Table("gold \\ predicted", *columns, title="confusion", box=box.SIMPLE_HEAD)
    for gold, row in matrix.items():
        table.add_row(gold, *(str(row[predicted]) for predicted in columns))
    return table


def _predict_options(args: argparse.Namespace) -> dict[str, Any]:
    # The keys of resumable answers hash these: a new option changes every key, so decision joins only when given.
    options = {"demos": args.demos, "selection": args.selection, "calibration": args.calibration, "seed": args.seed}
    return options | ({"decision": args.decision} if args.decision else {})


def cmd_predict(client: Client, args: argparse.Namespace) -> int:
    task = client.get_task(args.task)
    rows, inputs = _read_inputs(task, args.file)
    golds = [None if row.get("label") is None else str(row["label"]) for _, row in rows]
    options = _predict_options(args)
    keys = [answer_key(value, gold, options) for value, gold in zip(inputs, golds, strict=True)]
    done = _resume(args, len(rows), keys)
    _wait_fit(client, task, options, args)
    began = time.monotonic()
    with args.output.open("a", encoding="utf-8") as out, \
            tqdm(total=len(inputs), initial=done, unit="input", desc=f"predicting {args.task}",
                 disable=args.quiet) as bar:
        for begin, batch in _batches(inputs, args.batch, start=done):
            answer = client.predict(args.task, batch, **options)
            for offset, prediction in enumerate(answer["predictions"]):
                i = begin + offset
                line = _answer_line(i, keys[i], rows[i][1], golds[i], prediction, answer.get("demos_policy"))
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(batch))
    answers = _answered(args.output)
    summary = _summary(answers, task["labels"], args.output, len(inputs) - done, time.monotonic() - began)
    _warn_mixed(args.output, answers)
    _print(summary)
    if not args.quiet:
        _show_summary(summary)
    return 0


# --- batch jobs -------------------------------------------------------------------------------------------


def _batch_job(client: Client, job_id: str) -> Job:
    job = client.get_job(job_id)
    if job["kind"] != "batch":
        raise ClientError(f"job {job_id} is a {job['kind']} job, not a batch job; see it with "
                          f"`iclserve jobs show {job_id}`")
    return job


def _follow_batch(client: Client, job_id: str, args: argparse.Namespace) -> int:
    try:
        job = _follow(client, job_id, f"batch {job_id}", args)
    except KeyboardInterrupt:  # only the following stops: the job is the service's
        _warn("batch submit", f"stopped following job {job_id}, which goes on: `iclserve batch status {job_id}` "
                              f"follows it, `iclserve jobs cancel {job_id}` stops it")
        return 130
    _print(job)
    if job["status"] == "cancelled":
        _warn("batch submit", f"job {job_id} was cancelled; `iclserve batch download {job_id} --output FILE` "
                              "gets what it classified")
        return 1
    return 0


def cmd_batch_submit(client: Client, args: argparse.Namespace) -> int:
    task = client.get_task(args.task)
    rows, inputs = _read_inputs(task, args.file)
    ids = [None if row.get("id") is None else str(row["id"]) for _, row in rows]
    job_id = client.create_batch(args.task, inputs, ids if any(i is not None for i in ids) else None,
                                 **_predict_options(args))
    if args.wait:
        return _follow_batch(client, job_id, args)
    _print({"job_id": job_id, "task": args.task, "inputs": len(inputs)})
    if not args.quiet:
        _warn("batch submit", f"follow it with `iclserve batch status {job_id}`; get its results with "
                              f"`iclserve batch download {job_id} --output FILE`")
    return 0


def cmd_batch_status(client: Client, args: argparse.Namespace) -> int:
    _print(_batch_job(client, args.job_id))
    return 0


def _without_nulls(value: Any) -> Any:
    """As the service writes JSON Lines results: null fields left out."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    return value


def _pending_text(job: Job, pending: int) -> str:
    if job["status"] in ("queued", "running"):
        return (f"job {job['job_id']} is {job['status']}: {pending} results are still pending; download again "
                "once it ends")
    return f"job {job['job_id']} is {job['status']}: {pending} of its inputs were never classified"


def cmd_batch_download(client: Client, args: argparse.Namespace) -> int:
    job = _batch_job(client, args.job_id)
    total = job["batch"]["total"] if job.get("batch") else None
    counts: Counter[str] = Counter()
    with args.output.open("w", encoding="utf-8") as out, \
            tqdm(total=total, unit="result", desc=f"downloading {args.job_id}", disable=args.quiet) as bar:
        for item in client.iter_batch_results(args.job_id):
            out.write(json.dumps(_without_nulls(item), ensure_ascii=False) + "\n")
            counts[item["status"]] += 1
            bar.update(1)
    if counts["pending"]:
        _warn("batch download", _pending_text(job, counts["pending"]))
    _print({"job_id": args.job_id, "status": job["status"], "output": str(args.output),
            "results": sum(counts.values()), "succeeded": counts["succeeded"], "failed": counts["failed"],
            "pending": counts["pending"]})
    return 0


# --- jobs -------------------------------------------------------------------------------------------------


def _progress_text(job: Job) -> str:
    batch = job.get("batch")
    if batch:
        errors = f", {batch['errors']} errors" if batch["errors"] else ""
        return f"{batch['done']}/{batch['total']}{errors}"
    return f"{job['progress']:.0%}"


def _when(stamp: str | None) -> str:
    return "" if stamp is None else stamp[:19].replace("T", " ")


def _page_caption(shown: int, total: int, offset: int) -> str:
    caption = f"jobs {offset + 1}–{offset + shown} of {total}, newest first"
    return caption + (f"; next page: --offset {offset + shown}" if offset + shown < total else "")


def cmd_jobs_list(client: Client, args: argparse.Namespace) -> int:
    page = client.list_jobs(args.task, args.kind, args.status, args.limit, args.offset)
    if args.json:
        _print(page)
    elif not page["jobs"]:
        print(f"no jobs on this page ({page['total']} match)" if page["total"] else "no jobs match")
    else:
        table = Table("job", "kind", "task", "status", "progress", "created (UTC)", "updated (UTC)",
                      box=box.SIMPLE_HEAD, caption=_page_caption(len(page["jobs"]), page["total"], args.offset))
        for job in page["jobs"]:
            table.add_row(job["job_id"], job["kind"], job.get("task") or "", job["status"], _progress_text(job),
                          _when(job.get("created_at")), _when(job.get("updated_at")))
        _console(sys.stdout).print(table)
    return 0


def cmd_jobs_show(client: Client, args: argparse.Namespace) -> int:
    _print(client.get_job(args.job_id))
    return 0


def cmd_jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    _print(client.cancel_job(args.job_id))
    return 0


def cmd_jobs_delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_job(args.job_id)
    return 0


# --- fit and annotation -----------------------------------------------------------------------------------


def cmd_fit(client: Client, args: argparse.Namespace) -> int:
    """Start the fit and follow it; while another fit of the task runs (the service's own, say), follow that
    one first, then start this one."""
    job_id = None
    while job_id is None:
        try:
            job_id = client.train_controller(args.task, args.candidate_k, args.train_size, args.selection,
                                             args.seed)
        except APIError as exc:
            if exc.code != "fit_running":
                raise
            running = client.get_task(args.task)["fit"]["job_id"]
            if running is None:  # it ended between the refusal and the look: ask again
                continue
            with contextlib.suppress(JobFailed):  # that one failed: this one is still wanted
                _follow(client, running, f"{args.task}: waiting for the fit already running ({running})", args)
    _print(_follow(client, job_id, f"fitting {args.task} ({job_id})", args)["result"])
    return 0


def cmd_annotate(client: Client, args: argparse.Namespace) -> int:
    bar, update = _progress_bar(f"choosing what to label in {args.task}", args.quiet)
    with bar:
        plan = client.annotation_plan(args.task, args.budget, args.method, args.seed, on_progress=update)
        update(1.0)
    _print(plan)
    return 0


# --- the parser -------------------------------------------------------------------------------------------


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    # The examples keep their lines; every command's help stays on its name's line.
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _client_command(parent: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    sub = parent.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
    sub.add_argument("--url", help="the service (default: ICL_URL, else http://127.0.0.1:8000)")
    sub.add_argument("--api-key", help="its bearer key (default: ICL_API_KEY)")
    sub.add_argument("--quiet", action="store_true", help="no progress bar and no human summary")
    return sub


def _group(commands: Any, name: str, help_text: str) -> Any:
    group = commands.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
    return group.add_subparsers(title="actions", dest="action", required=True, metavar="ACTION")


def _add_predict_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--demos", type=_demos, help='demonstrations per input: "auto" (the default: the task\'s fit '
                     "or default count) or a count")
    sub.add_argument("--selection", choices=SELECTIONS, help="how demonstrations are chosen (default: knn)")
    sub.add_argument("--calibration", choices=CALIBRATIONS, help="how label bias is corrected (default: auto)")
    sub.add_argument("--seed", type=int, help="seed of random selection and of domain calibration (default: 0)")
    sub.add_argument("--decision", choices=DECISIONS, help='who decides each label (default: auto, the fit\'s '
                     'choice): "tokens", the model\'s label tokens; "head", the embedding head; "hidden", the '
                     "hidden-state head")


def _add_task_commands(commands: Any) -> None:
    task = _group(commands, "task", "create, list, show and delete tasks")
    create = _client_command(task, "create", "create a task")
    create.add_argument("name", help="the task's name: lower-case letters, digits, - and _")
    create.add_argument("--labels", nargs="+", required=True, help="its labels")
    create.add_argument("--template", required=True, help="e.g. 'Input: {text}\\nLabel: {label}' (\\n: a newline)")
    create.add_argument("--verbalizer", action="append", type=_verbalizer, metavar="LABEL=WORDS",
                        help="the words the model says for a label; repeat for each label")
    create.add_argument("--instruction", help="put once before the demonstrations")
    create.add_argument("--separator", help="between demonstrations (default: a blank line)")
    create.add_argument("--default-k", type=int, help="demonstrations per input until the task is fitted")
    create.set_defaults(run=cmd_task_create)
    listing = _client_command(task, "list", "list the tasks: labels, examples and fit state")
    listing.add_argument("--json", action="store_true", help="the tasks as the API gives them, instead of a table")
    listing.set_defaults(run=cmd_task_list)
    show = _client_command(task, "show", "show a task as JSON")
    show.add_argument("name", help="the task")
    show.set_defaults(run=cmd_task_show)
    delete = _client_command(task, "delete", "delete a task with its examples and its fit (asks nothing)")
    delete.add_argument("name", help="the task")
    delete.set_defaults(run=cmd_task_delete)


def _add_examples_commands(commands: Any) -> None:
    examples = _group(commands, "examples", "add examples to a task's pool")
    add = _client_command(examples, "add", "add the examples of a JSON Lines file")
    add.add_argument("file", type=Path, help="JSON Lines, one example a line (no label: an unlabeled example)")
    add.add_argument("--task", required=True, help="the task to add them to")
    add.add_argument("--batch", type=_positive, default=1000, help="examples per request")
    add.add_argument("--skip", type=int, default=0, help="skip the file's first N examples (added already)")
    add.set_defaults(run=cmd_examples_add)


def _add_predict_command(commands: Any) -> None:
    predict = _client_command(commands, "predict", "classify every line of a JSON Lines file")
    predict.add_argument("file", type=Path, help="JSON Lines, one input a line (a label there grades the answer)")
    predict.add_argument("--task", required=True, help="the task to classify with")
    predict.add_argument("--output", type=Path, required=True, help="answers, one line each; a rerun resumes it")
    predict.add_argument("--batch", type=_positive, default=32, help="inputs per request")
    _add_predict_options(predict)
    predict.add_argument("--wait-fit", action="store_true", help="when a fit of the task is running, wait for it "
                         "to end first, so that every answer comes from one fit")
    predict.add_argument("--poll", type=float, default=1.0, help="seconds between checks of a running fit")
    predict.set_defaults(run=cmd_predict)


def _add_batch_commands(commands: Any) -> None:
    batch = _group(commands, "batch", "classify large files in a background job")
    submit = _client_command(batch, "submit", "start a batch job over every line of a JSON Lines file")
    submit.add_argument("file", type=Path, help="lines like predict's; a line's id is echoed with its result")
    submit.add_argument("--task", required=True, help="the task to classify with")
    _add_predict_options(submit)
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    submit.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")
    submit.set_defaults(run=cmd_batch_submit)
    status = _client_command(batch, "status", "show a batch job with its progress")
    status.add_argument("job_id", help="the batch job")
    status.set_defaults(run=cmd_batch_status)
    download = _client_command(batch, "download", "write a batch job's results as JSON Lines")
    download.add_argument("job_id", help="the batch job")
    download.add_argument("--output", type=Path, required=True, help="the file to write, one result a line")
    download.set_defaults(run=cmd_batch_download)


def _add_jobs_commands(commands: Any) -> None:
    jobs = _group(commands, "jobs", "list, show, cancel and delete background jobs")
    listing = _client_command(jobs, "list", "list jobs, newest first")
    listing.add_argument("--task", help="only this task's jobs")
    listing.add_argument("--kind", choices=JOB_KINDS, help="only jobs of this kind")
    listing.add_argument("--status", choices=JOB_STATUSES, help="only jobs in this status")
    listing.add_argument("--limit", type=_positive, default=20, help="jobs on the page, at most 100 (default: 20)")
    listing.add_argument("--offset", type=int, default=0, help="jobs to skip (default: 0)")
    listing.add_argument("--json", action="store_true", help="the page as the API gives it, instead of a table")
    listing.set_defaults(run=cmd_jobs_list)
    show = _client_command(jobs, "show", "show a job as JSON")
    show.add_argument("job_id", help="the job")
    show.set_defaults(run=cmd_jobs_show)
    cancel = _client_command(jobs, "cancel", "cancel a batch job (other jobs cannot be cancelled)")
    cancel.add_argument("job_id", help="the batch job")
    cancel.set_defaults(run=cmd_jobs_cancel)
    remove = _client_command(jobs, "delete", "delete a finished job and a batch job's inputs and results")
    remove.add_argument("job_id", help="the job")
    remove.set_defaults(run=cmd_jobs_delete)


def _add_fit_and_annotate_commands(commands: Any) -> None:
    fit = _client_command(commands, "fit", "train the task's meta-controller and follow the job")
    fit.add_argument("--task", required=True, help="the task to fit")
    fit.add_argument("--candidate-k", type=int, nargs="+", help="the counts to choose among")
    fit.add_argument("--train-size", type=int, help="held-back examples to fit on")
    fit.add_argument("--selection", choices=SELECTIONS, help="the demonstrations it is trained with")
    fit.add_argument("--seed", type=int, help="which examples are held back")
    fit.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")
    fit.set_defaults(run=cmd_fit)
    annotate = _client_command(commands, "annotate", "choose which unlabeled examples to label first")
    annotate.add_argument("--task", required=True, help="the task whose pool to choose from")
    annotate.add_argument("--budget", type=int, required=True, help="how many examples to choose")
    annotate.add_argument("--method", choices=["votek", "ideal", "random", "votek_two_stage"],
                          help="how to choose (default: votek)")
    annotate.add_argument("--seed", type=int, help="seed of the methods that draw")
    annotate.set_defaults(run=cmd_annotate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclserve", description=__doc__, formatter_class=_help_formatter)
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    add_server_commands(commands)
    _add_task_commands(commands)
    _add_examples_commands(commands)
    _add_predict_command(commands)
    _add_batch_commands(commands)
    _add_jobs_commands(commands)
    _add_fit_and_annotate_commands(commands)
    return parser


def _explain(exc: Exception, args: argparse.Namespace) -> str:
    """The error for a person at the command line: an unknown task says how to create one here (the
    service's own message names the HTTP route)."""
    if isinstance(exc, APIError) and exc.code == "task_not_found":
        name = getattr(args, "task", None) or getattr(args, "name", None) or "NAME"
        return (f"task '{name}' does not exist ({exc.status} {exc.code}); create it with "
                f"`{CREATE_HINT.replace('NAME', name, 1)}`, or see the tasks with `iclserve task list`")
    return str(exc)


def main(argv: list[str] | None = None, http: Any = None) -> int:
    """Run a command; `http`: an httpx client for the client commands to send through (tests)."""
    args = _parser().parse_args(argv)
    if args.command in SERVER_COMMANDS:
        return run_server_command(args)
    try:
        with Client(args.url, args.api_key, http=http) as client:
            return args.run(client, args)
    except (ClientError, OSError, UnicodeDecodeError) as exc:
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        print(f"iclserve {command}: {_explain(exc, args)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
