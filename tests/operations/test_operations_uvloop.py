"""docs/operations.md says smsgnet runs on uvloop: two nodes, a request, a broadcast,
a replay dropped, a metrics scrape and a clean stop, with uvloop.run() and with the
event loop policy, in a fresh interpreter each."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("uvloop", reason="uvloop is in the test extra (not on Windows)")

PROGRAM = '''
import asyncio, sys, urllib.request
import uvloop
from smsgnet import Message, NodeManager, Transport, TransportConfig
from smsgnet.metrics import serve_metrics

async def main() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop), type(asyncio.get_running_loop())
    config = TransportConfig(listen_addr="127.0.0.1:0")
    a, b = Transport(NodeManager.generate("a"), config=config), Transport(NodeManager.generate("b"), config=config)
    seen = []

    @b.on_message
    async def answer(conn, msg):
        seen.append(msg.type)
        if msg.type == "get":
            await conn.send(msg.reply("got", msg.payload))

    async with a, b:
        conn = await a.connect(b.address, expect_key=b.node.identity.public_key)
        reply = await conn.request(Message.new("get", a.node_id, conn.peer_id, {"n": 1}), timeout=5)
        assert reply.payload == {"n": 1}, reply
        note = Message.new("note", a.node_id, conn.peer_id, None)
        await conn.send(note)
        await conn.send(note)
        assert await a.broadcast(Message.new("all", a.node_id, "", 2)) == {}
        async with asyncio.timeout(5):
            while b.stats().drops.get("duplicate") != 1 or "all" not in seen:
                await asyncio.sleep(0.01)
        metrics = await serve_metrics(b, "127.0.0.1", 0)
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(metrics.url, timeout=5).read().decode())
        await metrics.close()
        assert 'smsgnet_drops_total{reason="duplicate"} 1.0' in text, text
        assert "smsgnet_connections 1.0" in text
    assert seen == ["get", "note", "all"], seen
    print("ok", type(asyncio.get_running_loop()).__module__)

if sys.argv[1] == "run":
    uvloop.run(main())
else:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main())
'''


@pytest.mark.parametrize("how", ["run", "policy"])
def test_smsgnet_on_uvloop(how):
    r = subprocess.run([sys.executable, "-c", PROGRAM, how], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok uvloop"
