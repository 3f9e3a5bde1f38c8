"""One encrypted connection to one peer: a socket, a session and an owner.

``PeerConnection`` moves frames between a WebSocket (:mod:`smsgnet.wire`) and a
:class:`~smsgnet.session.Session` (which holds the protocol: proof of key,
ping/pong, disconnect, keepalive timing); it holds no crypto and no rules of
its own. What happens to the connection in the node (live, pending,
replaced) is the owner's business, reached through :class:`ConnectionOwner`.

States (one table, as data)::

    OPEN     ── graceful_close() / peer disconnect / idle / error ──▶ CLOSING
    CLOSING  ── WebSocket closed ──────────────────────────────────▶ CLOSED

An inbound connection starts *unproven* (``proven`` False): nothing is sealed
for it until its first authentic frame, and the owner keeps it out of sight.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import logging
import sys
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from websockets.exceptions import ConnectionClosed

from smsgnet.exceptions import (
    ConnectionClosedError,
    MessageTooLarge,
    NotConnectedError,
    RemoteError,
    RequestTimeout,
    SendQueueFull,
)
from smsgnet.logsafe import clip
from smsgnet.identity import NodeIdentity
from smsgnet.message import DisconnectCode, Message
from smsgnet.registry import Peer
from smsgnet.session import (
    CloseForSilence,
    FrameDropped,
    MessageReceived,
    PeerDisconnected,
    PingReceived,
    PongReceived,
    Proven,
    SendPing,
    Session,
)

if TYPE_CHECKING:
    from smsgnet.wire import WireConnection as Connection

    from smsgnet.config import TransportConfig

__all__ = ["PeerConnection", "ConnectionState", "ConnectionStats", "ConnectionOwner"]

log = logging.getLogger("smsgnet")


class ConnectionState(enum.Enum):
    """Where a connection is in its life."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


#: Allowed transitions.
TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.OPEN: frozenset({ConnectionState.CLOSING, ConnectionState.CLOSED}),
    ConnectionState.CLOSING: frozenset({ConnectionState.CLOSED}),
    ConnectionState.CLOSED: frozenset(),
}

#: WebSocket close code used for each disconnect code (1003/1004 mean other
#: things at the WebSocket layer, so they travel only in the disconnect message).
_WS_CLOSE_CODE = {
    DisconnectCode.NORMAL: 1000,
    DisconnectCode.GOING_AWAY: 1001,
    DisconnectCode.PROTOCOL_ERROR: 1002,
    DisconnectCode.TIMEOUT: 1000,
    DisconnectCode.SHUTDOWN: 1001,
}

#: How long the best-effort disconnect message may take before we close anyway.
DISCONNECT_SEND_TIMEOUT = 1.0

#: How long the WebSocket close may take before the socket is aborted
#: (websockets' own close timeout is 2 s; a full send buffer can block longer).
CLOSE_TIMEOUT = 3.0

#: Frames this large are opened off the event loop (the native core releases the GIL while it
#: opens them), so other links keep moving. The threshold is where opening costs more than the
#: hand-off to a worker thread and back, about 130 µs on the development machine
#: (benches/ping_under_load.py): 1.0 opens at ~750 MB/s, 2.0 (AES-GCM) at ~3 GB/s.
LARGE_FRAME = 128 * 1024
LARGE_FRAME_2 = 512 * 1024

#: WebSocket close reason of a connection closed because the pair already has a link.
DUPLICATE_REASON = "duplicate connection"

#: ``_pump_task`` after the reader failed: nothing more is read from that link.
_STOPPED: Any = object()


