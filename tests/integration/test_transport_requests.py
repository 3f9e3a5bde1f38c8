"""What users expect (issue 9): request/response, the message iterator, per-type
handlers, and errors that explain themselves, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap

import orjson
import pytest
from netkit import Inbox, wait_for

from smsgnet import (
    ConnectionClosedError,
    DisconnectCode,
    ErrorCode,
    InvalidKeyError,
    Message,
    MessageTooLarge,
    NodeManager,
    RemoteError,
    RequestTimeout,
    SealError,
    SmsgnetError,
    Transport,
    TransportConfig,
    TransportStopped,
)


async def server_with_handlers(make_node, **cfg):
    b = Transport(NodeManager.generate("server"), config=TransportConfig(listen_addr="127.0.0.1:0", **cfg))

    @b.on_message("add")
    async def add(conn, msg):
        await conn.send(msg.reply("sum", {"sum": sum(msg.payload["terms"])}))

    @b.on_message("fail")
    async def fail(conn, msg):
        await conn.send(msg.error_reply(ErrorCode.NOT_FOUND, "no such thing", "looked everywhere"))

    @b.on_message("slow")
    async def slow(conn, msg):
        await asyncio.sleep(msg.payload["seconds"])
        await conn.send(msg.reply("done"))

    await b.start()
    return b


async def test_request_returns_the_reply_and_the_handler_never_sees_it(make_node):
    b = await server_with_handlers(make_node)
    inbox = Inbox()
    a = await make_node("a", handler=inbox)
    try:
        conn = await a.connect(b.address)
        reply = await conn.request(Message.new("add", a.node.node_id, conn.peer_id, {"terms": [1, 2, 3]}), timeout=3)
        assert reply.type == "sum" and reply.payload == {"sum": 6}
        reply = await a.request(conn.peer_id, Message.new("add", "", conn.peer_id, {"terms": [4]}), timeout=3)
        assert reply.payload == {"sum": 4}
        assert await inbox.nothing_within(0.2)  # replies went to their requests only
    finally:
        await b.stop()


async def test_an_error_reply_raises_remote_error_with_its_fields(make_node):
    b = await server_with_handlers(make_node)
    a = await make_node("a")
    try:
        conn = await a.connect(b.address)
        with pytest.raises(RemoteError) as raised:
            await conn.request(Message.new("fail", "", conn.peer_id), timeout=3)
        e = raised.value
        assert (e.code, e.message, e.details) == (1003, "no such thing", "looked everywhere")
        assert "1003" in str(e) and "no such thing" in str(e)
        assert isinstance(e, SmsgnetError)
    finally:
        await b.stop()


async def test_no_reply_in_time_raises_request_timeout(make_node):
    b = await server_with_handlers(make_node)
    a = await make_node("a")
    try:
        conn = await a.connect(b.address)
        with pytest.raises(RequestTimeout, match="within 0.2s") as raised:
            await conn.request(Message.new("slow", "", conn.peer_id, {"seconds": 1}), timeout=0.2)
        assert isinstance(raised.value, TimeoutError) and isinstance(raised.value, SmsgnetError)
        assert conn.is_open  # a timeout is not a broken link
    finally:
        await b.stop()


async def test_waiting_requests_expire_each_at_its_own_timeout_in_order(make_node):
    """One timer per link serves every waiting request: each still fails at
    its own timeout, the later ones are not held up by the earlier, and an
    answered request among them is not disturbed."""
    b = await server_with_handlers(make_node)
    a = await make_node("a")
    conn = await a.connect(b.address)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def unanswered(timeout):
        with pytest.raises(RequestTimeout, match=f"within {timeout:g}s"):
            await conn.request(Message.new("nobody_answers", "", conn.peer_id), timeout=timeout)
        return loop.time() - start

    timeouts = [0.6, 0.2, 0.4]
    *waited, answer = await asyncio.wait_for(asyncio.gather(
        *(unanswered(t) for t in timeouts),
        conn.request(Message.new("add", "", conn.peer_id, {"terms": [2, 3]}), timeout=5)), 10)
    assert answer.payload == {"sum": 5}
    for timeout, took in zip(timeouts, waited):
        assert timeout - 0.01 <= took < timeout + 1.0, (timeout, took)  # its own deadline, not another's
    assert waited[1] < waited[2] < waited[0]
    assert conn.is_open and not conn._requests


async def test_a_request_stuck_behind_a_full_send_buffer_times_out_at_its_own_timeout(make_node):
    """request() waits with one timer handle; when its frame cannot even be
    handed to the socket (the peer stopped reading), that wait counts against
    the timeout too: RequestTimeout at ``timeout``, not the write deadline."""
    b = await server_with_handlers(make_node)
    a = await make_node("a", write_timeout=30.0, max_send_queue_bytes=64 * 1024 * 1024)
    try:
        conn = await a.connect(b.address)
        await wait_for(lambda: len(list(b.connections())) == 1)
        (server_side,) = list(b.connections())
        server_side._ws.transport.pause_reading()  # the peer reads nothing more
        filler = Message.new("fill", "", conn.peer_id, {"data": "x" * 200_000})
        while conn._ws.send_nowait(conn.session.seal(filler)):  # until the socket's buffer is full
            filler = Message.new("fill", "", conn.peer_id, {"data": "x" * 200_000})
        started = asyncio.get_running_loop().time()
        with pytest.raises(RequestTimeout, match="within 0.3s"):
            await conn.request(Message.new("add", "", conn.peer_id, {"terms": [1]}), timeout=0.3)
        assert asyncio.get_running_loop().time() - started < 10  # far from the 30 s write deadline
        assert conn.is_open
    finally:
        await b.stop()


async def test_a_link_that_closes_fails_its_pending_requests_with_code_and_reason(make_node):
    b = await server_with_handlers(make_node)
    a = await make_node("a")
    conn = await a.connect(b.address)
    await wait_for(lambda: b.get_connection(a.node.node_id) is not None)
    pending = asyncio.ensure_future(conn.request(Message.new("slow", "", conn.peer_id, {"seconds": 5}), timeout=5))
    await asyncio.sleep(0.1)
    await b.stop()
    with pytest.raises(ConnectionClosedError) as raised:
        await pending
    assert raised.value.code == DisconnectCode.SHUTDOWN and raised.value.reason == "server shutdown"
    assert "1004" in str(raised.value) and "server shutdown" in str(raised.value)


RPC_SERVER = textwrap.dedent("""
    import asyncio, sys
    from smsgnet import ErrorCode, NodeManager, Transport, TransportConfig

    async def main(state, port):
        t = Transport(NodeManager.load_or_generate(state, "rpc"), config=TransportConfig(listen_addr=f"127.0.0.1:{port}"))

        @t.on_message("add")
        async def add(conn, msg):
            await conn.send(msg.reply("sum", {"sum": sum(msg.payload["terms"])}))

        @t.on_message("fail")
        async def fail(conn, msg):
            await conn.send(msg.error_reply(ErrorCode.OPERATION_FAILED, "it broke"))

        @t.on_message("slow")
        async def slow(conn, msg):
            await asyncio.sleep(30)

        async with t:
            print(t.node.node_id, flush=True)
            await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_rpc_pair_in_two_processes_with_timeout_error_and_restart_mid_call(make_node, tmp_path):
    port, state = _free_port(), tmp_path / "rpc-state"
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def spawn() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", RPC_SERVER, str(state), str(port)], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, env=env)

    procs = [spawn()]
    a = await make_node("client", reconnect_initial_delay=0.05, reconnect_max_delay=0.5)
    try:
        server_id = (await asyncio.wait_for(asyncio.to_thread(procs[0].stdout.readline), 20)).strip()
        await a.connect(f"127.0.0.1:{port}", reconnect=True)
        assert (await a.request(server_id, Message.new("add", "", server_id, {"terms": [20, 22]}), timeout=5)
                ).payload == {"sum": 42}
        with pytest.raises(RemoteError, match="it broke"):
            await a.request(server_id, Message.new("fail", "", server_id), timeout=5)
        with pytest.raises(RequestTimeout):
            await a.request(server_id, Message.new("slow", "", server_id), timeout=0.3)
        # the server dies while a call is in flight: the call fails at once with the link's reason
        call = asyncio.ensure_future(a.request(server_id, Message.new("slow", "", server_id), timeout=20))
        await asyncio.sleep(0.2)
        procs[0].send_signal(signal.SIGKILL)
        with pytest.raises(ConnectionClosedError, match="connection"):
            await asyncio.wait_for(call, 10)
        procs.append(spawn())
        assert (await asyncio.wait_for(asyncio.to_thread(procs[1].stdout.readline), 20)).strip() == server_id
        await wait_for(lambda: a.get_connection(server_id) is not None, timeout=10)
        assert (await a.request(server_id, Message.new("add", "", server_id, {"terms": [1]}), timeout=5)
                ).payload == {"sum": 1}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


