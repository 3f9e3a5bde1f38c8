"""Two and more nodes exchanging messages over real sockets."""

from __future__ import annotations

import asyncio

import pytest
from netkit import Inbox, wait_for

from smsgnet import ConnectionClosedError, ConnectionState, Message, NotConnectedError, SendQueueFull, Transport


async def test_handshake_and_messages_both_ways(make_node):
    a_inbox, b_inbox = Inbox(), Inbox()
    a = await make_node("a", handler=a_inbox)
    b = await make_node("b", handler=b_inbox)

    conn = await a.connect(b.address)
    assert conn.peer_id == b.node.node_id and conn.proven
    await conn.send(Message.new("hello", a.node.node_id, b.node.node_id, {"n": 1, "text": "<&> \u2028 🚀"}))
    got = await b_inbox.get()
    assert got.type == "hello" and got.payload == {"n": 1, "text": "<&> \u2028 🚀"}
    assert got.from_ == a.node.node_id

    await wait_for(lambda: b.get_connection(a.node.node_id) is not None)
    await b.send(a.node.node_id, got.reply("hello_back", {"ok": True}))
    back = await a_inbox.get()
    assert back.reply_to == got.id and back.payload == {"ok": True}
    assert a.connected_peers == 1 and b.connected_peers == 1
    assert [c.peer_id for c in a.connections()] == [b.node.node_id]


async def test_async_handler_and_decorator(make_node):
    b = await make_node("b")
    seen = asyncio.Event()

    async def handler(conn, msg):
        await conn.send(msg.reply("echo", msg.payload))
        seen.set()

    b.on_message  # the decorator form is tested below; here: set before start is required
    a_inbox = Inbox()
    a = await make_node("a", handler=a_inbox)
    b2 = await make_node("b2")
    with pytest.raises(Exception):
        b2.on_message(handler)  # already started

    from smsgnet import NodeManager, Transport, TransportConfig
    t = Transport(NodeManager.generate("c"), config=TransportConfig(listen_addr="127.0.0.1:0"))

    @t.on_message
    async def echo(conn, msg):
        await conn.send(msg.reply("echo", msg.payload))
        seen.set()

    async with t:
        conn = await a.connect(t.address)
        await conn.send(Message.new("q", a.node.node_id, conn.peer_id, [1, 2, 3]))
        reply = await a_inbox.get()
        assert reply.type == "echo" and reply.payload == [1, 2, 3]
        assert seen.is_set()


async def test_broadcast_reaches_all_but_the_sender(make_node):
    hub = await make_node("hub")
    inboxes = [Inbox() for _ in range(3)]
    spokes = [await make_node(f"s{i}", handler=inboxes[i]) for i in range(3)]
    for s in spokes:
        await s.connect(hub.address)
    await wait_for(lambda: hub.connected_peers == 3)

    # relaying a message that came from spoke 0: everyone but spoke 0 gets it
    origin = spokes[0].node.node_id
    failures = await hub.broadcast(Message.new("news", origin, "", {"v": 1}))
    assert failures == {}
    for inbox in inboxes[1:]:
        msg = await inbox.get()
        assert msg.type == "news" and msg.from_ == origin
    assert await inboxes[0].nothing_within(0.3)

    # the hub's own broadcast reaches all three
    await hub.broadcast(Message.new("all", hub.node.node_id, "", None))
    for inbox in inboxes:
        assert (await inbox.get()).type == "all"


async def test_broadcast_is_not_held_up_by_a_slow_peer(make_node):
    hub = await make_node("hub", write_timeout=1.0)
    fast_inbox = Inbox()
    fast = await make_node("fast", handler=fast_inbox)
    slow = await make_node("slow")
    await fast.connect(hub.address)
    slow_conn = await slow.connect(hub.address)
    await wait_for(lambda: hub.connected_peers == 2)
    # the slow peer stops reading: its socket buffers fill up
    slow_conn._ws.transport.pause_reading()
    big = {"blob": "x" * 200_000}
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(10):
        await hub.broadcast(Message.new("big", hub.node.node_id, "", big))
        # the fast peer gets each one promptly even while the slow one is stuck
        assert (await fast_inbox.get(timeout=3.0)).type == "big"
    assert loop.time() - started < 15
    slow_conn._ws.transport.resume_reading()


async def test_send_to_unknown_peer_raises(make_node):
    a = await make_node("a")
    with pytest.raises(NotConnectedError):
        await a.send("00" * 16, Message.new("x", a.node.node_id))


async def test_many_tasks_sending_at_once_never_interleave(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox, rate_limit_burst=None)
    a = await make_node("a")
    conn = await a.connect(b.address)
    payloads = [{"task": i, "blob": chr(65 + i % 26) * (1000 + 37 * i)} for i in range(64)]
    await asyncio.gather(*(conn.send(Message.new("part", a.node.node_id, conn.peer_id, p)) for p in payloads))
    received = [await inbox.get() for _ in payloads]
    assert sorted(m.payload["task"] for m in received) == list(range(64))
    for m in received:
        p = m.payload
        assert p == payloads[p["task"]]
    assert b.stats().drops == {}


