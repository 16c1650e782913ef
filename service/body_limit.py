"""The request body limit: 413 in the error envelope, whether the body says its length or not."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import APIError, envelope

BATCH_PATH = re.compile(r"^/v1/tasks/[^/]+/batches/?$")


class BodyLimitMiddleware:
    """413 in the error envelope for bodies over the limit: at once when Content-Length says so, and while
    reading a chunked body that has none (the app then sees a disconnect and its own answer is dropped)."""

    def __init__(self, app: ASGIApp, max_bytes: int, batch_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.batch_max_bytes = batch_max_bytes or max_bytes

    def _error(self, size: str, limit: int) -> APIError:
        return APIError(413, f"request body has {size} bytes; the limit is {limit}", "body_too_large")

    def _limit(self, scope: Scope) -> int:
        """Batch jobs take large files; every other body keeps the ordinary limit."""
        if scope.get("method") == "POST" and BATCH_PATH.match(scope.get("path", "")):
            return self.batch_max_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        length = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > limit:
            error = self._error(length, limit)
            await envelope(error.status, error.message, error.code)(scope, receive, send)
            return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True  # the app sees the client go away; we answer for it
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_large:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large:
            error = self._error(f"more than {limit}", limit)
            await envelope(error.status, error.message, error.code)(scope, receive, send)
