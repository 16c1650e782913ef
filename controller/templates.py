"""Prompt templates: validate a task's template and render demonstrations, queries and whole prompts."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LABEL_FIELD = "label"


class TemplateError(ValueError):
    """The template, or an input rendered with it, is not usable."""


@dataclass(frozen=True)
class Demo:
    """One demonstration: its input fields and the verbalizer of its label."""

    inputs: Mapping[str, str]
    verbalizer: str


@dataclass(frozen=True)
class PromptTemplate:
    """A demonstration template such as ``"Input: {text}\\nLabel: {label}"``.

    A query is the template cut just before ``{label}``. Spaces between the cut and ``{label}`` belong to the
    label's continuation (``"Label:"`` + ``" positive"``), so that the prompt ends on a token boundary the way
    the model saw such text in training.
    """

    template: str
    fields: tuple[str, ...]
    instruction: str | None = None
    separator: str = "\n\n"

    @classmethod
    def parse(cls, template: str, instruction: str | None = None, separator: str = "\n\n") -> PromptTemplate:
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise TemplateError(f"template is not a valid format string: {exc}") from exc
        names: list[str] = []
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier():
                raise TemplateError(f"template field {{{name}}} must be a plain name such as {{text}}")
            if spec or conversion:
                raise TemplateError(f"template field {{{name}}} must not carry a format spec or conversion")
            names.append(name)
        if names.count(LABEL_FIELD) != 1:
            raise TemplateError("template must contain {label} exactly once")
        if not template.endswith("{" + LABEL_FIELD + "}") or names[-1] != LABEL_FIELD:
            raise TemplateError("template must end with {label}")
        fields = tuple(dict.fromkeys(n for n in names if n != LABEL_FIELD))
        if not fields:
            raise TemplateError("template needs at least one input field such as {text}")
        return cls(template=template, fields=fields, instruction=instruction or None, separator=separator)

    @property
    def _query_part(self) -> str:
        return self.template[: -len("{" + LABEL_FIELD + "}")]

    @property
    def label_prefix(self) -> str:
        """Whitespace between the query and the label, moved into the label's continuation."""
        query = self._query_part
        return query[len(query.rstrip(" ")) :]

    def normalize_input(self, value: str | Mapping[str, object]) -> dict[str, str]:
        """Turn a client's input (a string, or an object of fields) into this template's fields."""
        if isinstance(value, str):
            if len(self.fields) != 1:
                raise TemplateError(
                    f"input must be an object with fields {list(self.fields)}; a plain string only works "
                    "for templates with one input field"
                )
            return {self.fields[0]: value}
        if not isinstance(value, Mapping):
            raise TemplateError("input must be a string or an object of strings")
        missing = [f for f in self.fields if f not in value]
        if missing:
            raise TemplateError(f"input is missing template field(s) {missing}; the template needs {list(self.fields)}")
        extra = [k for k in value if k not in self.fields]
        if extra:
            raise TemplateError(f"input has field(s) {extra} that the template does not use {list(self.fields)}")
        out: dict[str, str] = {}
        for name in self.fields:
            field = value[name]
            if not isinstance(field, str):
                raise TemplateError(f"input field '{name}' must be a string")
            out[name] = field
        return out

    def render_demo(self, demo: Demo) -> str:
        return self.template.format_map({**demo.inputs, LABEL_FIELD: demo.verbalizer})

    def render_query(self, inputs: Mapping[str, str]) -> str:
        return self._query_part.rstrip(" ").format_map(dict(inputs))

    def continuation(self, verbalizer: str) -> str:
        """The text that follows the prompt when the model says this label."""
        return self.label_prefix + verbalizer

    def build_prompt(self, demos: Sequence[Demo], query: Mapping[str, str]) -> str:
        """Instruction, demonstrations in the given order, then the query, joined by the separator."""
        parts = [self.instruction] if self.instruction else []
        parts.extend(self.render_demo(d) for d in demos)
        parts.append(self.render_query(query))
        return self.separator.join(parts)

    def embedding_text(self, inputs: Mapping[str, str]) -> str:
        """The text embedded for retrieval: the input fields in template order."""
        return "\n".join(inputs[f] for f in self.fields)
