"""A client's input as a template's fields, checked against the service's size limit (predict and examples)."""

from __future__ import annotations

from controller.templates import PromptTemplate, TemplateError
from service.errors import APIError
from service.protocol import InputValue


def template_input(value: InputValue, template: PromptTemplate, max_chars: int, param: str) -> dict[str, str]:
    """The value as the template's fields; ``param`` names it in errors (``inputs[3]``)."""
    try:
        fields = template.normalize_input(value)
    except TemplateError as exc:
        raise APIError(400, f"{param}: {exc}", "invalid_input", param) from exc
    size = sum(len(v) for v in fields.values())
    if size > max_chars:
        raise APIError(413, f"{param} has {size} characters; the limit is {max_chars}", "input_too_large", param)
    return fields
