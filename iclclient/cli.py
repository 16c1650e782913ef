"""iclserve: the command line. The server's commands (``serve``, ``prepare-model``) and the commands that
call a running service through the client:

    iclserve task create movie --labels negative positive --template 'Input: {text}\\nLabel: {label}'
    iclserve examples add --task movie train.jsonl
    iclserve predict --task movie test.jsonl --output answers.jsonl
    iclserve fit --task movie
    iclserve annotate --task movie --budget 18

Files are JSON Lines. A line is an example as the API takes it (``{"input": ..., "label": ..., "id": ...}``)
or a dataset's own row (``{"text": ..., "label": ...}``, ``{"premise": ..., "hypothesis": ..., ...}``), whose
template fields become the input. ``--url`` / ``ICL_URL`` and ``--api-key`` / ``ICL_API_KEY`` say where the
service is.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import string
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from iclclient.client import APIError, Client, ClientError, JobFailed
from iclclient.types import ExampleIn, InputValue, Task
from service.cli import SERVER_COMMANDS, add_server_commands, run_server_command


def template_fields(template: str) -> list[str]:
    """The input fields of a task's template, in order (``{label}`` excluded)."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return list(dict.fromkeys(n for n in names if n != "label"))


def read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The file's objects, each with where it stands (``FILE:LINE``); blank lines skipped."""
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
    """A line's input: its ``input``, or the template's fields taken from the line."""
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


def answer_key(value: InputValue, gold: object, options: dict[str, Any]) -> str:
    """What an answer answers: its input, its gold label and the predict options, hashed. A resumed run
    keeps only answers whose key it would write itself."""
    text = json.dumps([value, gold, options], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _batches(items: list[Any], size: int, start: int = 0) -> Iterator[tuple[int, list[Any]]]:
    for begin in range(start, len(items), size):
        yield begin, items[begin:begin + size]


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


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


def cmd_task_create(client: Client, args: argparse.Namespace) -> int:
    verbalizers = dict(args.verbalizer) if args.verbalizer else None
    _print(client.create_task(args.name, args.labels, args.template.replace("\\n", "\n"), verbalizers,
                              args.instruction, args.separator, args.default_k))
    return 0


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


def cmd_predict(client: Client, args: argparse.Namespace) -> int:
    task: Task = client.get_task(args.task)
    fields = template_fields(task["template"])
    rows = read_jsonl(args.file)
    inputs = [input_of(row, fields, where) for where, row in rows]
    golds = [None if row.get("label") is None else str(row["label"]) for _, row in rows]
    options = {"demos": args.demos, "selection": args.selection, "calibration": args.calibration,
               "seed": args.seed}
    keys = [answer_key(value, gold, options) for value, gold in zip(inputs, golds, strict=True)]
    done = _answered(args.output)
    if len(done) > len(rows) or any(a.get("index") != i or a.get("key") != keys[i] for i, a in enumerate(done)):
        raise ClientError(f"{args.output} holds answers to other inputs or options than these lines of "
                          f"{args.file}; remove it or choose another --output")
    args.output.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in done), encoding="utf-8")
    with args.output.open("a", encoding="utf-8") as out, \
            tqdm(total=len(inputs), initial=len(done), unit="input", desc=f"predicting {args.task}",
                 disable=args.quiet) as bar:
        for begin, batch in _batches(inputs, args.batch, start=len(done)):
            answer = client.predict(args.task, batch, **options)
            for offset, prediction in enumerate(answer["predictions"]):
                i = begin + offset
                line = {"index": i, "key": keys[i], "label": prediction["label"], "probs": prediction["probs"],
                        "k": prediction["k"], "prompt_tokens": prediction["prompt_tokens"]}
                if rows[i][1].get("id") is not None:
                    line["id"] = rows[i][1]["id"]
                if golds[i] is not None:
                    line["gold"] = golds[i]
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(batch))
    answers = _answered(args.output)
    graded = [a for a in answers if "gold" in a]
    tokens = sum(a["prompt_tokens"] for a in answers)
    summary: dict[str, Any] = {"answers": len(answers), "output": str(args.output),
                               "prompt_tokens_per_input": tokens / max(len(answers), 1)}
    if graded:
        summary["accuracy"] = sum(a["label"] == a["gold"] for a in graded) / len(graded)
        summary["graded"] = len(graded)
    _print(summary)
    return 0


