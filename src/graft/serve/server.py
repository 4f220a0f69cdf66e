"""Running the app on uvicorn with limits that keep one client from starving the others.

uvicorn's defaults wait forever for a client that opens a connection and never
finishes sending its request: 1,100 such connections exhausted the process's file
descriptors and ``/health`` stopped answering. Here every connection must deliver a
complete request (head and body) within ``read_timeout_s`` of its first byte, idle
keep-alive connections close after ``keep_alive_s``, requests beyond
``max_connections`` get 503 at once, and the file-descriptor limit is raised to the
hard limit. For exposure beyond a trusted network put a reverse proxy in front (see
the README).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ReadDeadlineH11", "raise_fd_limit", "run_server"]


class ReadDeadlineH11(H11Protocol):
    """uvicorn's h11 protocol, closing connections that do not deliver a whole request in time."""

    read_timeout_s = 15.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request of a keep-alive connection
        super().data_received(data)
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._disarm()  # the request is in: the app's own timeout takes over

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def raise_fd_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; returns the new soft limit."""
    try:
        import resource
    except ImportError:  # not on this platform
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft)


def run_server(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    max_connections: int = 512,
    read_timeout_s: float = 15.0,
    keep_alive_s: float = 5.0,
) -> None:
    """Serve ``app`` on uvicorn until interrupted, with the limits described in the module docstring."""
    import uvicorn

    protocol = type("GraftH11", (ReadDeadlineH11,), {"read_timeout_s": float(read_timeout_s)})
    raise_fd_limit()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol,
        limit_concurrency=max_connections,
        timeout_keep_alive=int(keep_alive_s),
        h11_max_incomplete_event_size=64 * 1024,
        backlog=min(2048, max_connections * 4),
    )
    uvicorn.Server(config).run()
