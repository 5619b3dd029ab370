"""A seeded, fault-injecting HTTP/1.1 reverse proxy for the sandboxes, on 127.0.0.1.

Why: the sandboxes' own fault switches count down a fixed number of faults the test names in
advance. Measuring the "never post twice" promise needs faults the hub cannot anticipate, at the
places that matter for exactly-once delivery: *before* the target commits (nothing stored, a
blind retry is safe), *after* it commits (stored, but the answer is spoiled: 5xx from a gateway,
a reset, a truncated body, a hang, a GraphQL error), and *late* (the target commits only after
the client has given up). A proxy in front of an unchanged sandbox can do all of that over real
sockets, which is what the hub meets in front of a real SaaS API, and it can tell afterwards what
it did (counters) and let a driver kill the client at an exact moment (the write hook).

Decisions are seeded: with the same seed, the n-th write (and, separately, the n-th read) meets
the same fault, whatever the timing. Writes and reads are told apart by a classifier per target
(:func:`xledger_is_write`, :func:`dynamics_is_write`); reads only meet pre-commit faults (a read
commits nothing, so "commit then fail" means nothing for it).

The proxy runs its own asyncio loop in a daemon thread; :meth:`FaultProxy.start` binds a free port
(port 0) and returns once it accepts connections, :meth:`FaultProxy.stop` closes every connection
and cancels whatever it still holds. Client-side requests are parsed by hand (request line,
headers, ``Content-Length`` or chunked body) because the faults need the raw socket: an ASGI
server would answer or close on its own terms. Requests go upstream through ``httpx``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

RESET_BEFORE = "reset_before"
STATUS_503_BEFORE = "status_503_before"
STATUS_429_BEFORE = "status_429_before"
HANG_BEFORE = "hang_before"
COMMIT_THEN_502 = "commit_then_502"
COMMIT_THEN_503 = "commit_then_503"
COMMIT_THEN_504 = "commit_then_504"
COMMIT_THEN_500 = "commit_then_500"
COMMIT_THEN_RESET = "commit_then_reset"
COMMIT_THEN_TRUNCATED = "commit_then_truncated"
COMMIT_THEN_HANG = "commit_then_hang"
COMMIT_THEN_GRAPHQL_ERROR = "commit_then_graphql_error"
LATE_COMMIT = "late_commit"

PRE_COMMIT_KINDS: tuple[str, ...] = (
    RESET_BEFORE,
    STATUS_503_BEFORE,
    STATUS_429_BEFORE,
    HANG_BEFORE,
)
"""Never forwarded: the target stores nothing, so the hub may send the request again."""

POST_COMMIT_KINDS: tuple[str, ...] = (
    COMMIT_THEN_502,
    COMMIT_THEN_503,
    COMMIT_THEN_504,
    COMMIT_THEN_500,
    COMMIT_THEN_RESET,
    COMMIT_THEN_TRUNCATED,
    COMMIT_THEN_HANG,
    COMMIT_THEN_GRAPHQL_ERROR,
)
"""Forwarded first (the target commits), then the answer is spoiled."""

ALL_KINDS: tuple[str, ...] = (*PRE_COMMIT_KINDS, *POST_COMMIT_KINDS, LATE_COMMIT)
GRAPHQL_ONLY_KINDS = frozenset({COMMIT_THEN_GRAPHQL_ERROR})

_STATUS_OF = {
    STATUS_503_BEFORE: 503,
    STATUS_429_BEFORE: 429,
    COMMIT_THEN_502: 502,
    COMMIT_THEN_503: 503,
    COMMIT_THEN_504: 504,
    COMMIT_THEN_500: 500,
}
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
    }
)
_MAX_HEAD_BYTES = 64 * 1024
STOP_GRACE_S = 1.0
"""How long stop() lets connections end by themselves before cancelling what is left."""
GRAPHQL_INTERNAL_ERROR = {
    "data": None,
    "errors": [{"message": "Internal server error", "code": "INTERNAL_SERVER_ERROR"}],
}
"""A request-level GraphQL error without ``clientId``, answered with HTTP 200 after the commit."""

WriteClassifier = Callable[[str, str, bytes], bool]
"""(method, request target, body) -> whether the request may change the target's data."""