class _Clock:
    """One timer for every connection of an event loop: keepalive pings, idle
    limits and proof deadlines of all links share one heap of ``(when, seq,
    conn)`` entries and one ``TimerHandle`` armed for the earliest, instead of
    a ``TimerHandle`` (and its context) per link.

    Rescheduling or cancelling a link leaves its old entry in the heap: an
    entry counts only while ``conn._timer`` is that very tuple. Stale entries
    are skipped when they reach the top and swept when they are over half
    the heap."""

    __slots__ = ("_loop", "_heap", "_handle", "_at", "_live", "_stale")

    _seq = itertools.count()  # ties in the heap compare by this, never by connection
    #: a due entry runs when the loop's clock is at most this far before it (asyncio fires handles alike)
    _EARLY = 1e-6

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, PeerConnection]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0
        self._live = 0
        self._stale = 0

    def schedule(self, conn: PeerConnection, when: float) -> None:
        """Call ``conn._on_timer()`` at loop time ``when`` (replacing its previous schedule)."""
        if conn._timer is not None:
            self._stale += 1
        else:
            self._live += 1
        entry = (when, next(self._seq), conn)
        conn._timer = entry
        heapq.heappush(self._heap, entry)
        if self._handle is None or when < self._at:
            self._arm(when)
        elif self._stale > 64 and self._stale > len(self._heap) // 2:
            self._sweep()

    def cancel(self, conn: PeerConnection) -> None:
        if conn._timer is None:
            return
        conn._timer = None
        self._stale += 1
        self._live -= 1
        if not self._live:
            self._close()
        elif self._stale > 64 and self._stale > len(self._heap) // 2:
            self._sweep()

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = when
        self._handle = self._loop.call_at(when, self._fire)

    def _sweep(self) -> None:
        heap = self._heap = [e for e in self._heap if e[2]._timer is e]
        heapq.heapify(heap)
        self._stale = 0

    def _close(self) -> None:
        """No link has a timer: drop the heap and the handle, forget this loop."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap = []
        self._stale = 0
        if _clocks.get(self._loop) is self:
            del _clocks[self._loop]

    def _fire(self) -> None:
        self._handle = None
        heap = self._heap
        now = self._loop.time() + self._EARLY
        while heap:
            entry = heap[0]
            conn = entry[2]
            if conn._timer is not entry:
                heapq.heappop(heap)
                self._stale -= 1
                continue
            if entry[0] > now:
                break
            heapq.heappop(heap)
            conn._timer = None
            self._live -= 1
            try:
                conn._on_timer()  # may schedule it again (pushes onto this heap)
            except Exception:
                log.exception("timer of %s failed", conn.peer_id)
            heap = self._heap  # a sweep may have replaced it
        if not self._live:
            self._close()
        elif heap and (self._handle is None or heap[0][0] < self._at):
            self._arm(heap[0][0])


#: The clock of each running event loop (an entry lives while some link has a timer).
_clocks: dict[asyncio.AbstractEventLoop, _Clock] = {}


def _clock() -> _Clock:
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = _Clock(loop)
    return clock


class ConnectionOwner(Protocol):
    """What a connection needs from the node that holds it."""

    config: TransportConfig

    @property
    def node_id(self) -> str: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    def connection_proven(self, conn: PeerConnection) -> None: ...

    def connection_closed(self, conn: PeerConnection) -> None: ...

    def deliver(self, conn: PeerConnection, msg: Message) -> Awaitable[None] | None: ...

    def pong_received(self, conn: PeerConnection, rtt_ms: float | None) -> None: ...

    def frame_dropped(self, conn: PeerConnection, drop: FrameDropped) -> None: ...


@dataclass(slots=True)
class ConnectionStats:
    """Counters of one connection."""

    frames_in: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    drops: dict[str, int] = field(default_factory=dict)


class PeerConnection:
    """One encrypted connection. Use :meth:`send` and :meth:`graceful_close`;
    the node starts it with :meth:`run` and its timer with :meth:`start_timer`.

    An idle link has no task: on a :mod:`smsgnet.wire` socket frames are read
    from the protocol's callbacks (a task exists only while a handler or a
    full send buffer makes this link wait), and its keepalive, idle limit and
    proof deadline are one entry in a heap shared by every link of the loop."""

    # slots: an idle link costs its socket, its session and little else
    __slots__ = (
        "_owner", "_ws", "_session", "identity", "peer", "shared_secret", "outbound", "address", "remote_host",
        "established_at", "dial_started", "state", "ping_ms", "close_code", "close_reason", "closed_by_peer",
        "closed_locally", "superseded_by", "_closed", "_close_task", "_timer", "_clock", "_requests", "_request_timer",
        "_pump_task", "bytes_in", "bytes_out", "frames_in", "__weakref__",
    )

    def __init__(
        self,
        owner: ConnectionOwner,
        ws: Connection,
        identity: NodeIdentity,
        shared_secret: bytes,
        session: Session,
        *,
        outbound: bool,
        peer: Peer,
        address: str = "",
    ) -> None:
        self._owner = owner
        self._ws = ws
        self._session = session
        self.identity = identity
        #: The registry's view of the peer (address, key, last seen).
        self.peer = peer
        self.shared_secret = shared_secret
        #: True when this node dialled the connection.
        self.outbound = outbound
        #: The address dialled (outbound) or the remote socket address (inbound).
        self.address = address
        remote = ws.remote_address
        #: The remote host (per-address limits of pending connections).
        self.remote_host = sys.intern(str(remote[0])) if remote else ""  # one string per host, not per link
        #: ``time.monotonic()`` when the connection became usable: the handshake
        #: (outbound) or the proof of key (inbound).
        self.established_at = time.monotonic()
        #: ``time.monotonic()`` when this node began dialling (outbound only).
        self.dial_started = self.established_at
        self.state = ConnectionState.OPEN
        self.ping_ms: float | None = None
        #: Set when the connection closes: the disconnect code and reason,
        #: ours or the peer's (whichever came first).
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.closed_by_peer = False
        #: Closed by the user (:meth:`graceful_close`) or by the node's stop.
        self.closed_locally = False
        #: The live link that took this one's place after a dial race or a
        #: duplicate dial; :meth:`send` on this connection goes there.
        self.superseded_by: PeerConnection | None = None
        self._closed: asyncio.Future[None] | None = None  # made when someone waits (wait_closed)
        self._close_task: asyncio.Task[None] | None = None
        #: this link's entry in the loop's shared timer heap (see _Clock), or None
        self._timer: tuple[float, int, PeerConnection] | None = None
        self._clock: _Clock | None = None
        #: requests waiting for their reply: message id -> (future, deadline in loop time, type, timeout)
        self._requests: dict[str, tuple[asyncio.Future[Message], float, str, float]] | None = None
        #: one timer for all of them, armed for the earliest deadline (see _expire_requests)
        self._request_timer: asyncio.TimerHandle | None = None
        #: the task reading this link while it has to wait (None when idle; _STOPPED after a failure)
        self._pump_task: asyncio.Task[None] | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_in = 0

    # -- identity ---------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """The peer's node ID."""
        return self.identity.id

    @property
    def proven(self) -> bool:
        """True once the peer has proven it holds its key (outbound: by the
        handshake's HMAC; inbound: by its first authentic frame)."""
        return self._session.proven

    @property
    def protocol(self) -> str:
        """The wire protocol of this link: ``"1.0"`` (SMSG, what the Go nodes
        speak) or ``"2.0"`` (Noise, between smsgnet nodes)."""
        return self._session.protocol

    @property
    def is_open(self) -> bool:
        """True until a close has started."""
        return self.state is ConnectionState.OPEN

    @property
    def remote_address(self) -> Any:
        """The peer's socket address."""
        return self._ws.remote_address

    @property
    def session(self) -> Session:
        """The protocol state of this connection (sans I/O)."""
        return self._session

    @property
    def stats(self) -> ConnectionStats:
        """Counters of this connection, including drops by reason."""
        s = self._session
        return ConnectionStats(self.frames_in, s.messages_in, s.messages_out, self.bytes_in, self.bytes_out,
                               dict(s.drops))

    def _set_state(self, new: ConnectionState) -> None:
        if new is self.state:
            return
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"connection state {self.state.value} -> {new.value} is not allowed")
        self.state = new

    # -- sending ------------------------------------------------------------------

    async def send(self, msg: Message) -> None:
        """Encrypt and send one message.

        Frames leave in call order; when the socket's buffer is full the send
        waits, and a wait longer than the configured write timeout closes the
        connection and raises :class:`ConnectionClosedError`, as does sending
        on a closed connection. A message that cannot be sealed raises
        :class:`~smsgnet.SealError` (empty type, payload not JSON) or
        :class:`~smsgnet.MessageTooLarge` (over this node's
        ``max_message_size``), and one that would put more than
        ``max_send_queue_bytes`` in line for this peer raises
        :class:`~smsgnet.SendQueueFull`; in those cases nothing was sent and
        the connection stays up.

        Cancellation: the frame is handed to the socket before the first
        ``await`` (it waits afterwards only for the buffer to drain), so a send
        that has started running will be delivered even if it is cancelled
        while it waits; one cancelled before it started is not sent. A connection that lost a dial race or
        turned out to duplicate a live link forwards to that link.
        """
        if not msg.from_:
            msg.from_ = self._owner.node_id
        if self.state is not ConnectionState.OPEN:
            await self._successor().send(msg)
            return
        wait = self._queue_frame(self._seal_checked(msg.id, msg.to_json()))
        if wait is not None:
            await wait

    def send_nowait(self, msg: Message) -> bool:
        """Encrypt and queue one message without waiting, for handlers that
        are plain functions and for senders that pace themselves.

        The frame leaves in call order with this loop iteration's write, as
        with :meth:`send`. Returns True, or False when the socket's buffer is
        above its high-water mark: slow down, and ``await``
        :meth:`drain` before queuing more (a plain-function message handler
        can return ``conn.drain()``: the link's reader then waits for it).
        What waits is still bounded: past ``max_send_queue_bytes`` this raises
        :class:`~smsgnet.SendQueueFull` and nothing is queued. Raises like
        :meth:`send` otherwise."""
        if not msg.from_:
            msg.from_ = self._owner.node_id
        if self.state is not ConnectionState.OPEN:
            return self._successor().send_nowait(msg)
        frame = self._seal_checked(msg.id, msg.to_json())
        try:
            ready = self._ws.send_nowait(frame)
        except ConnectionClosed as e:
            self._connection_lost_on_send(e)
        self.bytes_out += len(frame)
        return ready

    async def drain(self) -> None:
        """Wait until the socket's buffer is below its low-water mark (at once
        when it is), under the write timeout like :meth:`send`."""
        if self.state is not ConnectionState.OPEN:
            await self._successor().drain()
            return
        await self._drain(0)

    async def send_encoded(self, message_id: str, message_json: bytes) -> None:
        """Send a Message already encoded as JSON (``broadcast`` encodes once for every peer)."""
        if self.state is not ConnectionState.OPEN:
            raise self._closed_error()
        wait = self._queue_frame(self._seal_checked(message_id, message_json))
        if wait is not None:
            await wait

    def _seal_checked(self, message_id: str, message_json: bytes) -> bytes:
        """Seal an encoded Message for this open link, after the size and
        send-queue checks. Raises like :meth:`send`."""
        session = self._session
        size = session.sealed_len(len(message_json))
        if size is not None:
            # protocol 2.0: every sealed frame must leave, in order (counter
            # nonces), so the size and queue checks come before sealing
            self._check_sendable(size)
        try:
            frame = session.seal_json(message_id, message_json)
        except NotConnectedError:
            raise NotConnectedError(f"{self.peer_id} has not proven its key yet") from None
        if size is None:
            self._check_sendable(len(frame))  # protocol 1.0: the size is known once sealed
        return frame

    async def send_sealed(self, frame: bytes, *, counted: bool = False) -> None:
        """Send a frame already sealed for this peer (``broadcast`` seals for
        every peer in one native call). Checks the size and the send queue
        like :meth:`send`."""
        if self.state is not ConnectionState.OPEN:
            raise self._closed_error()
        if not counted:
            self._session.sealed_elsewhere()
        self._check_sendable(len(frame))
        wait = self._queue_frame(frame)
        if wait is not None:
            await wait

    def _check_sendable(self, size: int) -> None:
        """Raise MessageTooLarge or SendQueueFull for a frame of ``size`` bytes."""
        limit = self._owner.config.max_message_size
        if size > limit:
            raise MessageTooLarge(size, limit)
        self._check_queue(size)

    def _check_queue(self, size: int) -> None:
        """Raise SendQueueFull when ``size`` more bytes would pass ``max_send_queue_bytes``."""
        limit = self._owner.config.max_send_queue_bytes
        queued = self._ws.write_buffer_size()
        if queued + size > limit:
            raise SendQueueFull(f"{queued} bytes already waiting to be written to {self.peer_id} "
                                f"(max_send_queue_bytes {limit}); not sent")

    async def request(self, msg: Message, *, timeout: float = 10.0) -> Message:
        """Send ``msg`` and wait for the message whose ``replyTo`` is its ID.

        The reply is returned, not handed to the message handler. An ``error``
        reply raises :class:`~smsgnet.RemoteError` (``code``, ``message``,
        ``details``); no reply within ``timeout`` seconds raises
        :class:`~smsgnet.RequestTimeout` (at most 10 ms late: requests of a
        link share one timer); the link closing first raises
        :class:`ConnectionClosedError` with its code and reason."""
        if self.state is not ConnectionState.OPEN:
            return await self._successor().request(msg, timeout=timeout)
        if not msg.from_:
            msg.from_ = self._owner.node_id
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()
        requests = self._requests
        if requests is None:
            requests = self._requests = {}
        deadline = loop.time() + timeout
        requests[msg.id] = (fut, deadline, msg.type, timeout)
        # no timer per request: one per link, armed for the earliest deadline
        timer = self._request_timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._request_timer = loop.call_at(deadline, self._expire_requests)
        try:
            wait = self._queue_frame(self._seal_checked(msg.id, msg.to_json()))
            if wait is not None:  # the send buffer is full: the wait for it counts against the timeout too
                try:
                    async with asyncio.timeout_at(deadline):
                        await wait
                except TimeoutError:
                    raise _request_timeout(msg.type, self.peer_id, timeout) from None
            reply = await fut
        finally:
            requests.pop(msg.id, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: a send that failed leaves no "never retrieved" noise
        if reply.type == "error":
            p = reply.payload if isinstance(reply.payload, dict) else {}
            code, text, details = p.get("code"), p.get("message"), p.get("details")
            raise RemoteError(code if type(code) is int else 0, text if isinstance(text, str) else "",
                              details if isinstance(details, str) else "")
        return reply

    def _take_reply(self, msg: Message) -> bool:
        """Hand ``msg`` to a waiting :meth:`request`; True when one was waiting."""
        pending = self._requests.pop(msg.reply_to, None) if self._requests else None
        if pending is None:
            return False
        fut = pending[0]
        if not fut.done():
            fut.set_result(msg)
        return True

    #: Expiries closer together than this share one firing of the request timer,
    #: so that many waiting requests are scanned at most 100 times a second.
    REQUEST_TIMER_SLACK = 0.01

    def _expire_requests(self) -> None:
        """(the request timer) Fail every request past its deadline with
        RequestTimeout; arm the timer again for the earliest one left."""
        self._request_timer = None
        requests = self._requests
        if not requests:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest: float | None = None
        for fut, deadline, type, timeout in requests.values():
            if deadline <= now:
                if not fut.done():
                    fut.set_exception(_request_timeout(type, self.peer_id, timeout))
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._request_timer = loop.call_at(max(earliest, now + self.REQUEST_TIMER_SLACK),
                                               self._expire_requests)

    def _successor(self) -> PeerConnection:
        """For a link that is no longer open: the live link that took its place
        (a dial race, a duplicate), where its sends go. Raises
        ConnectionClosedError when there is none."""
        live = self.superseded_by
        if live is not None and live.is_open:
            return live
        raise self._closed_error()

    def _closed_error(self) -> ConnectionClosedError:
        why = f" ({self.close_code} {self.close_reason})" if self.close_code is not None else ""
        return ConnectionClosedError(f"connection to {self.peer_id} is closed{why}", self.close_code,
                                     self.close_reason)

    async def _send_frame(self, frame: bytes, *, allow_closing: bool = False) -> None:
        if self.state is not ConnectionState.OPEN and not allow_closing:
            raise self._closed_error()
        wait = self._queue_frame(frame)
        if wait is not None:
            await wait

    def _queue_frame(self, frame: bytes) -> Coroutine[Any, Any, None] | None:
        """Queue ``frame`` on the socket now, in call order (it leaves with this
        loop iteration's write). None when that is all; a coroutine to await
        when the socket's buffer is above its high-water mark (the wait for it
        to drain, under the write deadline). Raises ConnectionClosedError when
        the socket is gone. The caller checked the link's state."""
        try:
            ready = self._ws.send_nowait(frame)
        except ConnectionClosed as e:
            self._connection_lost_on_send(e)
        if ready:
            self.bytes_out += len(frame)
            return None
        return self._drain(len(frame))

    def _connection_lost_on_send(self, e: ConnectionClosed) -> NoReturn:
        self._start_close("connection lost", DisconnectCode.GOING_AWAY, send_disconnect=False)
        raise ConnectionClosedError(f"connection to {self.peer_id} closed: {e}", DisconnectCode.GOING_AWAY,
                                    "connection lost") from None

    async def _drain(self, size: int) -> None:
        """Wait for the socket's buffer to drain, under the write deadline."""
        timeout = self._owner.config.write_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._ws.drain()
        except TimeoutError:
            log.warning("write to %s timed out after %.1fs; closing", self.peer_id, timeout)
            self._start_close("write timeout", DisconnectCode.TIMEOUT, send_disconnect=False)
            raise ConnectionClosedError(f"write to {self.peer_id} timed out after {timeout:g}s",
                                        DisconnectCode.TIMEOUT, "write timeout") from None
        except ConnectionClosed as e:
            self._connection_lost_on_send(e)
        self.bytes_out += size

    def _send_in_background(self, frame: bytes) -> None:
        """Queue a frame now; a task only when the buffer is full and it must wait."""
        if self.state is not ConnectionState.OPEN:
            return
        try:
            wait = self._queue_frame(frame)
        except ConnectionClosedError:
            return
        if wait is not None:
            self._owner.spawn(_quietly(wait))

    async def ping(self) -> None:
        """Send a ``ping`` now (the pong updates ``ping_ms``). Errors are logged, not raised."""
        if not self._session.can_send or not self.is_open:
            return
        try:
            await self._send_frame(self._session.ping(time.time()))
        except ConnectionClosedError:
            pass

    # -- closing ---------------------------------------------------------------------

    async def graceful_close(self, reason: str = "", code: int = DisconnectCode.NORMAL) -> None:
        """Send ``disconnect`` (best effort, short deadline), then close. Only
        the first call does anything; every call waits until the connection is
        closed. A link kept with ``reconnect=True`` is not redialled after this;
        on a connection that a dial race superseded it closes the live link."""
        live = self.superseded_by
        if self.state is not ConnectionState.OPEN and live is not None and live.is_open:
            await live.graceful_close(reason, code)
            return
        if self._close_task is None:
            self.closed_locally = True
        self._start_close(reason, code, send_disconnect=True)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        closed = self._closed
        if closed is None:
            closed = self._closed = asyncio.get_running_loop().create_future()
            if self.state is ConnectionState.CLOSED:
                closed.set_result(None)
        await asyncio.shield(closed)

    def close_quietly(self, reason: str = DUPLICATE_REASON) -> None:
        """Close without a ``disconnect`` message (the link was redundant)."""
        self._start_close(reason, DisconnectCode.NORMAL, send_disconnect=False)

    def close_soon(self, reason: str, code: int, *, send_disconnect: bool) -> None:
        """Begin closing without waiting (the node's decisions: replaced, evicted)."""
        self._start_close(reason, code, send_disconnect=send_disconnect)

    def _start_close(self, reason: str, code: int, *, send_disconnect: bool, by_peer: bool = False,
                     frame: bytes | None = None) -> None:
        """Begin closing (only the first call counts). ``frame`` is a disconnect
        the session already sealed; otherwise one is sealed when ``send_disconnect``."""
        if self._close_task is not None:
            return
        self._set_state(ConnectionState.CLOSING)
        self._cancel_timer()
        self.close_code = int(code)
        self.close_reason = reason
        self.closed_by_peer = by_peer
        if frame is None and send_disconnect:
            frame = self._session.close(reason, code, time.time())
        self._session.closed = True
        self._close_task = self._owner.spawn(self._close(reason, int(code), frame))

    async def _close(self, reason: str, code: int, frame: bytes | None) -> None:
        try:
            if frame is not None:
                try:
                    async with asyncio.timeout(DISCONNECT_SEND_TIMEOUT):
                        await self._send_frame(frame, allow_closing=True)
                except Exception:  # best effort
                    pass
            ws_code = _WS_CLOSE_CODE.get(DisconnectCode(code), 1000) if code in set(DisconnectCode) else 1000
            try:
                if reason == "write timeout":
                    raise TimeoutError  # the socket cannot take even a close frame
                # bounded: a peer that stopped reading cannot hold the close (or stop()) forever
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._ws.close(ws_code, reason.encode()[:120].decode("utf-8", "ignore"))
            except TimeoutError:
                transport = self._ws.transport
                if transport is not None:
                    transport.abort()
            except Exception:
                pass
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        self._set_state(ConnectionState.CLOSED)
        self._cancel_timer()
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        if self._requests:
            error = self._closed_error()
            for fut, *_ in self._requests.values():
                if not fut.done():
                    fut.set_exception(error)
                    fut.exception()  # the request() awaiting it re-raises; no "never retrieved" noise
            self._requests.clear()
        self._owner.connection_closed(self)
        closed = self._closed
        if closed is not None and not closed.done():
            closed.set_result(None)

    # -- the clock ------------------------------------------------------------------------

    def start_timer(self) -> None:
        """Arm the keepalive / proof-deadline timer: one entry in the loop's shared heap (no task, no handle)."""
        if self.state is not ConnectionState.OPEN:
            return
        clock = self._clock
        if clock is None or clock._live == 0:  # first timer, or the loop's clock was dropped while idle
            clock = self._clock = _clock()
        delay = max(0.0, self._session.next_deadline - time.time())
        clock.schedule(self, clock._loop.time() + delay)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._clock is not None:
            self._clock.cancel(self)

    def _on_timer(self) -> None:
        if self.state is not ConnectionState.OPEN:
            return
        action = self._session.tick(time.time())
        if isinstance(action, SendPing):
            self._send_in_background(action.frame)
        elif isinstance(action, CloseForSilence):
            log.info("closing %s: %s", self.peer_id, action.reason)
            self._start_close(action.reason, action.code, send_disconnect=False, frame=action.frame)
            return
        self.start_timer()

    # -- receiving (driven by the socket's callbacks) -------------------------------------

    async def run(self) -> None:
        """Start reading this link; hand events to the owner.

        On a :mod:`smsgnet.wire` socket the link is handed to the protocol's
        callbacks and this returns at once: frames are handled as they arrive,
        with no task while the link is idle (one runs only while a handler or a
        full send buffer makes the link wait; until it is done nothing else is
        taken from this peer, so its order holds, and once ``max_queue``
        messages wait the socket stops reading). On any other WebSocket this
        reads until the connection closes."""
        ws = self._ws
        detach = getattr(ws, "detach", None)
        if detach is None:
            await self._read_loop()
            return
        detach(self._on_ready, self._on_messages)
        self._pump()

    def _on_ready(self) -> None:
        """(socket callback) Messages wait, or the connection is lost."""
        if self._pump_task is None:
            self._pump()

    def _on_messages(self, frames: list[bytes]) -> int:
        """(socket callback) The frames of one read, offered before any is
        queued: handle them now unless this link is already waiting; how many
        were taken (the rest queue up for the task that waits)."""
        if self._pump_task is not None:
            return 0
        session = self._session
        if len(frames) > 1 and max(map(len, frames)) < (LARGE_FRAME if session.link is None else LARGE_FRAME_2):
            # a read of several frames: all opened and checked in one native call,
            # then acted on in order; what must wait takes the rest of the events along
            # (a lone frame, a request or an answer, takes the shorter path below)
            self.frames_in += len(frames)
            self.bytes_in += sum(map(len, frames))
            try:
                rest = self._dispatch(session.receive_many(frames, time.time()), 0)
                if rest is not None:
                    self._pump_task = self._owner.spawn(self._pump_async(rest))
            except Exception:
                self._read_failed()
            return len(frames)
        i = 0
        try:
            for frame in frames:
                i += 1
                rest = self._receive(frame)
                if rest is not None:
                    self._pump_task = self._owner.spawn(self._pump_async(rest))
                    return i
        except Exception:
            self._read_failed()
            return len(frames)  # nothing more is read from this link
        return i

    def _pump(self) -> None:
        """Handle every waiting message now; hand over to a task at the first one that must wait."""
        ws = self._ws
        take = ws.take  # type: ignore[attr-defined]
        try:
            while (frame := take()) is not None:
                rest = self._receive(frame)
                if rest is not None:
                    self._pump_task = self._owner.spawn(self._pump_async(rest))
                    return
        except Exception:
            self._read_failed()
            return
        if ws.lost:  # type: ignore[attr-defined]
            self._peer_gone()

    async def _pump_async(self, pending: Awaitable[None]) -> None:
        """The link waits (a handler, a full buffer, a large frame): read on in this task until nothing is left."""
        ws = self._ws
        take = ws.take  # type: ignore[attr-defined]
        try:
            await pending
            while (frame := take()) is not None:
                rest = self._receive(frame)
                if rest is not None:
                    await rest
        except asyncio.CancelledError:
            self._pump_task = _STOPPED
            self._peer_gone()
            raise
        except Exception:
            self._read_failed()
            return
        self._pump_task = None  # no await since take() found nothing: no notification was missed
        if ws.lost:  # type: ignore[attr-defined]
            self._peer_gone()

    async def _read_loop(self) -> None:
        """Reading for a socket that cannot be detached (a plain ``websockets`` connection)."""
        try:
            async for frame in self._ws:
                rest = self._receive(frame)
                if rest is not None:
                    await rest
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            self._read_failed()
        finally:
            self._peer_gone()
            await self.wait_closed()

    def _read_failed(self) -> None:
        log.exception("read loop of %s failed", self.peer_id)
        self._pump_task = _STOPPED  # nothing more is read from this link
        self._start_close("internal error", DisconnectCode.PROTOCOL_ERROR, send_disconnect=True)

    def _peer_gone(self) -> None:
        """The socket closed: unless we were closing it, the peer did (or the connection broke)."""
        if self._close_task is not None:
            return
        rcvd = self._ws.protocol.close_rcvd
        code = rcvd.code if rcvd is not None else None
        reason = "connection closed by peer" if rcvd is not None else "connection lost"
        close_code: int = DisconnectCode.GOING_AWAY
        if code == 1009:
            # the peer refused a message of ours as too big for its max_message_size
            close_code, reason = 1009, "message too big for the peer's max_message_size"
        elif rcvd is not None and rcvd.reason:
            reason = f"connection closed by peer: {clip(rcvd.reason, 120)}"
        self._start_close(reason, close_code, send_disconnect=False, by_peer=True)

    def _receive(self, frame: bytes | str) -> Awaitable[None] | None:
        """Handle one frame now; a coroutine to await for the rest when it must wait."""
        self.frames_in += 1
        self.bytes_in += len(frame)
        if len(frame) >= (LARGE_FRAME if self._session.link is None else LARGE_FRAME_2):
            return self._receive_large(frame)
        return self._dispatch(self._session.receive(frame, time.time()), 0)

    async def _receive_large(self, frame: bytes | str) -> None:
        # opened in a worker thread (the native open releases the GIL), so other
        # links keep moving; this link's order is kept because its reader waits for it
        events = await asyncio.get_running_loop().run_in_executor(None, self._session.receive, frame, time.time())
        rest = self._dispatch(events, 0)
        if rest is not None:
            await rest

    def _dispatch(self, events: list[Any], i: int) -> Awaitable[None] | None:
        """Act on ``events[i:]`` now; at the first that must be awaited, a coroutine doing that and the rest."""
        owner = self._owner
        n = len(events)
        while i < n:
            # Messages that arrived whole are handed out even while the link
            # closes (the peer may have closed right after sending): nothing
            # received is lost. Control answers stop at once.
            if self.state is ConnectionState.CLOSED:
                return None
            event = events[i]
            i += 1
            if isinstance(event, MessageReceived):
                msg = event.message
                if self._requests and msg.reply_to and self._take_reply(msg):
                    continue
                result = owner.deliver(self, msg)
                if result is not None:
                    # the last event (the usual case): the handler's awaitable is all that is left
                    return result if i == n else self._then(result, events, i)
            elif isinstance(event, FrameDropped):
                owner.frame_dropped(self, event)
                if event.fatal:
                    # protocol 2.0: a frame that does not open breaks the link's counters
                    self._start_close("protocol 2.0 frame did not open", DisconnectCode.PROTOCOL_ERROR,
                                      send_disconnect=True)
                    return None
            elif isinstance(event, Proven):
                owner.connection_proven(self)
                self.start_timer()  # from the proof deadline to the keepalive schedule
            else:
                wait = self._on_control_now(event)
                if wait is not None:
                    return self._then(wait, events, i)
        return None

    async def _then(self, wait: Awaitable[None], events: list[Any], i: int) -> None:
        await wait
        rest = self._dispatch(events, i)
        if rest is not None:
            await rest

    def _on_control_now(self, event: PingReceived | PongReceived | PeerDisconnected) -> Awaitable[None] | None:
        """Act on a ping, pong or disconnect; what must be awaited before the next event, if anything."""
        if isinstance(event, PingReceived):
            # answered inline: a peer that pings but never reads stalls only
            # its own reading, until the write timeout
            if self.state is ConnectionState.OPEN:
                try:
                    # 2.0 seals the pong here, right before it is queued: frames leave in sealing order
                    reply = event.reply if event.reply is not None else self._session.seal(event.pong)
                    wait = self._queue_frame(reply)
                except ConnectionClosedError:
                    wait = None
                if wait is not None:
                    return self._pong_then_deliver(wait, event.message)
        elif isinstance(event, PongReceived):
            if event.rtt_ms is not None:
                self.ping_ms = event.rtt_ms
            self._owner.pong_received(self, event.rtt_ms)
            if self._requests and self._take_reply(event.message):
                return None
        else:
            self._start_close(event.reason, event.code, send_disconnect=False, by_peer=True)
        return self._deliver_control(event.message)

    async def _pong_then_deliver(self, wait: Coroutine[Any, Any, None], msg: Message) -> None:
        await _quietly(wait)
        result = self._deliver_control(msg)
        if result is not None:
            await result

    def _deliver_control(self, msg: Message) -> Awaitable[None] | None:
        if self._owner.config.deliver_control_messages:
            return self._owner.deliver(self, msg)
        return None

    def __repr__(self) -> str:
        d = "out" if self.outbound else "in"
        return f"<PeerConnection {d} {self.peer_id} {self.state.value}{'' if self.proven else ' unproven'}>"


def _request_timeout(type: str, peer_id: str, timeout: float) -> RequestTimeout:
    return RequestTimeout(f"no reply to {type[:64]!r} from {peer_id} within {timeout:g}s")


async def _quietly(wait: Coroutine[Any, Any, None]) -> None:
    """Await a send that may find the link closed (keepalives, pong answers)."""
    try:
        await wait
    except ConnectionClosedError:
        pass
