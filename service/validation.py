"""Pydantic's validation errors as messages a client can act on: one per problem, naming the field, what was
sent and what the field accepts, in the words of the published schema (so with this server's limits). A value
that fits none of a union's options is one problem, not one per option."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from service.protocol import NO_NUL

Schema = Mapping[str, Any]
LocItem = str | int

# What a custom validator says is kept: it already names the rule that was broken.
OWN_WORDS = ("value_error", "assertion_error")
# pydantic's tag of a union's option in an error's loc, where no schema says where the unions are.
_TAG = re.compile(r"^(str|int|float|bool|none|[a-z_-]+\[.*\]|[a-z]+-[a-z-]+.*|[A-Z][A-Za-z0-9]*)$")
_SHOWN_CHARS = 60
_PATTERN_CHARS = 40  # longer patterns (templates, labels) say less than the field's own description


def shown(value: object) -> str:
    """A value as JSON, cut short; ASCII only, so that no input can make the message unwritable."""
    try:
        text = json.dumps(value, default=repr)
    except (RecursionError, TypeError, ValueError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _join_or(parts: Sequence[str]) -> str:
    parts = list(dict.fromkeys(parts))
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"


def _number(value: float) -> str:
    """A bound as it reads: 9007199254740991, not 9.007199254740991e+15; 0.5 as it is."""
    whole = isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e18)
    return str(int(value)) if whole else str(value)


def _range(low: float | None, high: float | None, unit: str = "") -> str:
    """Bounds in words, ``unit`` pluralized: " from 0 to 64", " of 1 to 8 items", " of at least 1 item"."""
    def units(n: float) -> str:
        return f" {unit}{'' if n == 1 else 's'}" if unit else ""

    if low is not None and high is not None:
        lead = " of" if unit else " from"  # "a string of 1 to 256 characters", "an integer from 0 to 64"
        return f"{lead} {_number(low)} to {_number(high)}{units(high)}" if low != high else \
            f" of exactly {_number(low)}{units(low)}"
    if low is not None:
        return f" of at least {_number(low)}{units(low)}"
    if high is not None:
        return f" of at most {_number(high)}{units(high)}"
    return ""


@dataclass(frozen=True)
class SchemaView:
    """A request's published JSON schema: ``root`` the schema of what was validated (a body, a line of one),
    ``components`` the objects its ``$ref``s name."""

    root: Schema | None
    components: Mapping[str, Schema] = field(default_factory=dict)

    @classmethod
    def of_model(cls, model: type[BaseModel]) -> SchemaView:
        """A model's own schema: for callers without the published one (no server limits in it)."""
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        return cls(root=schema, components=schema.get("$defs", {}))

    @classmethod
    def of_component(cls, name: str, components: Mapping[str, Schema]) -> SchemaView:
        return cls(root={"$ref": f"#/components/schemas/{name}"}, components=components)

    def resolve(self, node: Schema | None) -> Schema:
        seen = 0
        while node and "$ref" in node and seen < 16:
            node, seen = self.components.get(str(node["$ref"]).rsplit("/", 1)[-1], {}), seen + 1
        if node and "allOf" in node and len(node["allOf"]) == 1:
            return self.resolve(node["allOf"][0])
        return node or {}

    def options(self, node: Schema | None) -> list[Schema]:
        """A node's alternatives, resolved; the node alone where it has none."""
        resolved = self.resolve(node)
        choices = resolved.get("anyOf") or resolved.get("oneOf")
        return [self.resolve(choice) for choice in choices] if choices else [resolved]

    def is_union(self, node: Schema | None) -> bool:
        """Whether pydantic validates this node as a union, whose errors carry a tag per option: two options
        or more besides null (``X | None`` is none)."""
        return len([o for o in self.options(node) if o.get("type") != "null"]) > 1

    @staticmethod
    def _values(option: Schema) -> Schema | None:
        """What an object takes under any key (a dict's values), or None."""
        patterns = option.get("patternProperties")
        if patterns:
            return next(iter(patterns.values()))
        extra = option.get("additionalProperties")
        return extra if isinstance(extra, Mapping) else None

    def child(self, node: Schema | None, item: LocItem) -> Schema | None:
        """The schema of ``node``'s member ``item`` (a field, a key or an index), in whichever option has it."""
        for option in self.options(node):
            if isinstance(item, int):
                if option.get("type") == "array" and isinstance(option.get("items"), Mapping):
                    return option["items"]
            elif item in option.get("properties", {}):
                return option["properties"][item]
            elif (values := self._values(option)) is not None:
                return values
        return None

    def fields(self, node: Schema | None) -> list[str]:
        """An object's fields, the required ones first."""
        option = next((o for o in self.options(node) if "properties" in o), {})
        required = [name for name in option.get("properties", {}) if name in option.get("required", [])]
        return required + [name for name in option.get("properties", {}) if name not in required]

    def describe(self, node: Schema | None, root: bool = False, depth: int = 0) -> str:
        """What a node accepts, in words: ``"auto" or an integer from 0 to 64``."""
        resolved = self.resolve(node)
        choices = resolved.get("anyOf") or resolved.get("oneOf")
        if choices:  # its literal values first, then the other options: "default", "reference" or an object
            options = [self.resolve(choice) for choice in choices]
            literals = [shown(value) for option in options for value in self._literals(option)]
            others = [self.describe(option, root, depth) for option in options if not self._literals(option)]
            if not others and len(literals) > 1:
                return f"one of {_join_or(literals)}"
            return _join_or(literals + others)
        if "const" in resolved:
            return shown(resolved["const"])
        if "enum" in resolved:
            values = [shown(value) for value in resolved["enum"]]
            return values[0] if len(values) == 1 else f"one of {_join_or(values)}"
        kind = resolved.get("type")
        if kind == "null":
            return "null"
        if kind == "boolean":
            return "true or false"
        if kind in ("integer", "number"):
            return ("an integer" if kind == "integer" else "a number") + self._bounds(resolved)
        if kind == "string":
            return "a string" + self._text_rules(resolved)
        if kind == "array":
            return self._list(resolved, depth)
        if kind == "object" or "properties" in resolved:
            return self._object(resolved, root, depth)
        return "a JSON value"

    @staticmethod
    def _literals(node: Schema) -> list[Any]:
        return [node["const"]] if "const" in node else list(node.get("enum", []))

    def at(self, path: Sequence[LocItem]) -> Schema | None:
        """The schema of the member at ``path`` from the root."""
        node = self.root
        for item in path:
            node = self.child(node, item) if node is not None else None
        return node

    @staticmethod
    def _bounds(node: Schema) -> str:
        if "exclusiveMinimum" in node or "exclusiveMaximum" in node:
            low, high = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
            words = ([f"greater than {_number(low)}"] if low is not None else []) + (
                [f"less than {_number(high)}"] if high is not None else [])
            return " " + " and ".join(words)
        return _range(node.get("minimum"), node.get("maximum"))

    @staticmethod
    def _text_rules(node: Schema) -> str:
        pattern = node.get("pattern")
        shown_pattern = pattern and pattern != NO_NUL and len(pattern) <= _PATTERN_CHARS
        return _range(node.get("minLength"), node.get("maxLength"), "character") + (
            f" matching {pattern}" if shown_pattern else "")

    def _list(self, node: Schema, depth: int) -> str:
        noun = "distinct item" if node.get("uniqueItems") else "item"
        count = _range(node.get("minItems"), node.get("maxItems"), noun)
        each = f", each {self.describe(node['items'], depth=depth + 1)}" if (
            isinstance(node.get("items"), Mapping) and depth < 2) else ""
        return f"a list{count}{each}"

    def _object(self, node: Schema, root: bool, depth: int) -> str:
        what = "a JSON object" if root else "an object"
        names = self.fields(node)
        if names:
            required = set(node.get("required", []))
            listed = ", ".join(f"{name} (required)" if name in required else name for name in names)
            return f"{what} with the field{'s' if len(names) > 1 else ''} {listed}"
        values = self._values(node)
        if values is None or depth >= 2:
            return what
        value = self.resolve(values)
        if value.get("type") == "string":
            rules = self._text_rules(value)
            return f"{what} of strings" + (f" (each{rules})" if rules else "")
        return f"{what} whose values are each {self.describe(value, depth=depth + 1)}"


