"""Run an ASGI sandbox app over real HTTP on a local port.

Why: the demo and the tests talk to the sandboxes exactly as they would to the real services (a
socket, HTTP/1.1, timeouts, dropped connections), so the runner must give a real server that
starts fast on a free port and stops cleanly. The socket is bound here, not by uvicorn, so that
``port=0`` yields a known free port before the server starts.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Send

GRACEFUL_SHUTDOWN_S = 2.0
"""How long stop() lets in-flight requests finish (e.g. a deliberate hang) before cancelling."""

_DELIBERATE_DROP: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sandbox_deliberate_drop", default=False
)
"""Set inside a request task that drops its connection on purpose, so uvicorn's complaint about
the incomplete response (which it logs from the same task) is not reported as a server bug."""


_CURRENT_SERVER: contextvars.ContextVar[uvicorn.Server | None] = contextvars.ContextVar(
    "sandbox_current_server", default=None
)
"""Set in the server's main task; request tasks inherit it, so a deliberate hang can notice
that the server is stopping instead of holding up shutdown."""


class _SandboxServer(uvicorn.Server):
    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        _CURRENT_SERVER.set(self)
        await super().serve(sockets)


def server_stopping() -> bool:
    """True inside a request of a sandbox server that has been asked to stop (or got Ctrl-C)."""
    server = _CURRENT_SERVER.get()
    return server is not None and server.should_exit


async def hang(receive: Receive, seconds: float) -> str:
    """Hold a request (its body already read) without answering, like a stuck upstream.

    Returns ``"timeout"`` after ``seconds``, ``"disconnected"`` as soon as the client gives up,
    or ``"shutdown"`` when the server is stopping, so a hang never delays ``stop()``.
    """

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    waiter = asyncio.ensure_future(disconnected())
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return "timeout"
            done, _ = await asyncio.wait({waiter}, timeout=min(0.05, remaining))
            if done:
                return "disconnected"
            if server_stopping():
                return "shutdown"
    finally:
        waiter.cancel()


class _DeliberateDropFilter(logging.Filter):
    """Hides uvicorn's error record for a response the sandbox cut short on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _DELIBERATE_DROP.get()


def _install_drop_filter() -> None:
    error_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DeliberateDropFilter) for f in error_logger.filters):
        error_logger.addFilter(_DeliberateDropFilter())


async def drop_connection(send: Send, body: bytes, status: int = 200) -> None:
    """Announce ``body`` with its full Content-Length, send only part of it, then give up.

    The caller must return right after this; uvicorn then closes the socket, so the client sees
    a truncated response (httpx: ``RemoteProtocolError``) rather than any HTTP status.
    """
    _DELIBERATE_DROP.set(True)
    full = body if len(body) >= 2 else body + b" " * (2 - len(body))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(full)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": full[: len(full) // 2], "more_body": True})


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # Else uvicorn believes X-Forwarded-For from 127.0.0.1 and rewrites the peer: the web
        # app decides which proxies it trusts (INTEGRATIONS_WEB_TRUSTED_PROXIES) itself.
        proxy_headers=False,
    )
    _install_drop_filter()  # after Config: it (re)configures uvicorn's loggers
    return config


class RunningServer:
    """A uvicorn server in a daemon thread; ``stop()`` (or leaving ``with``) shuts it down."""

    def __init__(
        self, server: uvicorn.Server, thread: threading.Thread, sock: socket.socket, host: str
    ) -> None:
        self._server = server
        self._thread = thread
        self._socket = sock
        self.host = host
        self.port: int = sock.getsockname()[1]
        self.url = _url(host, self.port)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit, wait for its thread, and release the port. Safe to call twice."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningServer(url={self.url!r}, running={self.running})"


def start_server(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0
) -> RunningServer:
    """Serve ``app`` in a daemon thread and return once it accepts connections."""
    sock = _bind(host, port)
    bound_port: int = sock.getsockname()[1]
    server = _SandboxServer(_config(app, host, bound_port))
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [sock]},
        name=f"sandbox-server-{bound_port}",
        daemon=True,
    )
    thread.start()
    running = RunningServer(server, thread, sock, host)
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise RuntimeError(f"sandbox server on {running.url} failed to start")
        if time.monotonic() > deadline:
            running.stop()
            raise RuntimeError(f"sandbox server on {running.url} did not start in time")
        time.sleep(0.005)
    _wait_accepting(host, bound_port, deadline)
    return running


def _wait_accepting(host: str, port: int, deadline: float) -> None:
    """Connect once: proves the event loop is serving, not just that the socket listens."""
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def serve_forever(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 8765,
    on_ready: Callable[[str], Any] | None = None,
) -> None:
    """Serve ``app`` in the foreground until Ctrl-C (or SIGTERM), then shut down cleanly.

    ``on_ready`` receives the URL once the port is bound (useful with ``port=0``).
    """
    sock = _bind(host, port)
    bound_port: int = sock.getsockname()[1]
    server = _SandboxServer(_config(app, host, bound_port))
    if on_ready is not None:
        on_ready(_url(host, bound_port))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the captured SIGINT after its graceful shutdown
    finally:
        sock.close()
