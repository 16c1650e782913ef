"""One error envelope for every 4xx/5xx: ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape)."""

from __future__ import annotations

import email.message
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.validation import SchemaView, validation_message

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


def job_not_found(job_id: str) -> APIError:
    return APIError(404, f"job '{job_id}' does not exist", "job_not_found", "job_id")


def error_response(error: APIError) -> JSONResponse:
    return envelope(error.status, error.message, error.code, error.param, error.type, error.headers)


def envelope(status: int, message: str, code: str, param: str | None = None,
             type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> JSONResponse:  # noqa: A002
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(status_code=status, content=body, headers=headers)


# The codes of the framework's own HTTP errors (routing); any other status takes its class's code.
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}
STATUS_CLASS_CODES = {4: "invalid_value", 5: "internal_error"}
BODY_PARSE_FAILED = "There was an error parsing the body"
NESTED_TOO_DEEPLY = ("request body could not be parsed as JSON: it is nested too deeply; the API's bodies nest a "
                     "few levels at most")


def media_type(content_type: str) -> str:
    """The header's type without its parameters; the header as sent when it names none (``;;;``)."""
    return content_type.split(";", 1)[0].strip().lower() or content_type.strip()


def reads_as_json(content_type: str) -> bool:
    """Whether a body of this Content-Type is JSON: application/json or application/*+json. A body without one
    is not read (FastAPI's strict default): a web page can send such a body to a local service across origins
    without the browser asking first, which a declared JSON body cannot."""
    if not content_type.strip():
        return False
    header = email.message.Message()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def unsupported_media_type(content_type: str, accepted: str) -> APIError:
    sent = f"Content-Type '{media_type(content_type)}' is not accepted" if content_type.strip() else \
        "the body has no Content-Type"
    return APIError(415, f"{sent}; this operation reads {accepted}", "unsupported_media_type")


def not_utf8(exc: UnicodeDecodeError) -> APIError:
    return APIError(400, f"request body is not UTF-8 ({exc.reason} at byte {exc.start}); JSON bodies are UTF-8 "
                    "text", "invalid_json", "body")


def not_json(detail: str) -> APIError:
    return APIError(400, f"request body is not valid JSON: {detail}", "invalid_json", "body")


def too_deep() -> APIError:
    return APIError(400, NESTED_TOO_DEEPLY, "invalid_json", "body")


def empty_body(view: SchemaView) -> APIError:
    return APIError(400, f"the request body is empty: send {view.describe(view.root, root=True)}", "invalid_value",
                    "body")


def operation_schema(request: Request) -> Mapping[str, Any]:
    """The published OpenAPI operation of the route the request matched (empty where there is none)."""
    route = request.scope.get("route")
    path = getattr(route, "path_format", None)
    if path is None:
        return {}
    schema = request.app.openapi()
    return schema.get("paths", {}).get(path, {}).get(request.method.lower(), {})


def published_components(request: Request) -> Mapping[str, Any]:
    """The published schema's objects by name (with this server's limits)."""
    return request.app.openapi().get("components", {}).get("schemas", {})


def request_view(request: Request, source: str) -> SchemaView:
    """The published schema of the request's ``source``: its JSON body, or its query or path parameters (as one
    object, null options left out: a parameter cannot be null)."""
    operation = operation_schema(request)
    components = published_components(request) if operation else {}
    if source == "body":
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        return SchemaView(root=body, components=components)
    properties = {}
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == source:
            schema = dict(parameter.get("schema", {}))
            if "anyOf" in schema:
                schema["anyOf"] = [option for option in schema["anyOf"] if option.get("type") != "null"]
            properties[parameter["name"]] = schema
    return SchemaView(root={"type": "object", "properties": properties} if operation else None, components=components)


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


def body_parse_error(cause: BaseException | None) -> APIError:
    """Why a JSON body could not be parsed, told apart by the parser's error: bytes that are not UTF-8, JSON
    nested some thousand levels deep (Python's parser gives up before any work starts), a syntax error."""
    if isinstance(cause, UnicodeDecodeError):
        return not_utf8(cause)
    if isinstance(cause, RecursionError):
        return too_deep()
    if isinstance(cause, ValueError):
        return not_json(str(cause))
    return APIError(400, f"request body could not be parsed as JSON ({type(cause).__name__}); send a JSON object",
                    "invalid_json", "body")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
        loc = tuple(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            return error_response(not_json(f"{first.get('ctx', {}).get('error', first.get('msg'))}{where}"))
        source = str(loc[0]) if loc else "body"
        same = [{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in errors if tuple(e.get("loc", ()))[:1] == loc[:1]]
        message, param = validation_message(same, request_view(request, source), root=source,
                                            more=len(errors) - len(same))
        return envelope(400, message, "invalid_value", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "error"
        message = exc.detail if isinstance(exc.detail, str) else phrase
        if exc.status_code == 400 and message == BODY_PARSE_FAILED:
            return error_response(body_parse_error(exc.__cause__))
        code = HTTP_ERROR_CODES.get(exc.status_code) or STATUS_CLASS_CODES.get(exc.status_code // 100, "internal_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return envelope(exc.status_code, message, code, headers=headers or None,
                        type="server_error" if exc.status_code >= 500 else "invalid_request_error")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return envelope(500, "internal error; see the server log", "internal_error", type="server_error")