# -- the iterator and per-type handlers ---------------------------------------------------


async def test_the_iterator_under_a_fast_sender_delivers_everything_in_order_and_stays_bounded(make_node):
    b = await make_node("b", rate_limit_burst=None, message_queue_size=16)
    a = await make_node("a", rate_limit_burst=None)
    received: list[int] = []
    peak = 0

    async def consume():
        nonlocal peak
        async for conn, msg in b.messages():
            peak = max(peak, len(b._handlers.channel))
            received.append(msg.payload["n"])
            if len(received) < 50:
                await asyncio.sleep(0.005)  # a slow consumer at first
            if len(received) == 2000:
                return

    consumer = asyncio.ensure_future(consume())
    conn = await a.connect(b.address)
    for n in range(2000):
        await conn.send(Message.new("n", "", conn.peer_id, {"n": n}))
    await asyncio.wait_for(consumer, 20)
    assert received == list(range(2000))
    assert peak <= 16
    assert b.stats().drops == {} and b.stats().messages_unhandled == 0


async def test_the_iterator_ends_when_the_transport_stops(make_node):
    b = await make_node("b")
    seen = []

    async def consume():
        async for item in b.messages():
            seen.append(item)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    await b.stop()
    await asyncio.wait_for(task, 3)
    with pytest.raises(TransportStopped):
        async for _ in b.messages():
            pass