async def test_stats_count_messages(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox)
    a = await make_node("a")
    conn = await a.connect(b.address)
    for i in range(5):
        await conn.send(Message.new("n", a.node.node_id, conn.peer_id, i))
    for _ in range(5):
        await inbox.get()
    assert b.stats().messages_in >= 5
    assert a.stats().messages_out >= 5
    assert conn.state is ConnectionState.OPEN


# -- send_nowait: sending from plain functions, with backpressure ----------------------------


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
async def test_a_plain_function_handler_answers_with_send_nowait_in_order(make_node, protocol):
    def echo(conn, msg):
        assert conn.send_nowait(msg.reply("echo", msg.payload)) is True  # a small buffer: no need to wait

    b = await make_node("b", handler=echo, max_protocol=protocol, rate_limit_burst=None)
    inbox = Inbox()
    a = await make_node("a", handler=inbox, max_protocol=protocol, rate_limit_burst=None)
    conn = await a.connect(b.address)
    assert conn.protocol == protocol
    for i in range(200):
        assert conn.send_nowait(Message.new("n", "", conn.peer_id, i)) is True
    assert [(await inbox.get()).payload for _ in range(200)] == list(range(200))
    assert conn.stats.messages_out >= 200 and conn.stats.bytes_out > 200 * 100  # (and the first keepalive ping)


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
async def test_a_read_of_many_frames_reaches_a_waiting_handler_one_at_a_time_in_order(make_node, protocol):
    # the frames of one read are opened in one native call (Session.receive_many);
    # a handler that waits still gets them one after the other, in order, and the
    # ones behind it wait for it
    seen: list[int] = []
    busy = False
    done = asyncio.Event()

    async def slow(conn, msg):
        nonlocal busy
        assert not busy, "two messages of one link handled at once"
        busy = True
        if msg.payload == "warm-up":
            busy = False
            done.set()
            return
        seen.append(msg.payload)
        if msg.payload % 20 == 0:
            await asyncio.sleep(0.002)
        busy = False
        if len(seen) == 300:
            done.set()

    b = await make_node("b", handler=slow, max_protocol=protocol, rate_limit_burst=None)
    a = await make_node("a", max_protocol=protocol, rate_limit_burst=None)
    conn = await a.connect(b.address)
    await conn.send(Message.new("n", "", conn.peer_id, "warm-up"))  # the link settled: later reads go to its reader
    await asyncio.wait_for(done.wait(), 10)
    done.clear()
    for i in range(300):
        assert conn.send_nowait(Message.new("n", "", conn.peer_id, i)) is True  # one iteration: a few writes
    await asyncio.wait_for(done.wait(), 10)
    assert seen == list(range(300))


async def test_send_nowait_says_slow_down_then_refuses_past_the_queue_limit_and_drain_waits(make_node):
    b_inbox = Inbox()
    b = await make_node("b", handler=b_inbox, rate_limit_burst=None)
    a = await make_node("a", max_send_queue_bytes=4 * 1024 * 1024, write_timeout=30.0)
    conn = await a.connect(b.address)
    await wait_for(lambda: b.get_connection(a.node.node_id) is not None)
    b.get_connection(a.node.node_id)._ws.transport.pause_reading()  # b reads nothing for now
    big = {"data": "x" * 100_000}
    sent = 0
    while conn.send_nowait(Message.new("big", "", conn.peer_id, {**big, "n": sent})):
        sent += 1
    sent += 1  # queued too: False only says "slow down"
    with pytest.raises(SendQueueFull):
        for _ in range(100):  # 10 MB more than the 4 MiB the queue may hold
            conn.send_nowait(Message.new("big", "", conn.peer_id, {**big, "n": sent}))
            sent += 1
    queued = conn._ws.write_buffer_size()
    with pytest.raises(SendQueueFull):
        conn.send_nowait(Message.new("big", "", conn.peer_id, big))
    assert conn._ws.write_buffer_size() == queued  # refused: nothing was added
    assert conn.is_open
    drained = asyncio.ensure_future(conn.drain())
    await asyncio.sleep(0.2)
    assert not drained.done()  # b still reads nothing
    b.get_connection(a.node.node_id)._ws.transport.resume_reading()
    await asyncio.wait_for(drained, 10)
    got = [(await b_inbox.get(timeout=10)).payload["n"] for _ in range(sent)]
    assert got == list(range(sent))  # everything queued arrived, in order; the refused never did


async def test_send_nowait_and_drain_on_a_closed_link_raise_connection_closed(make_node):
    b = await make_node("b")
    a = await make_node("a")
    conn = await a.connect(b.address)
    await conn.graceful_close("done")
    with pytest.raises(ConnectionClosedError):
        conn.send_nowait(Message.new("late", "", conn.peer_id))
    with pytest.raises(ConnectionClosedError):
        await conn.drain()
