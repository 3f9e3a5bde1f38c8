"""The one place user callbacks run: message handlers and peer connected/disconnected.

Each received message goes to exactly one consumer: the handler registered for
its type (``on_message("type")``), else the catch-all handler
(``on_message(handler)``), else the ``Transport.messages()`` iterator once one
has been opened; with none of these it is counted as unhandled.

A failing callback never takes a connection down: its error is counted and
logged (with a traceback at most ~10 times a minute), and a
:class:`~smsgnet.ConnectionClosedError` raised by a reply on a closing
connection is expected during shutdown and logged without a traceback.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeAlias

from smsgnet import _core
from smsgnet.exceptions import ConnectionClosedError
from smsgnet.message import Message

if TYPE_CHECKING:
    from smsgnet.connection import PeerConnection

__all__ = ["HandlerRunner", "MessageHandler", "ConnectionHandler", "MessageChannel"]

log = logging.getLogger("smsgnet")

MessageHandler: TypeAlias = Callable[["PeerConnection", Message], "Awaitable[None] | None"]
ConnectionHandler: TypeAlias = Callable[["PeerConnection"], "Awaitable[None] | None"]


class MessageChannel:
    """A bounded queue of (connection, message) between read loops and
    ``Transport.messages()`` iterators. ``put`` waits while it is full (the
    sender's read loop stops reading: TCP backpressure, nothing dropped);
    after :meth:`close`, ``get`` drains what is left, then ends."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[tuple[PeerConnection, Message]] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def put(self, conn: PeerConnection, msg: Message) -> None:
        while len(self._items) >= self.limit and not self.closed:
            fut = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake(self._putters)  # pass the turn on
                raise
        if self.closed:
            return
        self._items.append((conn, msg))
        self._wake(self._getters)

    async def get(self) -> tuple[PeerConnection, Message] | None:
        """The next item, or None once closed and drained."""
        while not self._items:
            if self.closed:
                return None
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake(self._getters)
                raise
        item = self._items.popleft()
        self._wake(self._putters)
        return item

    def close(self) -> None:
        self.closed = True
        for waiters in (self._getters, self._putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)


class HandlerRunner:
    """Holds the callbacks and runs them; counts their failures."""

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]) -> None:
        self._spawn = spawn
        self.message: MessageHandler | None = None
        self._message_is_async = False
        self.by_type: dict[str, tuple[MessageHandler, bool]] = {}
        #: Created by the first ``Transport.messages()``.
        self.channel: MessageChannel | None = None
        self.unhandled = 0
        self.connected: ConnectionHandler | None = None
        self.disconnected: ConnectionHandler | None = None
        self.errors = 0
        # handler failures are logged with a traceback at most ~10 a minute
        self._log_bucket = _core.TokenBucket(5, 10 / 60)

    def set_message_handler(self, handler: MessageHandler) -> None:
        self.message = handler
        self._message_is_async = inspect.iscoroutinefunction(handler)

    def set_type_handler(self, type: str, handler: MessageHandler) -> None:
        self.by_type[type] = (handler, inspect.iscoroutinefunction(handler))

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
        handler: MessageHandler | None
        if self.by_type and msg.type in self.by_type:
            handler, is_async = self.by_type[msg.type]
        else:
            handler, is_async = self.message, self._message_is_async
        if handler is None:
            if self.channel is not None and not self.channel.closed:
                return self.channel.put(conn, msg)
            self.unhandled += 1
            log.debug("no handler for %r from %s", msg.type[:64], conn.peer_id)
            return None
        if is_async:
            return self._await(handler(conn, msg), conn, msg)  # type: ignore[arg-type]
        try:
            result = handler(conn, msg)
        except ConnectionClosedError as e:
            self._closed_error(conn, e)
            return None
        except Exception:
            self._message_failed(conn, msg)
            return None
        if result is not None and inspect.isawaitable(result):
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