def _progress_bar(desc: str, quiet: bool) -> tuple[tqdm, Any]:
    bar = tqdm(total=100, unit="%", desc=desc, disable=quiet, bar_format="{l_bar}{bar}| {n:.0f}/{total}% [{elapsed}]")

    def update(fraction: float) -> None:
        bar.n = round(100 * fraction, 1)
        bar.refresh()

    return bar, update


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
            bar, update = _progress_bar(f"{args.task}: waiting for the fit already running ({running})", args.quiet)
            with bar, contextlib.suppress(JobFailed):  # that one failed: this one is still wanted
                client.wait_for_job(running, poll_s=args.poll, on_progress=update)
    bar, update = _progress_bar(f"fitting {args.task} ({job_id})", args.quiet)
    with bar:
        job = client.wait_for_job(job_id, poll_s=args.poll, on_progress=update)
    _print(job["result"])
    return 0


def cmd_annotate(client: Client, args: argparse.Namespace) -> int:
    bar, update = _progress_bar(f"choosing what to label in {args.task}", args.quiet)
    with bar:
        plan = client.annotation_plan(args.task, args.budget, args.method, args.seed, on_progress=update)
        update(1.0)
    _print(plan)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclserve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    add_server_commands(commands)

    def client_command(name: str, help_text: str, parent: Any = commands) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text)
        sub.add_argument("--url", help="the service (default: ICL_URL, else http://127.0.0.1:8000)")
        sub.add_argument("--api-key", help="its bearer key (default: ICL_API_KEY)")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        return sub

    task = commands.add_parser("task", help="tasks").add_subparsers(dest="action", required=True)
    create = client_command("create", "create a task", task)
    create.add_argument("name")
    create.add_argument("--labels", nargs="+", required=True)
    create.add_argument("--template", required=True, help="e.g. 'Input: {text}\\nLabel: {label}' (\\n: a newline)")
    create.add_argument("--verbalizer", action="append", type=_verbalizer, metavar="LABEL=WORDS",
                        help="repeat for each label")
    create.add_argument("--instruction")
    create.add_argument("--separator")
    create.add_argument("--default-k", type=int)
    create.set_defaults(run=cmd_task_create)

    examples = commands.add_parser("examples", help="a task's examples").add_subparsers(dest="action", required=True)
    add = client_command("add", "add the examples of a JSON Lines file", examples)
    add.add_argument("file", type=Path)
    add.add_argument("--task", required=True)
    add.add_argument("--batch", type=_positive, default=1000, help="examples per request")
    add.add_argument("--skip", type=int, default=0, help="skip the file's first N examples (added already)")
    add.set_defaults(run=cmd_examples_add)

    predict = client_command("predict", "classify every line of a JSON Lines file")
    predict.add_argument("file", type=Path)
    predict.add_argument("--task", required=True)
    predict.add_argument("--output", type=Path, required=True, help="answers, one line each; a rerun resumes it")
    predict.add_argument("--batch", type=_positive, default=32, help="inputs per request")
    predict.add_argument("--demos", type=_demos, help='"auto" or a count')
    predict.add_argument("--selection", choices=["knn", "random", "diverse"])
    predict.add_argument("--calibration", choices=["domain", "contextual", "none"])
    predict.add_argument("--seed", type=int)
    predict.set_defaults(run=cmd_predict)

    fit = client_command("fit", "train the task's meta-controller and follow the job")
    fit.add_argument("--task", required=True)
    fit.add_argument("--candidate-k", type=int, nargs="+")
    fit.add_argument("--train-size", type=int)
    fit.add_argument("--selection", choices=["knn", "random", "diverse"])
    fit.add_argument("--seed", type=int)
    fit.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")
    fit.set_defaults(run=cmd_fit)

    annotate = client_command("annotate", "which unlabeled examples to label first")
    annotate.add_argument("--task", required=True)
    annotate.add_argument("--budget", type=int, required=True)
    annotate.add_argument("--method", choices=["votek", "ideal", "random", "votek_two_stage"])
    annotate.add_argument("--seed", type=int)
    annotate.set_defaults(run=cmd_annotate)
    return parser


def main(argv: list[str] | None = None, http: Any = None) -> int:
    """Run a command; ``http``: an httpx client for the client commands to send through (tests)."""
    args = _parser().parse_args(argv)
    if args.command in SERVER_COMMANDS:
        return run_server_command(args)
    try:
        with Client(args.url, args.api_key, http=http) as client:
            return args.run(client, args)
    except (ClientError, OSError, UnicodeDecodeError) as exc:
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        print(f"iclserve {command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