WriteHook = Callable[[int], None]
"""Called with the write's number (1, 2, … since the proxy started) after the upstream answered
that write and before the client is answered. Runs on the proxy's loop: keep it short."""


# =============================================================================================
# what is a write
# =============================================================================================
def xledger_is_write(method: str, target: str, body: bytes) -> bool:
    """A GraphQL request whose document is a mutation (``addGLImportItems``)."""
    if method != "POST" or b"mutation" not in body:
        return False
    try:
        document = json.loads(body)
    except ValueError:
        return True  # unparsable but mentions a mutation: treat as a write, to be safe
    query = document.get("query") if isinstance(document, dict) else None
    return not isinstance(query, str) or "mutation" in query


def dynamics_is_write(method: str, target: str, body: bytes) -> bool:
    """``$batch``, a journal line or a journal posting (never the token endpoint, never GET)."""
    if method not in ("POST", "PATCH", "DELETE"):
        return False
    path = target.split("?", 1)[0]
    if "/oauth2/" in path:
        return False
    return path.endswith("/$batch") or "journalLines" in path or "Microsoft.NAV.post" in path


# =============================================================================================
# the plan: which request meets which fault
# =============================================================================================
@dataclass(frozen=True)
class FaultProfile:
    """How often, and which, faults the proxy injects.

    ``write_weights``/``read_weights`` give each fault kind's relative weight; a kind left out
    (or weighted 0) never fires. Reads only take pre-commit kinds.
    """

    write_rate: float = 0.45
    read_rate: float = 0.10
    write_weights: Mapping[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            (*PRE_COMMIT_KINDS, *POST_COMMIT_KINDS, LATE_COMMIT), 1.0
        )
    )
    read_weights: Mapping[str, float] = field(
        default_factory=lambda: dict.fromkeys(PRE_COMMIT_KINDS, 1.0)
    )
    late_commit_delay_s: float = 0.5
    """How long after the client gave up a late commit reaches the target."""
    hang_cap_s: float = 60.0
    """The longest a hang holds a request when the client never gives up."""

    def __post_init__(self) -> None:
        for name, rate in (("write_rate", self.write_rate), ("read_rate", self.read_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for label, weights, allowed in (
            ("write", self.write_weights, set(ALL_KINDS)),
            ("read", self.read_weights, set(PRE_COMMIT_KINDS)),
        ):
            unknown = sorted(set(weights) - allowed)
            if unknown:
                raise ValueError(f"not a {label} fault kind: {', '.join(unknown)}")
            if any(w < 0 for w in weights.values()):
                raise ValueError(f"{label} fault weights must be >= 0")


class FaultPlan:
    """Seeded decisions: one random stream for writes, one for reads, one for details."""

    def __init__(self, seed: int, profile: FaultProfile, *, graphql: bool) -> None:
        self.profile = profile
        self._writes = random.Random(f"fault-proxy:{seed}:writes")
        self._reads = random.Random(f"fault-proxy:{seed}:reads")
        self._details = random.Random(f"fault-proxy:{seed}:details")
        self._write_kinds = _choices(profile.write_weights, graphql=graphql)
        self._read_kinds = _choices(profile.read_weights, graphql=graphql)

    def next_fault(self, *, write: bool) -> str | None:
        """The fault for the next write (or read), or None to pass it through untouched.

        Both draws are always made, so the n-th request's fault does not depend on earlier ones.
        """
        rng, rate, kinds = (
            (self._writes, self.profile.write_rate, self._write_kinds)
            if write
            else (self._reads, self.profile.read_rate, self._read_kinds)
        )
        hit = rng.random() < rate
        pick = rng.random()
        if not hit or not kinds:
            return None
        names, cumulative = kinds
        for name, bound in zip(names, cumulative, strict=True):
            if pick * cumulative[-1] < bound:
                return name
        return names[-1]

    def detail(self, choices: int) -> int:
        """A seeded small choice for how a fault looks (e.g. which Retry-After)."""
        return self._details.randrange(choices)


def _choices(weights: Mapping[str, float], *, graphql: bool) -> tuple[list[str], list[float]]:
    names: list[str] = []
    cumulative: list[float] = []
    total = 0.0
    for name in ALL_KINDS:  # a fixed order: the same seed picks the same kind
        weight = float(weights.get(name, 0.0))
        if weight <= 0 or (name in GRAPHQL_ONLY_KINDS and not graphql):
            continue
        total += weight
        names.append(name)
        cumulative.append(total)
    return names, cumulative


# =============================================================================================
# counters
# =============================================================================================
@dataclass
class ProxyStats:
    """What went through the proxy. ``writes_forwarded`` counts writes the target answered
    (late commits included); ``writes_answered`` those whose answer came back while the client
    still waited (the write hook's numbering); ``upstream_errors`` requests the target itself
    failed to answer (the client then gets a 502)."""

    requests: int = 0
    reads: int = 0
    writes: int = 0
    writes_forwarded: int = 0
    writes_answered: int = 0
    late_commits: int = 0
    upstream_errors: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    def copy(self) -> ProxyStats:
        return ProxyStats(
            self.requests,
            self.reads,
            self.writes,
            self.writes_forwarded,
            self.writes_answered,
            self.late_commits,
            self.upstream_errors,
            Counter(self.faults),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "reads": self.reads,
            "writes": self.writes,
            "writes_forwarded": self.writes_forwarded,
            "writes_answered": self.writes_answered,
            "late_commits": self.late_commits,
            "upstream_errors": self.upstream_errors,
            "faults": dict(sorted(self.faults.items())),
        }


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    @property
    def wants_close(self) -> bool:
        connection = (self.header("connection") or "").lower()
        return "close" in connection or self.version == "HTTP/1.0"


class _BadRequest(Exception):
    pass


# =============================================================================================
# the proxy
# =============================================================================================
class FaultProxy:
    """A reverse proxy to ``upstream`` that injects seeded faults while :attr:`enabled`."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int,
        is_write: WriteClassifier,
        profile: FaultProfile | None = None,
        graphql: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.upstream = httpx.URL(upstream.rstrip("/"))
        self.profile = profile or FaultProfile()
        self.plan = FaultPlan(seed, self.profile, graphql=graphql)
        self._is_write = is_write
        self._host = host
        self._lock = threading.Condition()
        self._stats = ProxyStats()
        self._enabled = False
        self._busy = 0
        self._write_hook: WriteHook | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._client: httpx.AsyncClient | None = None
        self._socket: socket.socket | None = None
        self.port = 0
        self.url = ""

    # -- control (any thread) --------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        with self._lock:
            return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        with self._lock:
            self._enabled = value

    def set_write_hook(self, hook: WriteHook | None) -> None:
        """Install (or remove, with None) the hook called before a write's answer goes out."""
        with self._lock:
            self._write_hook = hook

    def stats(self) -> ProxyStats:
        with self._lock:
            return self._stats.copy()

    def wait_for(self, predicate: Callable[[ProxyStats], bool], timeout: float) -> bool:
        """Block until ``predicate(stats)`` holds (re-checked on every request and on
        :meth:`poke`); False after ``timeout`` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self._stats), timeout)

    def poke(self) -> None:
        """Wake :meth:`wait_for` callers, e.g. when something outside the proxy changed."""
        with self._lock:
            self._lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is held or forwarded and no late commit is pending."""
        with self._lock:
            return self._lock.wait_for(lambda: self._busy == 0, timeout)

    def start(self, timeout: float = 10.0) -> FaultProxy:
        """Bind a free port, start the loop thread, return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        sock.listen(128)
        self._socket = sock
        self.port = sock.getsockname()[1]
        self.url = f"http://{self._host}:{self.port}"
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name=f"fault-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout) or failure:
            self.stop()
            raise RuntimeError(f"the fault proxy on {self.url} did not start") from (
                failure[0] if failure else None
            )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection, cancel held requests and late commits, join the thread.

        Safe to call twice, and from a ``finally`` after Ctrl-C."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> FaultProxy:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FaultProxy(url={self.url!r}, upstream={str(self.upstream)!r})"

    # -- the loop thread -------------------------------------------------------------------
    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        except BaseException as exc:  # reported through start(); the thread just ends
            failure.append(exc)
            ready.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            with self._lock:
                self._busy = 0
                self._lock.notify_all()

    async def _main(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        assert self._socket is not None
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.profile.hang_cap_s, connect=5.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        server = await asyncio.start_server(self._accept, sock=self._socket, limit=_MAX_HEAD_BYTES)
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for writer in list(self._writers):
                _abort(writer)  # held requests see their client gone and end by themselves
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_S)
            for task in list(self._tasks):
                task.cancel()  # upstream calls still running, late commits not yet sent
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await server.wait_closed()
            await self._client.aclose()

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._writers.add(writer)
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except _BadRequest:
                    await _send(writer, 400, [("content-type", "text/plain")], b"bad request\n")
                    return
                if request is None:
                    return
                if not await self._serve(request, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            return  # the client went away mid-request: nothing to answer
        except asyncio.CancelledError:
            # stop(): end quietly. Re-raising would make asyncio's stream callback (3.11) log
            # the cancellation as an error; the task is ending anyway.
            return
        finally:
            self._writers.discard(writer)
            if not writer.is_closing():
                writer.close()

    def _begin(self, request: _Request) -> tuple[bool, str | None]:
        write = self._is_write(request.method, request.target, request.body)
        with self._lock:
            self._stats.requests += 1
            if write:
                self._stats.writes += 1
            else:
                self._stats.reads += 1
            fault = self.plan.next_fault(write=write) if self._enabled else None
            if fault is not None:
                self._stats.faults[fault] += 1
            self._busy += 1
            self._lock.notify_all()
        return write, fault

    def _end(self) -> None:
        with self._lock:
            self._busy -= 1
            self._lock.notify_all()

    async def _serve(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request (or not); True when the connection may carry another one."""
        write, fault = self._begin(request)
        try:
            if fault == RESET_BEFORE:
                _abort(writer, reset=True)
                return False
            if fault in (STATUS_503_BEFORE, STATUS_429_BEFORE):
                headers = [("content-type", "text/plain")]
                if fault == STATUS_429_BEFORE:
                    headers.append(("retry-after", str(self.plan.detail(2))))
                return await self._answer_status(request, writer, _STATUS_OF[fault], headers)
            if fault == HANG_BEFORE:
                await self._until_client_gone(reader)
                return False
            if fault == LATE_COMMIT:
                await self._until_client_gone(reader)
                self._begin_background()
                self._spawn(self._late_commit(request))
                return False
            response = await self._forward(request, write=write)
            if response is None:
                return await self._answer_status(
                    request, writer, 502, [("content-type", "text/plain")]
                )
            if write:
                self._written()
            return await self._answer(request, response, writer, reader, fault)
        finally:
            self._end()

    def _written(self) -> None:
        with self._lock:
            self._stats.writes_answered += 1
            number = self._stats.writes_answered
            hook = self._write_hook
        if hook is not None:
            hook(number)

    def _begin_background(self) -> None:
        with self._lock:
            self._busy += 1

    async def _late_commit(self, request: _Request) -> None:
        """Forward a request whose client has given up; the answer goes nowhere."""
        try:
            await asyncio.sleep(self.profile.late_commit_delay_s)
            response = await self._forward(request, write=True)
            if response is not None:
                with self._lock:
                    self._stats.late_commits += 1
        finally:
            self._end()

    async def _forward(self, request: _Request, *, write: bool) -> httpx.Response | None:
        """Send the request upstream unchanged (the Host header too, so links the target
        builds point back at the proxy); None when the upstream itself failed."""
        assert self._client is not None
        url = self.upstream.copy_with(raw_path=request.target.encode("latin-1"))
        headers = [
            (k, v)
            for k, v in request.headers
            if k.lower() not in _HOP_BY_HOP and k.lower() != "accept-encoding"
        ]
        headers.append(("accept-encoding", "identity"))  # bodies are relayed byte for byte
        try:
            response = await self._client.request(
                request.method, url, headers=headers, content=request.body
            )
        except httpx.HTTPError:
            with self._lock:
                self._stats.upstream_errors += 1
            return None
        if write:
            with self._lock:
                self._stats.writes_forwarded += 1
        return response

    async def _answer(
        self,
        request: _Request,
        response: httpx.Response,
        writer: asyncio.StreamWriter,
        reader: asyncio.StreamReader,
        fault: str | None,
    ) -> bool:
        body = response.content
        headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP]
        if fault is None:
            return await self._answer_status(request, writer, response.status_code, headers, body)
        if fault in _STATUS_OF:
            plain = [("content-type", "text/plain")]
            return await self._answer_status(request, writer, _STATUS_OF[fault], plain)
        if fault == COMMIT_THEN_GRAPHQL_ERROR:
            error = json.dumps(GRAPHQL_INTERNAL_ERROR).encode()
            json_type = [("content-type", "application/json")]
            return await self._answer_status(request, writer, 200, json_type, error)
        if fault == COMMIT_THEN_TRUNCATED:
            full = body if len(body) >= 2 else body + b" " * (2 - len(body))
            head = _head(response.status_code, headers, len(full), close=False)
            writer.write(head + full[: len(full) // 2])
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()
            return False
        if fault == COMMIT_THEN_HANG:
            await self._until_client_gone(reader)
            return False
        if fault == COMMIT_THEN_RESET:
            variant = self.plan.detail(3)
            if variant == 2:  # the status line and part of the headers, then a reset
                head = _head(response.status_code, headers, len(body), close=False)
                writer.write(head[: max(1, len(head) // 2)])
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.drain()
            _abort(writer, reset=variant != 1)
            return False
        raise AssertionError(f"unhandled fault {fault}")

    async def _answer_status(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes | None = None,
    ) -> bool:
        if body is None:
            body = f"{status} {_phrase(status)} (fault proxy)\n".encode()
        await _send(writer, status, headers, body, close=request.wants_close)
        return not request.wants_close

    async def _until_client_gone(self, reader: asyncio.StreamReader) -> bool:
        """Hold on until the client closes its side (True) or the hang cap passes (False)."""

        async def drained() -> None:
            while await reader.read(65536):
                pass

        try:
            await asyncio.wait_for(drained(), self.profile.hang_cap_s)
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            return True
        return True


# =============================================================================================
# HTTP/1.1 by hand
# =============================================================================================
async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """The next request on a connection, or None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("truncated request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise _BadRequest("request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise _BadRequest("bad request line") from None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest("bad header line")
        headers.append((name.strip(), value.strip()))
    request = _Request(method.upper(), target, version.upper(), headers, b"")
    if "chunked" in (request.header("transfer-encoding") or "").lower():
        request.body = await _read_chunked(reader)
    else:
        length = request.header("content-length")
        if length:
            try:
                size = int(length)
            except ValueError:
                raise _BadRequest("bad content-length") from None
            request.body = await reader.readexactly(size)
    return request


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest("bad chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, headers: list[tuple[str, str]], length: int, *, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_phrase(status)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"content-length: {length}")
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(
    writer: asyncio.StreamWriter,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    close: bool = False,
) -> None:
    if writer.is_closing():
        return
    writer.write(_head(status, headers, len(body), close=close) + body)
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()
    if close:
        writer.close()


def _abort(writer: asyncio.StreamWriter, *, reset: bool = False) -> None:
    """Drop the connection at once; with ``reset`` as a TCP RST (SO_LINGER 0), not a FIN."""
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