@dataclass(frozen=True)
class Walked:
    """An error's loc followed through the schema: the field path (names, keys, indices) and its schema;
    ``site``, where there is one, is the path's length at the first union tag not settled yet."""

    path: tuple[LocItem, ...]
    node: Schema | None
    site: int | None = None
    tag: str | None = None
    site_node: Schema | None = None


def walk(view: SchemaView, loc: Iterable[LocItem], settled: int) -> Walked:
    """Follow ``loc``: union tags (the first ``settled`` of them chosen by an earlier pass) pick no path."""
    node: Schema | None = view.root
    path: list[LocItem] = []
    site = tag = site_node = None
    tags, after_tag = 0, False
    for item in loc:
        is_tag = isinstance(item, str) and not after_tag and (
            view.is_union(node) if node is not None else bool(_TAG.match(item)))
        after_tag = is_tag
        if is_tag:
            if tags == settled:
                site, tag, site_node = len(path), str(item), node
            tags += 1
        elif item == "[key]":  # the error is the key's, not its value's
            node = {"type": "string"}
        else:
            path.append(item)
            node = view.child(node, item) if node is not None else None
    return Walked(tuple(path), node, site, tag, site_node)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (the field path) and what pydantic said of it."""

    path: tuple[LocItem, ...]
    node: Schema | None
    errors: tuple[dict[str, Any], ...]

    @property
    def first(self) -> dict[str, Any]:
        return self.errors[0]


def _matched(error: dict[str, Any], walked: Walked) -> bool:
    """Whether a union option's error says the value was of that option's type (it went deeper, or broke a
    rule only a value of that type can break)."""
    deeper = walked.site is not None and len(walked.path) > walked.site
    return deeper or error.get("type") in OWN_WORDS


def problems(errors: Sequence[dict[str, Any]], view: SchemaView, settled: Sequence[int] | None = None) -> list[Problem]:
    """pydantic's errors as problems, in order: a union's options' errors become one problem at the union,
    unless an option took the value in (a model whose field is wrong, a string a validator refused), whose
    own errors are then the problems."""
    counts = list(settled) if settled is not None else [0] * len(errors)
    walked = [walk(view, error.get("loc", ()), n) for error, n in zip(errors, counts, strict=True)]
    groups: dict[tuple, list[int]] = {}
    for i, w in enumerate(walked):
        key = ("union", w.path[:w.site]) if w.site is not None else ("plain", w.path)
        groups.setdefault(key, []).append(i)
    out: list[Problem] = []
    for (kind, path), members in groups.items():
        if kind == "plain":
            out.append(Problem(path, walked[members[0]].node, tuple(errors[i] for i in members)))
            continue
        options: dict[str | None, list[int]] = {}
        for i in members:
            options.setdefault(walked[i].tag, []).append(i)
        chosen = next((group for group in options.values() if any(_matched(errors[i], walked[i]) for i in group)),
                      None)
        if chosen is not None:
            out.extend(problems([errors[i] for i in chosen], view, [counts[i] + 1 for i in chosen]))
        else:
            out.append(Problem(path, walked[members[0]].site_node, tuple(errors[i] for i in members)))
    return out


def param_of(path: Sequence[LocItem]) -> str | None:
    """("inputs", 3, "text") -> "inputs[3].text"."""
    if not path:
        return None
    out = str(path[0])
    for part in path[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _own_words(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "invalid value"))
    for lead in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(lead)
    return message


def not_accepted(view: SchemaView, path: Sequence[LocItem], value: object, name: str | None = None) -> str:
    """The message for a value the member at ``path`` does not accept (``name``: how the client named it)."""
    where = name or param_of(path) or "body"
    node = view.at(path)
    accepts = f": {where} is {view.describe(node)}" if node is not None else ""
    return f"{where}: {shown(value)} is not accepted{accepts}"


def problem_message(problem: Problem, view: SchemaView, where: str, subject: str, parent: Schema | None,
                    root: str) -> str:
    """One problem in words: ``where`` names it in the message, ``subject`` is what "is" what it accepts."""
    first = problem.first
    kind = str(first.get("type", ""))
    if kind == "missing" and not problem.path:
        return f"{where}: empty or null: {subject} is {view.describe(problem.node, root=True)}"
    if kind == "missing":
        return f"{where}: required, and not given: {subject} is {view.describe(problem.node)}"
    if kind == "extra_forbidden":
        owner = f"the {root}" if len(problem.path) == 1 else param_of(problem.path[:-1])
        fields = view.fields(parent)
        takes = f"; {owner}'s fields are {', '.join(fields)}" if fields else ""
        return f"{where}: unknown field{takes}"
    if len(problem.errors) == 1 and kind in OWN_WORDS:
        return f"{where}: {_own_words(first)}"
    if problem.node is None:
        said = " or ".join(dict.fromkeys(_own_words(e).removeprefix("Input should be ") for e in problem.errors))
        return f"{where}: {shown(first.get('input'))} is not accepted: it should be {said}"
    return (f"{where}: {shown(first.get('input'))} is not accepted: {subject} is "
            f"{view.describe(problem.node, root=not problem.path)}")


def validation_message(errors: Sequence[dict[str, Any]], view: SchemaView | None = None, prefix: str = "",
                       root: str = "body", more: int = 0) -> tuple[str, str | None]:
    """The first problem as one message, ``prefix`` before it (the line of a JSON Lines body), and the field
    it names as the envelope's ``param`` (``root`` for the whole of what was validated). ``more``: problems
    found elsewhere, counted in the message."""
    view = view or SchemaView(root=None)
    found = problems(errors, view)
    if not found:
        return f"{prefix}invalid {root}", prefix.rstrip(": ") or root
    problem = found[0]
    param = param_of(problem.path)
    where = f"{prefix}{param}" if param else (prefix.rstrip(": ") or root)
    subject = param or (where if prefix else f"the {root}")
    message = problem_message(problem, view, where, subject, view.at(problem.path[:-1]), root)
    others = len(found) - 1 + more
    return message + (f" (and {others} more problem(s))" if others else ""), where
