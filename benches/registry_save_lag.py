"""How long a registry save blocks the event loop, and what the registry costs.

Issue 8: every save rewrote and fsynced the whole file inside the event loop
(40 throwaway keys with 900 KiB names: a 35 MiB file, an honest ping stalled
136 ms). Now identity fields are capped, auto-registered peers are bounded by
``max_peers``, and the transport callbacks only ask for a background write.

For each size N this script loads a registry of N peers with names at the
256-character limit (from a file, the way a node starts), then:

* times ``registry.save()`` in the calling thread (what the old
  ``mark_connected`` did inside the loop);
* runs an event loop with a 1 ms ticker while four new peers connect
  (``mark_connected``, each one a write in the background thread), and
  reports the worst delay the ticker saw beyond its 1 ms sleep, and the
  same with no registry work at all (the machine's own noise);
* reports the file size and the memory the registry holds per peer
  (tracemalloc, while loading).

    python benches/registry_save_lag.py                 # 100, 1,000, 10,000 (the default max_peers)
    python benches/registry_save_lag.py --sizes 100     # one size

Prints a human-readable summary, then one JSON result line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

from smsgnet import NodeManager
from smsgnet.registry import PeerRegistry


def write_file(path: Path, n: int) -> None:
    rows = b",".join(
        b'{"id":"%032x","name":"%s","public_key":"%s","address":"198.51.100.1:65535","role":"worker",'
        b'"added_at":1.0,"last_seen":%d,"origin":"auto"}' % (i, b"n" * 256, b"K" * 43 + b"=", i)
        for i in range(n))
    path.write_bytes(b'{"authMode":"open","peers":[' + rows + b"]}")


async def loop_stall(registry: PeerRegistry | None, spacing: float) -> float:
    """Worst extra delay of a 1 ms ticker while four peers connect (none
    when ``registry`` is None: the machine's own noise, for comparison)."""
    newcomers = [NodeManager.from_private_key(i.to_bytes(4, "big") + b"\x09" * 28, "n" * 256).identity
                 for i in range(4)]
    worst = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal worst
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t - 0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    for ident in newcomers:
        if registry is not None:
            registry.mark_connected(ident, "203.0.113.9:9091")
        await asyncio.sleep(spacing)
    if registry is not None:
        await registry.flush()
    stop = True
    await task
    return worst


def measure(n: int, directory: Path) -> dict[str, float]:
    path = directory / f"peers-{n}.json"
    write_file(path, n)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    registry = PeerRegistry(path, save_interval=0.05)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    t = time.perf_counter()
    registry.save()
    sync = time.perf_counter() - t
    worst = asyncio.run(loop_stall(registry, sync + 0.1))
    noise = asyncio.run(loop_stall(None, sync + 0.1))
    registry.close()
    return {"peers": n, "sync_save_ms": round(sync * 1000, 1), "worst_loop_stall_ms": round(worst * 1000, 1),
            "worst_stall_without_saves_ms": round(noise * 1000, 1),
            "file_bytes": path.stat().st_size, "memory_per_peer_bytes": round(held / n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        results = [measure(n, Path(d)) for n in args.sizes]
    for r in results:
        print(f"{r['peers']:>6} peers: file {r['file_bytes'] / 1024:8.0f} KiB, {r['memory_per_peer_bytes']} B/peer "
              f"in memory; save in the caller's thread {r['sync_save_ms']:6.1f} ms; "
              f"worst event-loop stall during background saves {r['worst_loop_stall_ms']:5.1f} ms "
              f"(without saves: {r['worst_stall_without_saves_ms']:.1f} ms)")
    print(json.dumps({"bench": "registry_save_lag", "results": results}))


if __name__ == "__main__":
    main()
