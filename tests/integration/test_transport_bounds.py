"""Bounded resources (issue 8, bounded sending): a peer that never reads cannot
make a node buffer without limit or hold up broadcast() for the others."""

from __future__ import annotations

import asyncio
import resource
import time

from netkit import RawPeer, wait_for

from smsgnet import Message, SendQueueFull


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def test_a_non_reading_peer_under_broadcast_bounds_memory_and_broadcast_time(make_node):
    limit = 2 << 20
    b = await make_node("b", max_send_queue_bytes=limit, write_timeout=1.5, rate_limit_burst=None)
    got: list[int] = []
    reader = await make_node("reader", handler=lambda conn, msg: got.append(msg.payload["i"]),
                             rate_limit_burst=None)
    await reader.connect(b.address)
    stuck = await RawPeer.connect(b.url, max_size=None)
    await stuck.send(stuck.message("proof"))  # proves its key, then never reads again
    stuck.ws.transport.pause_reading()
    await wait_for(lambda: b.connected_peers == 2)

    blob = "x" * (256 * 1024)
    before = rss_mib()
    durations: list[float] = []
    results: list[dict[str, BaseException]] = []
    stuck_conn = b.get_connection(stuck.node.node_id)
    peak = 0

    async def publish(i: int) -> None:
        started = time.monotonic()
        failures = await b.broadcast(Message.new("blob", "", "", {"i": i, "data": blob}))
        results.append({k: v for k, v in failures.items()})
        durations.append(time.monotonic() - started)

    # a publisher that does not wait: a broadcast every 20 ms, 25 MiB offered to the stuck peer
    tasks = []
    for i in range(100):
        tasks.append(asyncio.ensure_future(publish(i)))
        if stuck_conn.is_open:
            peak = max(peak, stuck_conn._ws.write_buffer_size())
        await asyncio.sleep(0.02)
    await asyncio.gather(*tasks)
    full = sum(isinstance(r.get(stuck.node.node_id), SendQueueFull) for r in results)
    assert all(reader.node.node_id not in r for r in results)
    assert peak <= limit  # never more than max_send_queue_bytes in line for the stuck peer
    slowest = max(durations)
    assert full > 0  # the stuck peer's queue filled and further sends were refused
    assert slowest < b.config.write_timeout + 1.0  # broadcast never waits on one peer beyond the deadline
    assert rss_mib() - before < 64  # not the 250 MiB of an unbounded queue
    # the reader got everything meanwhile
    await wait_for(lambda: len(got) == 100, timeout=5)
    assert got == list(range(100))
    stuck.ws.transport.abort()  # a client that stopped reading cannot close politely


async def test_a_stalled_write_closes_that_peer_with_a_counted_reason(make_node):
    b = await make_node("b", write_timeout=0.5, rate_limit_burst=None)
    stuck = await RawPeer.connect(b.url, max_size=None)
    await stuck.send(stuck.message("proof"))
    stuck.ws.transport.pause_reading()
    await wait_for(lambda: b.connected_peers == 1)
    conn = b.get_connection(stuck.node.node_id)
    blob = "x" * (256 * 1024)
    for i in range(60):
        try:
            await conn.send(Message.new("blob", "", "", {"data": blob}))
        except Exception:  # noqa: BLE001 - SendQueueFull or ConnectionClosedError
            if not conn.is_open:
                break
    await asyncio.wait_for(conn.wait_closed(), 5)
    assert conn.close_reason == "write timeout" and conn.close_code == 1003
    stuck.ws.transport.abort()  # a client that stopped reading cannot close politely
