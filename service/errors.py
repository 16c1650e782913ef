"""One error envelope for every 4xx/5xx: ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape)."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error a client should see, with its status, machine-readable code and the offending parameter."""

    def __init__(
        self, status: int, message: str, code: str, param: str | None = None,
        type: str = "invalid_request_error", headers: dict[str, str] | None = None,  # noqa: A002
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type
        self.headers = headers


def task_not_found(name: str) -> APIError:
    return APIError(404, f"task '{name}' does not exist; create it with POST /v1/tasks", "task_not_found", "name")


def envelope(status: int, message: str, code: str, param: str | None = None,
             type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> JSONResponse:  # noqa: A002
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(status_code=status, content=body, headers=headers)


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|[a-z_-]+\[.*\]|[a-z]+-[a-z-]+.*)$")


def loc_to_param(loc: tuple) -> str | None:
    """("body", "inputs", 0, "str") -> "inputs[0]": field names and indices, without pydantic's union tags."""
    parts: list[str] = []
    for item in loc[1:] if loc and loc[0] in ("body", "query", "path") else loc:
        if isinstance(item, str) and _TYPE_TAG.match(item):
            break
        parts.append(str(item))
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def validation_message(errors: list, prefix: str = "") -> tuple[str, str | None]:
    """pydantic's errors as one message naming the first offending field (``prefix`` before it, e.g. the line
    of a JSON Lines body), and that field as the envelope's ``param``."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = loc_to_param(tuple(first.get("loc", ())))
    where = f"{prefix}{param}" if param else prefix.rstrip(": ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where + ': ' if where else ''}{first.get('msg')}{more}", (where or None)


BODY_PARSE_FAILED = "There was an error parsing the body"


def allowed_methods(request: Request) -> list[str]:
    """Every method the request's path answers to: Starlette's own 405 names only the first route that
    matched the path, though several routes (GET and POST of /v1/tasks) may share it."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:
            methods |= set(route_methods)
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return envelope(exc.status, exc.message, exc.code, exc.param, exc.type, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
        if first.get("type") == "json_invalid":
            return envelope(400, f"request body is not valid JSON: {first.get('msg')}", "invalid_json")
        message, param = validation_message(errors)
        return envelope(400, message, "invalid_value", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "error"
        message = exc.detail if isinstance(exc.detail, str) else phrase
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, phrase.lower().replace(" ", "_"))
        if exc.status_code == 400 and message == BODY_PARSE_FAILED:
            # FastAPI's answer when parsing fails beyond a JSON syntax error: Python's parser gives up on JSON
            # nested some thousand levels deep (RecursionError) before any work starts.
            message, code = ("request body could not be parsed as JSON (nested too deeply?); the API's bodies "
                             "nest a few levels at most"), "invalid_json"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return envelope(exc.status_code, message, code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return envelope(500, "internal error; see the server log", "internal_error", type="server_error")
