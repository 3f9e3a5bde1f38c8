"""A live, authenticated connection to one peer (the asyncio side).

``PeerConnection`` moves frames between a ``websockets`` connection and a
:class:`~smsgnet.session.Session`; it holds no crypto of its own.

States (one table, as data)::

    OPEN     ── graceful_close() / peer disconnect / idle / error ──▶ CLOSING
    CLOSING  ── WebSocket closed ──────────────────────────────────▶ CLOSED

An inbound connection starts *unproven*: the initiator has not yet shown it
holds its key. Its first frame that decrypts proves it (``proven`` turns True).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from smsgnet import _core
from smsgnet.exceptions import ConnectionClosedError
from smsgnet.identity import NodeIdentity
from smsgnet.message import DisconnectCode, Message
from smsgnet.registry import Peer
from smsgnet.session import Session

if TYPE_CHECKING:
    from websockets.asyncio.connection import Connection

    from smsgnet.transport import Transport

__all__ = ["PeerConnection", "ConnectionState", "ConnectionStats"]

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
    the transport runs its read loop and keepalive."""

    def __init__(
        self,
        transport: Transport,
        ws: Connection,
        identity: NodeIdentity,
        shared_secret: bytes,
        *,
        outbound: bool,
        address: str = "",
    ) -> None:
        self._transport = transport
        self._ws = ws
        self.identity = identity
        self.peer: Peer = transport.registry.get(identity.id) or Peer.from_identity(identity, address)
        self.shared_secret = shared_secret
        self.outbound = outbound
        self.address = address
        #: True once the peer has proven it holds its key (HMAC for outbound,
        #: first authenticated frame for inbound).
        self.proven = outbound
        self.state = ConnectionState.OPEN
        self.last_activity = time.monotonic()
        self.ping_ms: float | None = None
        #: Set when the connection closes: the disconnect code and reason,
        #: ours or the peer's (whichever came first).
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.closed_by_peer = False
        self._session = Session(identity.id, shared_secret, transport._dedup, transport.config)
        self._write_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._close_task: asyncio.Task[None] | None = None
        self._log_bucket = _core.TokenBucket(max(1, transport.config.drop_log_per_minute),
                                             transport.config.drop_log_per_minute / 60.0)
        self._unlogged_drops = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_in = 0

    # -- identity ---------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """The peer's node ID."""
        return self.identity.id

    @property
    def is_open(self) -> bool:
        """True until a close has started."""
        return self.state is ConnectionState.OPEN

    @property
    def remote_address(self) -> Any:
        """The peer's socket address."""
        return self._ws.remote_address

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

        Writers are serialised; a write that takes longer than the configured
        write timeout closes the connection and raises
        :class:`ConnectionClosedError`, as does sending on a closed connection.
        """
        if not msg.from_:
            msg.from_ = self._transport.node.node_id
        await self._send_frame(self._session.seal_json(msg.id, msg.to_json()))

    async def _send_sealed_json(self, message_id: str, message_json: bytes) -> None:
        await self._send_frame(self._session.seal_json(message_id, message_json))

    async def _send_frame(self, frame: bytes, *, allow_closing: bool = False) -> None:
        if self.state is not ConnectionState.OPEN and not allow_closing:
            raise ConnectionClosedError(f"connection to {self.peer_id} is closed", self.close_code, self.close_reason)
        timeout = self._transport.config.write_timeout
        lock = self._write_lock
        try:
            transport = self._ws.transport
            if (not lock.locked() and transport is not None
                    and transport.get_write_buffer_size() + len(frame) < transport.get_write_buffer_limits()[1]):
                # Fast path: nobody else is writing and the frame fits under
                # the transport's high-water mark, so the write cannot block
                # and needs no timer.
                async with lock:
                    await self._ws.send(frame)
            else:
                async with lock:
                    async with asyncio.timeout(timeout):
                        await self._ws.send(frame)
        except TimeoutError:
            log.warning("write to %s timed out after %.1fs; closing", self.peer_id, timeout)
            self._start_close("write timeout", DisconnectCode.TIMEOUT, send_disconnect=False)
            raise ConnectionClosedError(f"write to {self.peer_id} timed out", DisconnectCode.TIMEOUT) from None
        except ConnectionClosed as e:
            self._start_close("connection lost", DisconnectCode.GOING_AWAY, send_disconnect=False)
            raise ConnectionClosedError(f"connection to {self.peer_id} closed: {e}") from None
        self.bytes_out += len(frame)

    # -- closing ---------------------------------------------------------------------

    async def graceful_close(self, reason: str = "", code: int = DisconnectCode.NORMAL) -> None:
        """Send ``disconnect`` (best effort, short deadline), then close. Only
        the first call does anything; every call waits until the connection is closed."""
        self._start_close(reason, code, send_disconnect=True)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        await self._closed.wait()

    def _start_close(self, reason: str, code: int, *, send_disconnect: bool, by_peer: bool = False) -> None:
        if self._close_task is not None:
            return
        self._set_state(ConnectionState.CLOSING)
        self.close_code = int(code)
        self.close_reason = reason
        self.closed_by_peer = by_peer
        self._close_task = self._transport._spawn(self._close(reason, int(code), send_disconnect))

    async def _close(self, reason: str, code: int, send_disconnect: bool) -> None:
        try:
            if send_disconnect:
                msg = Message.disconnect(self._transport.node.node_id, self.peer_id, reason, code)
                try:
                    async with asyncio.timeout(DISCONNECT_SEND_TIMEOUT):
                        await self._send_frame(self._session.seal(msg), allow_closing=True)
                except Exception:  # best effort
                    pass
            try:
                ws_code = _WS_CLOSE_CODE.get(DisconnectCode(code), 1000) if code in DisconnectCode._value2member_map_ else 1000
                await self._ws.close(ws_code, reason.encode()[:120].decode("utf-8", "ignore"))
            except Exception:
                pass
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        self._set_state(ConnectionState.CLOSED)
        self._transport._forget(self)
        self._closed.set()

    # -- receiving (driven by the transport) ---------------------------------------------

    async def _read_loop(self, on_message: Callable[[PeerConnection, Message], Any]) -> None:
        ws = self._ws
        session = self._session
        try:
            async for frame in ws:
                self.frames_in += 1
                self.bytes_in += len(frame)
                msg = session.receive(frame)
                if msg is None:
                    self._log_drop()
                    continue
                self.last_activity = time.monotonic()
                if self.state is not ConnectionState.OPEN:
                    continue  # closing: drain what is left, hand nothing more out
                if not self.proven:
                    self.proven = True
                    self._transport._on_proven(self)
                result = on_message(self, msg)
                if result is not None:
                    await result
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("read loop of %s failed", self.peer_id)
            self._start_close("internal error", DisconnectCode.PROTOCOL_ERROR, send_disconnect=True)
        finally:
            rcvd = ws.protocol.close_rcvd
            if self._close_task is None:
                code = rcvd.code if rcvd is not None else None
                reason = "connection closed by peer" if rcvd is not None else "connection lost"
                if code == 1009:
                    reason = "message too big"
                self._start_close(reason, DisconnectCode.GOING_AWAY, send_disconnect=False, by_peer=True)

    def _log_drop(self) -> None:
        if self._log_bucket.allow():
            extra = f" ({self._unlogged_drops} more dropped since the last warning)" if self._unlogged_drops else ""
            log.warning("dropped frame from %s: %s%s", self.peer_id, self._session.last_drop, extra)
            self._unlogged_drops = 0
        else:
            self._unlogged_drops += 1

    async def _keepalive(self) -> None:
        cfg = self._transport.config
        interval, limit = cfg.ping_interval, cfg.idle_limit
        next_ping = time.monotonic() + interval
        while self.state is ConnectionState.OPEN:
            deadline = self.last_activity + limit
            await asyncio.sleep(max(0.0, min(next_ping, deadline) - time.monotonic()))
            if self.state is not ConnectionState.OPEN:
                return
            now = time.monotonic()
            if now >= self.last_activity + limit:
                log.info("closing %s: silent for %.1fs", self.peer_id, now - self.last_activity)
                self._start_close("idle timeout", DisconnectCode.TIMEOUT, send_disconnect=True)
                return
            if now >= next_ping:
                next_ping = now + interval
                await self.ping()

    async def ping(self) -> None:
        """Send a ``ping`` now (the pong updates ``ping_ms``). Errors are logged, not raised."""
        try:
            await self.send(Message.ping(self._transport.node.node_id, self.peer_id))
        except ConnectionClosedError:
            pass

    def __repr__(self) -> str:
        d = "out" if self.outbound else "in"
        return f"<PeerConnection {d} {self.peer_id} {self.state.value}{'' if self.proven else ' unproven'}>"
