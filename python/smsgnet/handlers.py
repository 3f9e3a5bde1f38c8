"""The one place user callbacks run: message handler and peer connected/disconnected.

A failing callback never takes a connection down: its error is counted and
logged (with a traceback at most ~10 times a minute), and a
:class:`~smsgnet.ConnectionClosedError` raised by a reply on a closing
connection is expected during shutdown and logged without a traceback.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeAlias

from smsgnet import _core
from smsgnet.exceptions import ConnectionClosedError
from smsgnet.message import Message

if TYPE_CHECKING:
    from smsgnet.connection import PeerConnection

__all__ = ["HandlerRunner", "MessageHandler", "ConnectionHandler"]

log = logging.getLogger("smsgnet")

MessageHandler: TypeAlias = Callable[["PeerConnection", Message], "Awaitable[None] | None"]
ConnectionHandler: TypeAlias = Callable[["PeerConnection"], "Awaitable[None] | None"]


class HandlerRunner:
    """Holds the callbacks and runs them; counts their failures."""

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]) -> None:
        self._spawn = spawn
        self.message: MessageHandler | None = None
        self._message_is_async = False
        self.connected: ConnectionHandler | None = None
        self.disconnected: ConnectionHandler | None = None
        self.errors = 0
        # handler failures are logged with a traceback at most ~10 a minute
        self._log_bucket = _core.TokenBucket(5, 10 / 60)

    def set_message_handler(self, handler: MessageHandler) -> None:
        self.message = handler
        self._message_is_async = inspect.iscoroutinefunction(handler)

    # -- peer callbacks ----------------------------------------------------------

    def peer_connected(self, conn: PeerConnection) -> None:
        self._notify(self.connected, conn)

    def peer_disconnected(self, conn: PeerConnection) -> None:
        self._notify(self.disconnected, conn)

    def _notify(self, handler: ConnectionHandler | None, conn: PeerConnection) -> None:
        if handler is None:
            return
        try:
            result = handler(conn)
        except Exception:
            self._failed(f"connection handler failed for {conn.peer_id}")
            return
        if inspect.isawaitable(result):
            async def run() -> None:
                try:
                    await result
                except Exception:
                    self._failed(f"connection handler failed for {conn.peer_id}")
            self._spawn(run())

    # -- messages ------------------------------------------------------------------

    def deliver(self, conn: PeerConnection, msg: Message) -> Awaitable[None] | None:
        """Call the message handler; an awaitable when it must be awaited
        (before the next frame of the same connection is read)."""
        handler = self.message
        if handler is None:
            return None
        if self._message_is_async:
            return self._await(handler(conn, msg), conn, msg)  # type: ignore[arg-type]
        try:
            result = handler(conn, msg)
        except ConnectionClosedError as e:
            self._closed_error(conn, e)
            return None
        except Exception:
            self._message_failed(conn, msg)
            return None
        if inspect.isawaitable(result):
            return self._await(result, conn, msg)
        return None

    async def _await(self, aw: Awaitable[None], conn: PeerConnection, msg: Message) -> None:
        try:
            await aw
        except ConnectionClosedError as e:
            self._closed_error(conn, e)
        except Exception:
            self._message_failed(conn, msg)

    def _message_failed(self, conn: PeerConnection, msg: Message) -> None:
        self._failed(f"message handler failed on {msg.type[:64]!r} from {conn.peer_id}")

    def _failed(self, what: str) -> None:
        self.errors += 1
        if self._log_bucket.allow():
            log.exception("%s (%d handler errors so far)", what, self.errors)

    def _closed_error(self, conn: PeerConnection, error: ConnectionClosedError) -> None:
        # Sending on a closing connection is expected during shutdown: no traceback.
        if conn.is_open:
            self.errors += 1
            log.warning("message handler on %s: %s", conn.peer_id, error)
        else:
            log.debug("handler reply to %s after its connection closed", conn.peer_id)
