"""What the web app accepts at most: the size of a request body and the value of an id.

Both are checked before a route runs, so before anyone is signed in: a stranger cannot make the
hub buffer a 60 MB body, and a 25-digit id is a 422, not a database overflow and a 500.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from integration_hub.web.errors import error_response

MAX_ID = 2**31 - 1
"""The largest id a hub row can have (PostgreSQL's INTEGER); a path or form naming a larger one
is refused by validation instead of reaching the database."""

TOO_LARGE = "the request is larger than {size} KiB"
"""What a refused body is told (a catalogue shape, so it is translated)."""


class BodyLimit:
    """Refuse request bodies larger than ``max_bytes`` with 413.

    A declared ``Content-Length`` above the limit is answered at once, without reading a byte.
    A body without one (chunked) is counted as the app reads it; the read that crosses the
    limit raises 413, so nothing past it is buffered. Placed inside ``SecurityHeaders`` so the
    refusal carries the same headers as every other answer.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def message(self) -> str:
        return TOO_LARGE.format(size=self.max_bytes // 1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = (Headers(scope=scope).get("content-length") or "").strip()
        # More than 18 digits is above any limit; int() of a huge run of digits is not free.
        if declared.isdigit() and (len(declared) > 18 or int(declared) > self.max_bytes):
            response = error_response(Request(scope), 413, self.message())
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self.message())
            return message

        await self.app(scope, limited, send)
