"""WebSocket connections over websockets' sans-I/O protocol, under a bare ``asyncio.Protocol``.

Integration (the switch is imports only; checked by running tests/integration,
tests/operations and tests/cli on a copy with exactly these edits)::

    acceptor.py    from websockets.asyncio.server import Server, ServerConnection, serve
               ->  from smsgnet.wire import Server, ServerConnection, serve
    dialer.py      from websockets.asyncio.client import ClientConnection
                   from websockets.asyncio.client import connect as ws_connect
               ->  from smsgnet.wire import ClientConnection
                   from smsgnet.wire import connect as ws_connect
    transport.py   from websockets.asyncio.connection import Connection
    connection.py  (under TYPE_CHECKING) the same line
               ->  from smsgnet.wire import WireConnection as Connection

The exception imports stay (``websockets.exceptions``: the same classes are
raised). What connection.py reads is unchanged: ``ws.protocol.close_rcvd``
(``protocol`` is websockets' own ``ServerProtocol``/``ClientProtocol``),
``ws.transport`` (the asyncio transport), ``ws.remote_address``. Differences
that matter to connection.py:

* Frames sent in the current loop iteration wait in ``ws.protocol.writes``
  (up to one high-water mark, 32 KiB) and are *not* in
  ``transport.get_write_buffer_size()``; ``ws.write_buffer_size()`` counts
  both. The ``max_send_queue_bytes`` check in connection.py uses
  ``ws.write_buffer_size()``: with the transport's figure a
  "fast" send can still end up waiting for the peer, outside the write
  deadline (the close timer still bounds it once the link is closed).
* ``send()`` queues the frame synchronously, before it can wait, so
  concurrent sends never interleave and keep call order: ``_write_lock`` is
  no longer needed. ``send_nowait(frame)`` (False when the transport is
  paused) plus ``await drain()`` under the write deadline is the lock-free,
  timer-free form of the fast path.
* ``close()`` is bounded by ``close_timeout`` by itself (CLOSE_TIMEOUT around
  it is harmless); ``server.close()`` stops accepting before it returns.
* Errors of a server handler are logged on ``smsgnet.wire``, not
  ``websockets.server``. With websockets' loggers at DEBUG (``-vvv``) frames
  are still logged: the protocol then builds them itself (slower).

Design. The same calls as the part of ``websockets.asyncio`` that smsgnet
uses, with a cheaper data path:

* **Receiving.** Reads land in one buffer per thread (``asyncio.BufferedProtocol``:
  no allocation per read; asyncio's own reads allocate 256 KiB each, which costs
  page faults on every read); each chunk is fed to the protocol once; the
  frames it yields become messages (fragments joined, text decoded) in one
  deque, handed out in order. ``recv()`` takes from the deque without a future
  when something is waiting; one future is made only when it has to wait.
* **Sending.** ``send()`` appends the whole frame to the protocol's write list
  (built here, byte for byte what ``Frame.serialize`` makes) and returns. A
  frame sent after a quiet spell (nothing queued or written for
  ``LONE_FRAME_GAP``, counted from the end of the last write: a request or an
  answer) is written at once; otherwise everything produced in
  one loop iteration leaves in one ``transport.write``
  (a flush scheduled with ``call_soon``, or sooner: at the end of the
  ``data_received`` call whose frames produced it (a reply sent inline by the
  reader, a pong, a close), when ``recv()`` finds
  nothing left to read and is about to wait, and when the unwritten bytes
  pass the high-water mark). ``send()`` waits only while the transport is
  paused (its buffer went above the high-water mark: ``pause_writing`` /
  ``resume_writing``).
* **Backpressure in.** When more than ``max_queue`` messages wait unread,
  reading from the socket pauses; it resumes at ``max_queue // 4``.
* **Closing.** Once a close is under way (sent, received or failed) a single
  timer aborts the socket after ``close_timeout`` if the peer does not finish
  the closing handshake. websockets enforces that deadline only while someone
  is waiting in ``send()``/``close()``; here it always holds.

Not reproduced: keepalive pings (``ping_interval`` must be None, else
ValueError; smsgnet's session pings), ``compression`` and ``proxy`` (must be
None), redirects (a 3xx raises InvalidStatus), ``ssl=None`` on ``wss://``
(means a default context; websockets raises), ``process_response``,
``origins``, subprotocols, extensions, extra headers, ``ping()``,
``latency``, ``recv_streaming()``, sending from asynchronous iterables,
``broadcast``, ``unix_*``, ``basic_auth``/routing. :func:`connect` and
:func:`serve` are plain coroutines: ``await`` them (``async with await
serve(...)`` works; ``async with connect(...)`` and ``async for ws in
connect(...)`` do not). ``max_queue`` counts whole messages, not frames.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import http
import logging
import os
import socket
import ssl as ssl_module
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Union, cast

from websockets.client import ClientProtocol
from websockets.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
)
from websockets.frames import BINARY, CONT, OK_CLOSE_CODES, TEXT, CloseCode, apply_mask
from websockets.http11 import SERVER, USER_AGENT, Request, Response
from websockets.protocol import CLIENT, CLOSED, CONNECTING, OPEN, Protocol, State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.typing import Origin
from websockets.uri import parse_uri

from smsgnet._core import take_binary_frames

__all__ = [
    "WireConnection",
    "WireServer",
    "connect",
    "serve",
    "Server",
    "ServerConnection",
    "ClientConnection",
]

log = logging.getLogger("smsgnet.wire")

#: Bytes read at most per read: the size of each thread's shared read buffer
#: (:meth:`WireConnection.get_buffer`), as asyncio's own reads.
READ_BUFFER_SIZE = 256 * 1024
_read_buffers = threading.local()

#: A frame queued when nothing was queued or written for this long (seconds) is written at once
#: instead of with the loop iteration's flush: a lone request or answer does not wait for
#: the next iteration; frames that follow it within the iteration still leave together.
#: Shorter than any round trip between two processes (75 µs or more on loopback), so
#: that back-to-back requests each leave at once: at 200 µs, pings answered within
#: 200 µs waited one loop iteration each (three in four on uvloop). A burst pays one
#: extra write for its first frame.
LONE_FRAME_GAP = 50e-6
_perf_counter = time.perf_counter

#: Fragments one message may have (websockets' MAX_FRAGMENTS default); more closes with 1009.
MAX_FRAGMENTS = 4096

Data = Union[str, bytes]
AnyProtocol = Union[ServerProtocol, ClientProtocol]
ProcessRequest = Callable[["WireConnection", Request], Union[Response, None, Awaitable[Union[Response, None]]]]

_utf8_decode = codecs.utf_8_decode  # (data, "strict", True): final, so a cut character is an error
_TEXT = 0x80 | TEXT  # FIN + opcode
_BINARY = 0x80 | BINARY
_pack2 = struct.Struct("!BB").pack
_pack4 = struct.Struct("!BBH").pack
_pack10 = struct.Struct("!BBQ").pack
#: the generator a websockets parser waits in between two frames, with nothing buffered
_AT_EOF_CODE = StreamReader.at_eof.__code__


class WireConnection(asyncio.BufferedProtocol):
    """One WebSocket connection (client or server side).

    Attributes the node reads: :attr:`protocol` (the websockets sans-I/O
    object: ``protocol.close_rcvd``, ``protocol.close_sent``,
    ``protocol.state``), :attr:`transport` (the asyncio transport),
    :attr:`remote_address`, :attr:`request` and :attr:`response` (the upgrade).

    Bytes handed to :meth:`send` may sit in ``protocol.writes`` until the end
    of the loop iteration (at most the high-water mark's worth, then they are
    written at once): ``transport.get_write_buffer_size()`` does not count
    them; :meth:`write_buffer_size` does.

    An idle connection costs little: slots, no deque, futures or upgrade
    request/response kept once :meth:`detach` handed it to a callback.
    """

    # slots: an idle link holds its socket and these, nothing else (no __dict__)
    __slots__ = (
        "protocol", "close_timeout", "_queue_high", "_queue_low", "_write_high", "_write_low", "_loop",
        "transport", "request", "response", "_remote_address", "_local_address", "_messages", "_recv_waiter",
        "_fragments", "_fragment_text", "_read_paused", "_fast_in", "_in_buf", "_flush_scheduled", "_unwritten", "_active_at",
        "_write_paused", "_drain_waiters", "_eof_written", "_masking", "_mask_pool", "_mask_at",
        "_framing_by_protocol", "write_calls", "_handshake_waiter", "_upgraded", "_lost", "_gone",
        "_close_timer", "_connection_exc", "_server", "_on_ready", "_on_messages", "__weakref__",
    )

    def __init__(
        self,
        protocol: AnyProtocol,
        *,
        close_timeout: float | None = 10,
        max_queue: int | None | tuple[int | None, int | None] = 16,
        write_limit: int | tuple[int, int | None] = 2**15,
    ) -> None:
        self.protocol: AnyProtocol = protocol
        self.close_timeout = close_timeout
        if isinstance(max_queue, tuple):
            high, low = max_queue
        else:
            high, low = max_queue, None
        if high is not None and low is None:
            low = high // 4
        if high is None and low is not None:
            high = low * 4
        self._queue_high = high
        self._queue_low = low
        if isinstance(write_limit, tuple):
            self._write_high, self._write_low = write_limit
        else:
            self._write_high, self._write_low = write_limit, None
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self.request: Request | None = None
        self.response: Response | None = None
        self._remote_address: Any = None
        self._local_address: Any = None
        # receiving
        # made when the first message waits (an empty deque is ~770 bytes); dropped again by take()
        self._messages: collections.deque[Data] | None = None
        self._recv_waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._read_paused = False
        self._fast_in = False
        self._in_buf = bytearray()
        # sending
        self._flush_scheduled = False
        self._unwritten = 0
        self._active_at = 0.0  # perf_counter() of the last frame queued or write: a frame after a quiet spell leaves at once
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []  # rarely used: a list, not a 600-byte deque
        self._eof_written = False
        self._masking = protocol.side is CLIENT
        self._mask_pool = b""
        self._mask_at = 0
        # frames are built here unless the protocol must see them (debug logs, extensions)
        self._framing_by_protocol = bool(protocol.debug)
        #: ``transport.write`` calls made so far (one per flush: what coalescing saves shows here).
        self.write_calls = 0
        # lifecycle
        self._handshake_waiter: asyncio.Future[None] | None = self._loop.create_future()  # None once detached
        self._upgraded = False  # the upgrade is over (done, refused or lost): frames follow
        self._lost: asyncio.Future[None] | None = None  # made only when someone waits for the end
        self._gone = False  # connection_lost() ran
        self._close_timer: asyncio.TimerHandle | None = None
        self._connection_exc: BaseException | None = None
        # server side only
        self._server: WireServer | None = None
        # detached: called (no arguments) when messages wait or the connection is lost
        self._on_ready: Callable[[], None] | None = None
        # detached with a direct hand-over: takes a list of messages, returns how many it took
        self._on_messages: Callable[[list[bytes]], int] | None = None

    # -- attributes --------------------------------------------------------------------

    @property
    def remote_address(self) -> Any:
        """The peer's ``(host, port, ...)``, as ``getpeername()`` gave it."""
        return self._remote_address

    @property
    def local_address(self) -> Any:
        return self._local_address

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        return self.protocol.close_reason

    @property
    def queued_messages(self) -> int:
        """Messages received and not yet taken by :meth:`recv`."""
        return len(self._messages) if self._messages is not None else 0

    def write_buffer_size(self) -> int:
        """Bytes accepted by :meth:`send` and not yet sent by the kernel:
        the transport's buffer plus what waits for this iteration's write.
        After a :meth:`send` returns it is at most twice the high-water mark
        (each part at most once: a send that takes the unwritten part past the
        mark writes it at once, and waits if the transport then pauses)."""
        return self._unwritten + self.transport.get_write_buffer_size()

    def respond(self, status: http.HTTPStatus | int, text: str) -> Response:
        """A plain-text HTTP response that ``process_request`` may return to refuse the upgrade."""
        protocol = self.protocol
        if not isinstance(protocol, ServerProtocol):
            raise TypeError("respond() is for server connections")
        return protocol.reject(status, text)

    # -- receiving ---------------------------------------------------------------------

    async def recv(self, decode: bool | None = None) -> Data:
        """The next message: ``str`` for a text frame, ``bytes`` for binary
        (``decode`` forces one or the other). Messages received before the
        connection closed are still handed out; after them it raises
        :class:`~websockets.exceptions.ConnectionClosedOK` (1000, 1001 or no code, both ways)
        or :class:`~websockets.exceptions.ConnectionClosedError`. Cancelling it
        loses nothing. Only one coroutine may wait in it at a time."""
        while True:
            queue = self._messages
            if queue:
                message = queue.popleft()
                if self._read_paused and len(queue) <= self._queue_low:  # type: ignore[operator]
                    self._resume_reading()
                if decode is None:
                    return message
                if decode:
                    return message if type(message) is str else message.decode()  # type: ignore[union-attr]
                return message.encode() if type(message) is str else message  # type: ignore[union-attr]
            if self._gone:
                raise self._close_exc()
            if self.protocol.writes:
                self._flush()  # all that was read is handled: send the answers before waiting
            if self._recv_waiter is not None:
                raise ConcurrencyError("cannot call recv while another coroutine is already running recv")
            waiter = self._recv_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._recv_waiter = None

    def __aiter__(self) -> WireConnection:
        return self

    async def __anext__(self) -> Data:
        """Next message; ends on a clean close (1000, 1001 or no code, both ways), raises
        :class:`~websockets.exceptions.ConnectionClosedError` otherwise."""
        queue = self._messages
        if queue:  # the hot path: no second coroutine
            message = queue.popleft()
            if self._read_paused and len(queue) <= self._queue_low:  # type: ignore[operator]
                self._resume_reading()
            return message
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    # -- detached: driven by a callback, no task waiting in recv() ------------------------

    def detach(self, on_ready: Callable[[], None],
               on_messages: Callable[[list[bytes]], int] | None = None) -> None:
        """Hand the connection to a callback instead of a reader task.

        ``on_ready()`` is called (from the protocol's callbacks, no arguments)
        whenever messages were queued and once when the connection is lost;
        it takes them with :meth:`take`. Messages already queued are not
        announced: take them right after detaching. The upgrade's request and
        response are dropped (an idle link keeps nothing of its HTTP upgrade),
        and a server handler that returns after detaching leaves the connection
        open: it lives on without a task until it closes.

        ``on_messages(messages)``, when given, is offered the whole binary
        messages of a received chunk directly, without queuing them, whenever
        nothing is queued before them; it returns how many it took (in
        order), and the rest are queued and announced as usual."""
        self._on_ready = on_ready
        self._on_messages = on_messages
        self.request = None
        self.response = None
        self._handshake_waiter = None
        self._restart_parser()

    def _restart_parser(self) -> bool:
        """Swap the protocol's parser for a fresh frame parser when it waits
        between two frames: the handshake parser's generator frame holds the
        upgrade request (server) or response (client) with all its headers
        for as long as the connection lives. A fresh ``Protocol.parse`` started
        there is in the same state (what a frame parser carries from one frame
        to the next lives on the protocol object, not in the generator)."""
        protocol = self.protocol
        reader = protocol.reader
        if protocol.state is not OPEN or reader.buffer or reader.eof:
            return False
        inner = protocol.parser
        while (deeper := getattr(inner, "gi_yieldfrom", None)) is not None:
            inner = deeper
        if getattr(inner, "gi_code", None) is not _AT_EOF_CODE:
            return False  # inside a frame: keep the parser
        old = protocol.parser
        fresh = Protocol.parse(protocol)
        next(fresh)  # to its first wait: at_eof, with nothing buffered
        protocol.parser = fresh
        old.close()
        return True

    @property
    def detached(self) -> bool:
        return self._on_ready is not None

    @property
    def lost(self) -> bool:
        """True once the TCP connection is closed (``connection_lost`` ran)."""
        return self._gone

    def take(self) -> Data | None:
        """The next queued message, or None (nothing waiting). Resumes reading
        once the queue is down to its low-water mark, like :meth:`recv`."""
        queue = self._messages
        if not queue:
            return None
        message = queue.popleft()
        if not queue:
            self._messages = None  # an idle link holds no deque
        if self._read_paused and len(queue) <= self._queue_low:  # type: ignore[operator]
            self._resume_reading()
        return message

    def _take_frames(self, frames: list[Any]) -> None:
        """Turn received frames into messages (control frames are the protocol's)."""
        queue = self._messages
        if queue is None:
            queue = self._messages = collections.deque()
        before = len(queue)
        for frame in frames:
            opcode = frame.opcode
            if opcode is BINARY:
                if frame.fin:
                    data = frame.data
                    queue.append(data if type(data) is bytes else bytes(data))
                else:
                    self._fragment_text = False
                    self._fragments = [frame.data]
            elif opcode is TEXT:
                if frame.fin:
                    try:
                        queue.append(_utf8_decode(frame.data, "strict", True)[0])
                    except UnicodeDecodeError as e:
                        self._fail(CloseCode.INVALID_DATA, f"{e.reason} at position {e.start}", e)
                        break
                else:
                    self._fragment_text = True
                    self._fragments = [frame.data]
            elif opcode is CONT:
                fragments = self._fragments
                fragments.append(frame.data)
                if len(fragments) > MAX_FRAGMENTS:
                    self._fragments = []
                    self._fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments", None)
                    break
                if frame.fin:
                    self._fragments = []
                    data = b"".join(fragments)
                    if self._fragment_text:
                        try:
                            queue.append(_utf8_decode(data, "strict", True)[0])
                        except UnicodeDecodeError as e:
                            self._fail(CloseCode.INVALID_DATA, f"{e.reason} at position {e.start}", e)
                            break
                    else:
                        queue.append(data)
        self._queued(before)

    def _queued(self, before: int) -> None:
        """Messages were added to the queue (it held ``before``): wake a reader, pause reading if full."""
        queue = self._messages
        assert queue is not None  # made by whoever added to it
        if len(queue) != before:
            waiter = self._recv_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            high = self._queue_high
            if high is not None and not self._read_paused and len(queue) > high:
                self._read_paused = True
                try:
                    self.transport.pause_reading()
                except RuntimeError:  # already closing
                    pass
            on_ready = self._on_ready
            if on_ready is not None:
                on_ready()

    def _resume_reading(self) -> None:
        self._read_paused = False
        try:
            self.transport.resume_reading()
        except RuntimeError:  # closing
            pass

    def _fail(self, code: int, reason: str, exc: BaseException | None) -> None:
        if self._connection_exc is None:
            self._connection_exc = exc
        if self.protocol.state is OPEN:
            self.protocol.fail(code, reason)

    # -- sending -------------------------------------------------------------------

    async def send(self, message: Data | bytearray | memoryview | Iterable[Data], text: bool | None = None) -> None:
        """Send one message: ``str`` as text, bytes-like as binary (``text``
        forces the frame type); a (synchronous) iterable is sent as the
        fragments of one message. The frame is queued at once and leaves in
        this loop iteration's write; this waits only while the transport's
        write buffer is above its high-water mark. Raises
        :class:`~websockets.exceptions.ConnectionClosed` once the connection is
        closing or closed (after waiting for it to close, as websockets does)."""
        if self.protocol.state is not OPEN:
            await self._raise_not_open()
        if type(message) is bytes:
            size = self._put(_TEXT if text else _BINARY, message)  # type: ignore[arg-type]
        elif isinstance(message, str):
            size = self._put(_BINARY if text is False else _TEXT, message.encode())
        elif isinstance(message, (bytes, bytearray, memoryview)):
            size = self._put(_TEXT if text else _BINARY, bytes(message))
        elif isinstance(message, dict):
            raise TypeError("data is a dict-like object")
        elif isinstance(message, Iterable):
            size = self._send_fragments(message, text)
        else:
            raise TypeError("data must be str, bytes-like or an iterable of them")
        self._after_send(size)
        if self._write_paused:
            await self._drain()

    def send_nowait(self, message: bytes | str, text: bool | None = None) -> bool:
        """Queue one message without waiting. Returns False when the write
        buffer is above its high-water mark (then ``await drain()`` before
        queuing more); raises :class:`~websockets.exceptions.ConnectionClosed`
        when the connection is not open."""
        if self.protocol.state is not OPEN:
            raise self._not_open_exc()
        if type(message) is bytes:
            size = self._put(_TEXT if text else _BINARY, message)
        elif isinstance(message, str):
            size = self._put(_BINARY if text is False else _TEXT, message.encode())
        else:
            size = self._put(_TEXT if text else _BINARY, bytes(message))
        self._after_send(size)
        return not self._write_paused

    async def send_many(self, messages: Iterable[bytes | str], text: bool | None = None) -> None:
        """Send several messages (each in its own frame) in order; they leave
        in one write. Waits like :meth:`send`, once, after queuing them all."""
        if self.protocol.state is not OPEN:
            await self._raise_not_open()
        size = 0
        put = self._put
        for message in messages:
            if type(message) is bytes:
                size += put(_TEXT if text else _BINARY, message)
            elif isinstance(message, str):
                size += put(_BINARY if text is False else _TEXT, message.encode())
            else:
                size += put(_TEXT if text else _BINARY, bytes(message))
        self._after_send(size)
        if self._write_paused:
            await self._drain()

    def _put(self, first: int, data: bytes) -> int:
        """Append one whole frame (``first``: FIN + opcode) to the protocol's
        writes; returns the payload size. The bytes are exactly what
        ``Frame.serialize`` makes without extensions (which smsgnet.wire never
        negotiates); with debug logging on, the protocol makes them itself so
        that it can log them."""
        protocol = self.protocol
        if self._framing_by_protocol or protocol.extensions:
            if protocol.expect_continuation_frame:  # pragma: no cover - fragments are sent whole
                raise InvalidState("a fragmented message is being sent")
            (protocol.send_text if first == _TEXT else protocol.send_binary)(data)
            return len(data)
        n = len(data)
        writes = protocol.writes
        if self._masking:
            if n < 126:
                head = _pack2(first, 0x80 | n)
            elif n < 65536:
                head = _pack4(first, 0xFE, n)
            else:
                head = _pack10(first, 0xFF, n)
            at = self._mask_at
            pool = self._mask_pool
            if at >= len(pool):
                pool = self._mask_pool = os.urandom(4096)  # one system call per 1,024 frames
                at = 0
            key = pool[at:at + 4]
            self._mask_at = at + 4
            writes.append(head + key)
            if n:
                writes.append(apply_mask(data, key))
        else:
            if n < 126:
                head = _pack2(first, n)
            elif n < 65536:
                head = _pack4(first, 126, n)
            else:
                head = _pack10(first, 127, n)
            writes.append(head)
            if n:
                writes.append(data)
        return n

    def _send_fragments(self, chunks: Iterable[Data], text: bool | None) -> int:
        protocol = self.protocol
        iterator: Iterator[Data] = iter(chunks)
        try:
            chunk = next(iterator)
        except StopIteration:
            return 0
        encode = isinstance(chunk, str)
        as_text = text if text is not None else encode
        first = True
        size = 0
        while True:
            if isinstance(chunk, str) != encode:
                self._fail(CloseCode.INTERNAL_ERROR, "error in fragmented message", None)
                self._flush()
                self._arm_close_timer()
                raise TypeError("all fragments must be of the same type")
            data = chunk.encode() if isinstance(chunk, str) else chunk
            try:
                following: Data | None = next(iterator)
            except StopIteration:
                following = None
            fin = following is None
            if first:
                (protocol.send_text if as_text else protocol.send_binary)(data, fin=fin)
                first = False
            else:
                protocol.send_continuation(data, fin=fin)
            size += len(data)
            if following is None:
                return size
            chunk = following

    def _after_send(self, size: int) -> None:
        self._unwritten += size
        if self._unwritten > self._write_high:
            self._flush()  # pause_writing() runs now if the transport is full
        elif not self._flush_scheduled:
            now = _perf_counter()
            quiet = now - self._active_at > LONE_FRAME_GAP
            self._active_at = now
            if quiet:
                # a lone frame (a request, an answer): nothing was sent for a
                # while, so nothing is likely to follow it in this iteration
                self._flush()
                return
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        if self.protocol.writes:
            self._flush()

    def _flush(self) -> None:
        """Write everything the protocol produced, in one ``transport.write``."""
        writes = self.protocol.data_to_send()
        self._unwritten = 0
        if not writes or self._eof_written:
            return
        transport = self.transport
        if transport.is_closing():
            return
        try:
            if writes[-1]:  # the usual case: no end of stream
                self.write_calls += 1
                transport.write(writes[0] if len(writes) == 1 else b"".join(writes))
                # the quiet spell counts from the end of the write: the system
                # call itself (tens of µs on loopback) is not quiet
                self._active_at = _perf_counter()
                return
            end = writes.index(b"")
            if end:
                self.write_calls += 1
                transport.write(b"".join(writes[:end]))
            self._eof_written = True
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        except Exception as exc:  # noqa: BLE001  (the socket is gone; uvloop may raise RuntimeError)
            if self._connection_exc is None:
                self._connection_exc = exc
            transport.abort()

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark (returns at once if it is)."""
        if self._write_paused:
            await self._drain()

    async def _drain(self) -> None:
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._drain_waiters.remove(waiter)
        if self._gone and self.protocol.state is CLOSED:
            raise self._close_exc()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- closing ---------------------------------------------------------------------

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Run the closing handshake; returns when the TCP connection is closed,
        at most ``close_timeout`` after the close frame was queued (then the
        socket is aborted). Idempotent."""
        protocol = self.protocol
        if protocol.state is OPEN:
            if protocol.expect_continuation_frame:
                protocol.fail(CloseCode.INTERNAL_ERROR, "close during fragmented message")
            else:
                protocol.send_close(code, reason)
            self._flush()
            self._arm_close_timer()
        elif protocol.state is CONNECTING:
            self.transport.abort()
        await asyncio.shield(self._lost_future())

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        await asyncio.shield(self._lost_future())

    def _lost_future(self) -> asyncio.Future[None]:
        """A future done when the TCP connection is closed (made on first use)."""
        lost = self._lost
        if lost is None:
            lost = self._lost = self._loop.create_future()
            if self._gone:
                lost.set_result(None)
        return lost

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and self.close_timeout is not None and not self._gone:
            self._close_timer = self._loop.call_later(self.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if not self._gone:
            if self._connection_exc is None:
                self._connection_exc = TimeoutError("timed out while closing connection")
            self.transport.abort()

    async def _raise_not_open(self) -> None:
        if self.protocol.state is CONNECTING:
            raise InvalidState("connection is connecting")
        self._arm_close_timer()  # closing: bounded wait for the end, as websockets
        await asyncio.shield(self._lost_future())
        raise self._close_exc()

    def _not_open_exc(self) -> Exception:
        protocol = self.protocol
        if protocol.state is CLOSED:
            return self._close_exc()
        if protocol.state is CONNECTING:
            return InvalidState("connection is connecting")
        # closing: the codes seen so far (the final ones are known only once closed)
        rcvd, sent = protocol.close_rcvd, protocol.close_sent
        ok = rcvd is not None and sent is not None and rcvd.code in OK_CLOSE_CODES and sent.code in OK_CLOSE_CODES
        return (ConnectionClosedOK if ok else ConnectionClosedError)(rcvd, sent, protocol.close_rcvd_then_sent)

    def _close_exc(self) -> ConnectionClosed:
        exc = self.protocol.close_exc
        if self._connection_exc is not None:
            exc.__cause__ = self._connection_exc
        return exc

    async def __aenter__(self) -> WireConnection:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close(CloseCode.NORMAL_CLOSURE if exc_type is None else CloseCode.INTERNAL_ERROR)

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self.transport = transport
        transport.set_write_buffer_limits(self._write_high, self._write_low)
        self._remote_address = transport.get_extra_info("peername")
        self._local_address = transport.get_extra_info("sockname")
        server = self._server
        if server is not None:
            # registered now, so that closing the server right after accepting still waits for it
            task = self._loop.create_task(server._run(self))
            server.handler_tasks.add(task)
            task.add_done_callback(server.handler_tasks.discard)

    def get_buffer(self, sizehint: int) -> memoryview:
        """(transport callback) Where the next read goes: the thread's shared
        read buffer. Every byte of it is used up or copied by
        :meth:`buffer_updated`, so an idle link holds no read buffer, and no
        read allocates one (asyncio's own reads allocate 256 KiB each)."""
        view: memoryview | None = getattr(_read_buffers, "view", None)
        if view is None:
            view = _read_buffers.view = memoryview(bytearray(READ_BUFFER_SIZE))
        return view

    def buffer_updated(self, nbytes: int) -> None:
        """(transport callback) ``nbytes`` were read into :meth:`get_buffer`'s buffer."""
        with _read_buffers.view[:nbytes] as data:
            self.data_received(data)

    def data_received(self, data: bytes | memoryview) -> None:
        # What the frames of this chunk make us send (answers handled inline:
        # pongs, closes, replies) leaves in one write when the chunk is done,
        # not one loop iteration later: no flush is scheduled while reading.
        scheduled = self._flush_scheduled
        self._flush_scheduled = True
        try:
            self._receive_chunk(data)
        finally:
            self._flush_scheduled = scheduled
            if self.protocol.writes:
                self._flush()

    def _receive_chunk(self, data: bytes | memoryview) -> None:
        if self._fast_in:
            rest = self._read_fast(data)
            if rest is None:
                return
            data = rest  # a frame the fast path does not take: the protocol parses from here on
        protocol = self.protocol
        protocol.receive_data(data if type(data) is bytes else bytes(data))  # never a view of the shared buffer
        events = protocol.events_received()
        if events:
            if self._upgraded:
                self._take_frames(events)
            else:
                self._take_handshake(events)
        if self._close_timer is None and protocol.state is not OPEN and protocol.close_expected():
            self._arm_close_timer()
        elif (not self._fast_in and self._upgraded and not protocol.expect_continuation_frame
              and not self._framing_by_protocol and not protocol.extensions
              and isinstance(protocol.max_message_size, int) and self._restart_parser()):
            # back between two frames (after a control frame, a text frame, the
            # handshake's text messages): whole binary frames take the fast path
            # again, and the parser no longer holds the last frame it parsed
            self._fast_in = True

    def _take_handshake(self, events: list[Any]) -> None:
        first = events[0]
        if isinstance(first, Request):
            self.request = first
        elif isinstance(first, Response):
            self.response = first
        self._upgraded = True
        self._handshake_waiter.set_result(None)  # type: ignore[union-attr]  # not detached before the upgrade
        if len(events) > 1:
            # frames right behind the upgrade: queued, handed out once it completes
            self._take_frames(events[1:])
        protocol = self.protocol
        # The fast path starts only where the protocol's parser stands between
        # two frames with nothing buffered, and never with debug framing.
        self._fast_in = (protocol.state is OPEN and not protocol.reader.buffer and not self._framing_by_protocol
                         and not protocol.extensions and isinstance(protocol.max_message_size, int))

    def _read_fast(self, data: bytes | memoryview) -> bytes | None:
        """The receive fast path: whole, final, unfragmented BINARY frames
        (every frame smsgnet exchanges after the handshake) are cut out of the
        stream and unmasked in one native call per read
        (``_core.take_binary_frames``), and queued without going through the
        protocol's generator parser. The first frame
        of any other kind (control, text, fragment, reserved bits, a wrong mask
        bit, over ``max_size``) ends the fast path for good: the bytes from
        that frame on are returned for the protocol to parse, which then
        stands between two frames as it always did. Returns None when
        everything was taken (a partial frame waits in the buffer)."""
        buf = self._in_buf
        if buf:  # the end of an earlier chunk waits: parse on from there
            buf += data
            src: bytes | bytearray | memoryview = buf
        else:  # the usual case: the chunk starts with a frame, parse it where it lies
            src = data
        # one native call for every frame of the read (rust/wsframe.rs): the
        # payloads unmasked into new bytes, how far that got, and whether a
        # frame of another kind starts there
        taken, pos, other = take_binary_frames(
            src, not self._masking,  # a server reads masked frames, a client unmasked ones
            self.protocol.max_message_size)  # type: ignore[arg-type]  # an int: checked when the fast path starts
        rest: bytes | None = None
        if other:
            rest = bytes(src[pos:])
            self._fast_in = False
            buf.clear()
        elif src is buf:
            if pos:
                del buf[:pos]
        elif pos < len(src):
            buf += data[pos:]  # a partial frame: kept until the rest arrives
        if taken:
            queue = self._messages
            if not queue:
                hand_over = self._on_messages
                if hand_over is not None:  # nothing waits before these: straight to the reader
                    took = hand_over(taken)
                    if took >= len(taken):
                        return rest
                    del taken[:took]
                    queue = self._messages  # the reader may have queued nothing, or made the deque
            if queue is None:
                queue = self._messages = collections.deque()
            before = len(queue)
            queue.extend(taken)
            self._queued(before)
        return rest

    def eof_received(self) -> bool | None:
        protocol = self.protocol
        protocol.receive_eof()
        events = protocol.events_received()
        if events and not self._upgraded:
            self._take_handshake(events)  # a response read until EOF
        if protocol.writes:
            self._flush()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        protocol = self.protocol
        protocol.receive_eof()  # idempotent: the state becomes CLOSED
        if protocol.state is not CLOSED:  # pragma: no cover - websockets guarantees it
            protocol.state = CLOSED
        if self._connection_exc is None:
            self._connection_exc = exc
        protocol.writes.clear()
        self._unwritten = 0
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._gone = True
        lost = self._lost
        if lost is not None and not lost.done():
            lost.set_result(None)
        if not self._upgraded:
            self._upgraded = True
            self._handshake_waiter.set_result(None)  # type: ignore[union-attr]
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._write_paused = False
        for drain in self._drain_waiters:
            if not drain.done():
                drain.set_result(None)
        server = self._server
        if server is not None and self._on_ready is not None:
            server.all_connections.discard(self)  # a detached connection stays listed until here
        on_ready = self._on_ready
        if on_ready is not None:
            on_ready()

    def __repr__(self) -> str:
        side = "server" if isinstance(self.protocol, ServerProtocol) else "client"
        return f"<WireConnection {side} {self.remote_address} {self.protocol.state.name}>"


# -- client ------------------------------------------------------------------------


async def connect(
    uri: str,
    *,
    compression: str | None = None,
    max_size: int | None | tuple[int | None, int | None] = 2**20,
    max_queue: int | None | tuple[int | None, int | None] = 16,
    ping_interval: float | None = None,
    close_timeout: float | None = 10,
    open_timeout: float | None = 10,
    ssl: ssl_module.SSLContext | None = None,
    proxy: str | None = None,
    user_agent_header: str | None = USER_AGENT,
    write_limit: int | tuple[int, int | None] = 2**15,
    origin: str | None = None,
    **kwargs: Any,
) -> WireConnection:
    """Open a WebSocket client connection to ``uri`` (``ws://`` or ``wss://``).

    Raises :class:`~websockets.exceptions.InvalidURI` for a bad URI,
    :class:`~websockets.exceptions.InvalidStatus` when the server answers the
    upgrade with another status (``e.response.status_code``; redirects are
    not followed), another :class:`~websockets.exceptions.InvalidHandshake`
    for a bad response, :class:`OSError` when the TCP or TLS connection
    fails, :class:`TimeoutError` after ``open_timeout``. ``ssl`` None on a
    ``wss://`` URI means a default context. Other keyword arguments go to
    ``loop.create_connection`` (``sock``, ``local_addr``, ...).
    """
    if compression is not None:
        raise ValueError(f"unsupported compression: {compression} (smsgnet.wire has none)")
    if ping_interval is not None:
        raise ValueError("smsgnet.wire sends no keepalive pings: pass ping_interval=None")
    if proxy is not None:
        raise ValueError("smsgnet.wire does not connect through proxies: pass proxy=None")
    ws_uri = parse_uri(uri)
    if not ws_uri.secure and ssl is not None:
        raise ValueError("ssl argument is incompatible with a ws:// URI")
    loop = asyncio.get_running_loop()
    ssl_context = (ssl or ssl_module.create_default_context()) if ws_uri.secure else None

    def factory() -> WireConnection:
        protocol = ClientProtocol(ws_uri, origin=cast(Origin | None, origin), max_size=max_size)
        return WireConnection(protocol, close_timeout=close_timeout, max_queue=max_queue,
                              write_limit=write_limit)

    conn: WireConnection | None = None
    try:
        async with asyncio.timeout(open_timeout):
            if ssl_context is not None:
                kwargs.setdefault("server_hostname", ws_uri.host)
            if kwargs.get("sock") is None:
                kwargs.setdefault("host", ws_uri.host)
                kwargs.setdefault("port", ws_uri.port)
            _, conn = await loop.create_connection(factory, ssl=ssl_context, **kwargs)
            protocol = conn.protocol
            assert isinstance(protocol, ClientProtocol)
            request = conn.request = protocol.connect()
            if user_agent_header is not None:
                request.headers.setdefault("User-Agent", user_agent_header)
            protocol.send_request(request)
            conn._flush()
            await conn._handshake_waiter  # type: ignore[misc]  # not detached before the upgrade
            if protocol.handshake_exc is not None:
                raise protocol.handshake_exc
            # upgraded; if it already closed again (say, an oversize first
            # frame), recv() says so, as with websockets
    except TimeoutError as e:
        if conn is not None:
            conn.transport.abort()
        raise TimeoutError("timed out during opening handshake") from e
    except BaseException:
        if conn is not None:
            conn.transport.abort()
        raise
    return conn


# -- server ------------------------------------------------------------------------


class WireServer:
    """A listening WebSocket server made by :func:`serve`.

    ``handler(conn)`` runs as a task per connection whose upgrade succeeded;
    when it returns the connection is closed (1000, or 1011 if it raised),
    unless the handler detached it (:meth:`WireConnection.detach`): then the
    connection lives on, driven by its callback, with no task of its own."""

    def __init__(
        self,
        handler: Callable[[WireConnection], Awaitable[None]],
        process_request: ProcessRequest | None,
        server_header: str | None,
        open_timeout: float | None,
    ) -> None:
        self.handler = handler
        self.process_request = process_request
        self.server_header = server_header
        self.open_timeout = open_timeout
        self.server: asyncio.Server = None  # type: ignore[assignment]  # set by serve()
        #: Connections whose upgrade succeeded and whose handler has not returned.
        self.all_connections: set[WireConnection] = set()
        self.handler_tasks: set[asyncio.Task[None]] = set()
        self._close_task: asyncio.Task[None] | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def connections(self) -> set[WireConnection]:
        """Open connections (upgrade done, closing handshake not started)."""
        return {c for c in self.all_connections if c.protocol.state is OPEN}

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self.server.sockets)

    def is_serving(self) -> bool:
        return self.server.is_serving()

    def close(self, close_connections: bool = True, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Stop accepting; refuse upgrades in progress with 503; when
        ``close_connections`` close open connections with ``code``. Idempotent;
        :meth:`wait_closed` waits for the handlers to return."""
        if self._close_task is None:
            self.server.close()  # at once (websockets does it in the task): no new accept after this call
            self._close_task = asyncio.get_running_loop().create_task(
                self._close(close_connections, code, reason))

    async def _close(self, close_connections: bool, code: int, reason: str) -> None:
        if close_connections:
            tasks = [asyncio.create_task(c.close(code, reason)) for c in self.connections]
            if tasks:
                await asyncio.wait(tasks)
        await self.server.wait_closed()
        if self.handler_tasks:
            await asyncio.wait(self.handler_tasks)
        # detached connections have no handler task: wait for their sockets instead
        lost = [c._lost_future() for c in self.all_connections if c._on_ready is not None and not c._gone]
        if lost:
            await asyncio.wait(lost)
        self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every handler has returned."""
        await asyncio.shield(self._closed)

    async def __aenter__(self) -> WireServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    async def _run(self, conn: WireConnection) -> None:
        """One accepted TCP connection: the upgrade, then the handler, then the close."""
        try:
            try:
                async with asyncio.timeout(self.open_timeout):
                    await self._upgrade(conn)
            except TimeoutError:
                conn.transport.abort()
                return
            if conn.protocol.state is not OPEN:
                # refused (or lost): the response went out with the end of the
                # stream; the close timer bounds the wait for the client to hang up
                await conn.wait_closed()
                return
            self.all_connections.add(conn)
            detached = False
            try:
                await self.handler(conn)
            except Exception:
                log.error("connection handler failed", exc_info=True)
                await conn.close(CloseCode.INTERNAL_ERROR)
            except BaseException:
                conn.transport.abort()
                raise
            else:
                # a handler that detached the connection handed it to callbacks: it stays
                # open (and listed, until connection_lost) without this task
                detached = conn._on_ready is not None and not conn._gone
                if not detached:
                    await conn.close()
            finally:
                if not detached:
                    self.all_connections.discard(conn)
        except Exception:
            log.error("connection failed", exc_info=True)
            conn.transport.abort()

    async def _upgrade(self, conn: WireConnection) -> None:
        await conn._handshake_waiter  # type: ignore[misc]  # not detached before the upgrade
        protocol = conn.protocol
        assert isinstance(protocol, ServerProtocol)
        request = conn.request
        if request is None:  # no valid request: the protocol already ends the stream
            if protocol.writes:
                conn._flush()
            conn._arm_close_timer()
            return
        response: Response | None = None
        if self.process_request is not None:
            try:
                result = self.process_request(conn, request)
                response = await result if isinstance(result, Awaitable) else result
            except Exception as exc:
                protocol.handshake_exc = exc
                log.error("process_request failed", exc_info=True)
                response = protocol.reject(http.HTTPStatus.INTERNAL_SERVER_ERROR,
                                           "Failed to open a WebSocket connection.\n"
                                           "See server log for more information.\n")
        if response is None:
            response = protocol.accept(request)
        if self.server_header is not None:
            response.headers["Server"] = self.server_header
        if response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS and not self.server.is_serving():
            response = protocol.reject(http.HTTPStatus.SERVICE_UNAVAILABLE, "Server is shutting down.\n")
        if protocol.state is CONNECTING:
            conn.response = response
            protocol.send_response(response)
            conn._flush()
            if protocol.state is not OPEN:
                conn._arm_close_timer()


async def serve(
    handler: Callable[[WireConnection], Awaitable[None]],
    host: str | None = None,
    port: int | None = None,
    *,
    process_request: ProcessRequest | None = None,
    compression: str | None = None,
    max_size: int | None | tuple[int | None, int | None] = 2**20,
    max_queue: int | None | tuple[int | None, int | None] = 16,
    ping_interval: float | None = None,
    close_timeout: float | None = 10,
    open_timeout: float | None = 10,
    ssl: ssl_module.SSLContext | None = None,
    server_header: str | None = SERVER,
    write_limit: int | tuple[int, int | None] = 2**15,
    **kwargs: Any,
) -> WireServer:
    """Listen on ``host:port``; run ``handler(conn)`` for every upgraded connection.

    ``process_request(conn, request)`` (a function or coroutine) may return
    ``conn.respond(status, text)`` to refuse: the response is sent, the stream
    ended and the handler never called. A client that has not finished the
    upgrade within ``open_timeout`` is dropped. Other keyword arguments go to
    ``loop.create_server``.
    """
    if compression is not None:
        raise ValueError(f"unsupported compression: {compression} (smsgnet.wire has none)")
    if ping_interval is not None:
        raise ValueError("smsgnet.wire sends no keepalive pings: pass ping_interval=None")
    server = WireServer(handler, process_request, server_header, open_timeout)

    def factory() -> WireConnection:
        conn = WireConnection(ServerProtocol(max_size=max_size), close_timeout=close_timeout,
                              max_queue=max_queue, write_limit=write_limit)
        conn._server = server
        return conn

    if ssl is not None:
        kwargs.setdefault("ssl_handshake_timeout", open_timeout)
        kwargs.setdefault("ssl_shutdown_timeout", close_timeout)
    loop = asyncio.get_running_loop()
    server.server = await loop.create_server(factory, host, port, ssl=ssl, **kwargs)
    return server


#: Drop-in names for the websockets.asyncio types smsgnet annotates with.
Server = WireServer
ServerConnection = WireConnection
ClientConnection = WireConnection
