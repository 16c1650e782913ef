"""docs/api.md names every error code and error type the server can answer, and no other, and its statuses
line every status an operation declares. The codes and types are read from the service's source (each error
it builds: ``APIError``, ``envelope`` and a batch item's ``_item_error``, with their defaults, and the codes of
the framework's own errors), never written down here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.service.support import make_client

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
SERVICE = ROOT / "service"
# The error builders, and where each takes its code and type (keyword, or position).
BUILDERS = {"APIError": {"code": 2, "type": 4}, "envelope": {"code": 2, "type": 4}, "_item_error": {"code": 1}}


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _argument(call: ast.Call, name: str, index: int) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return call.args[index] if index < len(call.args) else None


def _table_values(tree: ast.Module) -> dict[str, set[str]]:
    """Module-level tables of codes (``*_CODES = {status: code}``), by name."""
    tables: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.endswith("_CODES"):
                    tables[target.id] = {v.value for v in node.value.values if isinstance(v, ast.Constant)}
    return tables


def _assigned(tree: ast.Module, name: str) -> list[ast.expr]:
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)]


def _resolved(argument: ast.expr, tree: ast.Module, tables: dict[str, set[str]], where: str) -> set[str]:
    """The strings an argument can be: its literals; a variable's, from what is assigned to it (literals or
    a table's codes); nothing new for another error's ``.code`` or ``.type``, which its builder states."""
    if isinstance(argument, ast.Attribute) and argument.attr in ("code", "type"):
        return set()
    if isinstance(argument, ast.Name):
        values = _assigned(tree, argument.id)
        assert values, f"{where}: '{argument.id}' is never assigned"
        found: set[str] = set()
        for value in values:
            used = {n.id for n in ast.walk(value) if isinstance(n, ast.Name) and n.id in tables}
            assert used or _strings(value), f"{where}: '{argument.id}' comes from neither literals nor a table"
            found |= _strings(value) | {code for table in used for code in tables[table]}
        return found
    found = _strings(argument)
    assert found, f"{where}: an error {ast.unparse(argument)} the test cannot read"
    return found


def _defaults(node: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, set[str]]:
    """A builder's default code and type (APIError's type is invalid_request_error unless given)."""
    args = node.args.args + node.args.kwonlyargs
    defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + node.args.kw_defaults
    out: dict[str, set[str]] = {"code": set(), "type": set()}
    for arg, default in zip(args, defaults, strict=True):
        if arg.arg in out and isinstance(default, ast.Constant) and isinstance(default.value, str):
            out[arg.arg].add(default.value)
    return out


def answered() -> dict[str, set[str]]:
    """Every code and type the service's source can put in an error: read from its syntax tree."""
    found: dict[str, set[str]] = {"code": set(), "type": set()}
    for path in sorted(SERVICE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        tables = _table_values(tree)
        for table in tables.values():
            found["code"] |= table
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called(node) in BUILDERS:
                for what, index in BUILDERS[_called(node)].items():
                    argument = _argument(node, what, index)
                    if argument is not None:
                        found[what] |= _resolved(argument, tree, tables, f"{path.name}:{node.lineno}")
            elif isinstance(node, ast.ClassDef) and node.name == "APIError":
                init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
                for what, values in _defaults(init).items():
                    found[what] |= values
            elif isinstance(node, ast.FunctionDef) and node.name in BUILDERS:
                for what, values in _defaults(node).items():
                    found[what] |= values
    return found


def _paragraph(doc: str, start: str) -> str:
    """The lines from the one starting with ``start`` to the next blank line."""
    lines = doc.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    end = next((i for i in range(first + 1, len(lines)) if not lines[i].strip()), len(lines))
    return "\n".join(lines[first:end])


def _bullet(doc: str, start: str) -> str:
    """A Conventions bullet: from its line to the next bullet or blank line."""
    lines = doc.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    end = next((i for i in range(first + 1, len(lines)) if lines[i].startswith("- ") or not lines[i].strip()),
               len(lines))
    return "\n".join(lines[first:end])


def documented_codes(doc: str) -> set[str]:
    return set(re.findall(r"`(\w+)`", _paragraph(doc, "Error codes:")))


def documented_types(doc: str) -> set[str]:
    row = next(line for line in doc.split("#### `ErrorBody`", 1)[1].splitlines() if line.startswith("| `type` |"))
    return set(re.findall(r"`(\w+)`", row.split("|")[4]))


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_the_reader_finds_what_the_service_builds():
    """A reader that found nothing would agree with an empty page: check it sees codes of every kind."""
    found = answered()
    assert {"task_not_found", "invalid_value", "not_found", "method_not_allowed", "internal_error", "invalid_line",
            "invalid_admin_key"} <= found["code"]
    assert {"invalid_request_error", "permission_error", "server_error"} <= found["type"]


def test_every_error_code_is_documented_and_none_other(doc):
    found, listed = answered()["code"], documented_codes(doc)
    assert not found - listed, f"codes the server answers that docs/api.md does not list: {sorted(found - listed)}"
    assert not listed - found, f"codes docs/api.md lists that the server never answers: {sorted(listed - found)}"


def test_every_error_type_is_documented_and_none_other(doc):
    found, listed = answered()["type"], documented_types(doc)
    assert not found - listed, f"types the server answers that docs/api.md does not list: {sorted(found - listed)}"
    assert not listed - found, f"types docs/api.md lists that the server never answers: {sorted(listed - found)}"


def test_the_statuses_line_names_every_declared_status(doc, tmp_path):
    with make_client(tmp_path) as client:
        published = client.get("/openapi.json").json()
    declared = {int(status) for ops in published["paths"].values() for op in ops.values()
                for status in op["responses"] if int(status) >= 400}
    named = {int(n) for n in re.findall(r"\b([45]\d\d)\b", _bullet(doc, "- **Statuses.**"))}
    assert declared - named == set(), f"declared but not in the statuses line: {sorted(declared - named)}"
    # Besides: 405, which routing answers for any path, and FastAPI's 422, which the line says is never used.
    assert named - declared == {405, 422}, "the statuses line names statuses no operation declares"