async def test_per_type_handlers_take_their_type_and_the_catch_all_the_rest(make_node):
    b = Transport(NodeManager.generate("b"), config=TransportConfig(listen_addr="127.0.0.1:0"))
    stats_calls, other = [], []

    @b.on_message("get_stats")
    def on_stats(conn, msg):
        stats_calls.append(msg.type)

    @b.on_message
    def catch_all(conn, msg):
        other.append(msg.type)

    async with b:
        a = await make_node("a")
        conn = await a.connect(b.address)
        for t in ("get_stats", "hello", "get_stats", "deploy"):
            await conn.send(Message.new(t, "", conn.peer_id))
        await wait_for(lambda: len(stats_calls) + len(other) == 4)
    assert stats_calls == ["get_stats", "get_stats"] and other == ["hello", "deploy"]


# -- errors that explain themselves ----------------------------------------------------------


async def test_a_bad_expected_key_is_an_smsgnet_error_naming_the_key(make_node):
    b = await make_node("b")
    a = await make_node("a")
    with pytest.raises(InvalidKeyError, match="'abc'"):
        await a.connect(b.address, expect_key="abc")


async def test_invalid_messages_are_refused_at_send_and_the_link_stays_up(make_node):
    b = await make_node("b")
    a = await make_node("a")
    conn = await a.connect(b.address)
    with pytest.raises(SealError, match="not JSON-serialisable.*set"):
        await conn.send(Message.new("x", "", conn.peer_id, {"s": {1, 2}}))
    with pytest.raises(SealError, match="type must be a non-empty string"):
        await conn.send(Message(type=""))
    assert conn.is_open
    await conn.send(Message.new("fine", "", conn.peer_id))


async def test_a_message_over_our_own_limit_raises_message_too_large_and_nothing_is_sent(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox)
    a = await make_node("a", max_message_size=64 * 1024)
    conn = await a.connect(b.address)
    with pytest.raises(MessageTooLarge) as raised:
        await conn.send(Message.new("big", "", conn.peer_id, {"data": "x" * (128 * 1024)}))
    assert raised.value.limit == 64 * 1024 and raised.value.size > 128 * 1024
    assert "max_message_size" in str(raised.value)
    assert conn.is_open
    await conn.send(Message.new("small", "", conn.peer_id))
    assert (await inbox.get()).type == "small"


async def test_a_message_over_the_peers_limit_closes_the_link_with_1009_and_says_so(make_node):
    b = await make_node("b", max_message_size=64 * 1024)
    a = await make_node("a")
    conn = await a.connect(b.address)
    await conn.send(Message.new("big", "", conn.peer_id, {"data": "x" * (128 * 1024)}))
    await asyncio.wait_for(conn.wait_closed(), 3)
    assert conn.close_code == 1009 and "max_message_size" in conn.close_reason
    with pytest.raises(ConnectionClosedError, match="1009"):
        await conn.send(Message.new("after", "", conn.peer_id))


async def test_a_stopped_transport_says_so_everywhere(make_node):
    b = await make_node("b")
    a = await make_node("a")
    await a.connect(b.address)
    await a.stop()
    msg = Message.new("x", a.node.node_id, b.node.node_id)
    for call in (a.start(), a.connect(b.address), a.send(b.node.node_id, msg), a.broadcast(msg),
                 a.request(b.node.node_id, msg)):
        with pytest.raises(TransportStopped, match="stopped"):
            await call


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
async def test_a_trusted_peer_can_be_given_its_own_rate_limit(make_node, protocol):
    trusted, other = NodeManager.generate("trusted"), NodeManager.generate("other")
    got: list[str] = []
    b = await make_node("b", handler=lambda conn, msg: got.append(conn.peer_id), rate_limit_burst=5,
                        rate_limit_per_sec=0.0, max_protocol=protocol,
                        peer_rate_limits={trusted.node_id: (None, 0.0), other.identity.public_key: (10, 0.0)})
    stranger = await make_node("stranger")
    for sender in (await make_node("t", node=trusted), await make_node("o", node=other), stranger):
        conn = await sender.connect(b.address)
        assert conn.protocol == protocol
        for i in range(50):
            await conn.send(Message.new("n", "", conn.peer_id, {"i": i}))
    await wait_for(lambda: sum(b.stats().drops.values()) + len(got) >= 150)
    # the dialler's first ping (its proof of key on 1.0) takes a token on both protocols
    assert got.count(trusted.node_id) == 50          # no limit (by node ID)
    assert got.count(other.node_id) == 10 - 1        # its own bucket (by key)
    assert got.count(stranger.node.node_id) == 5 - 1  # the default bucket
    assert b.stats().drops == {"rate_limited": (50 - 9) + (50 - 4)}
