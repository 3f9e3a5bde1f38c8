"""smsgnet against plain websockets + orjson in one run: throughput vs message size,
latency percentiles, memory vs connections; a JSON of the numbers, PNG plots and a
markdown table of ratios (issue 10).

The baseline is the one of ``benches/pair_vs_websockets.py``: plain ``websockets``
(its asyncio API) carrying transport-Message-shaped JSON with ``orjson``, no handshake
and no crypto; its server parses each message, builds the echo reply and serialises
it, as the smsgnet echo server does. Everything is two processes on 127.0.0.1 (a
server process and this one), and both sides of every figure are measured in this
run, one after the other, the order alternating from point to point:

* throughput: pipelined echo of one message size at a time (64 B, 1 KiB, 16 KiB,
  64 KiB, 1 MiB of payload data; the "1 MiB" point is 1 MiB - 1 KiB so that the
  sealed frame fits the default ``max_message_size`` of 1 MiB), at most ``--window``
  messages in flight and never more than 3 MiB (smsgnet refuses a send that would
  queue more than ``max_send_queue_bytes`` = 4 MiB for one peer). smsgnet:
  ``transport_throughput.measure`` against ``_bench_server.py``; baseline:
  ``pair_vs_websockets.plain_client`` against its ``--plain-server``.
* latency: sequential round trips. smsgnet: ping -> pong
  (``transport_ping_rtt.run``; the server's transport answers); baseline: a
  ping-shaped JSON message echoed by the plain server. p50/p90/p99/p99.9.
* memory: server VmRSS per idle connection at 100, 500, 1000, 2000 connections.
  smsgnet: ``transport_idle_rss.run`` (handshaken, proven links); baseline: plain
  websockets connections to the plain server, each having echoed one message.

    python benches/plots.py                 # full run, about 2.5 minutes
    python benches/plots.py --quick         # about 30 s, fewer sizes/points
    python benches/plots.py --replot docs/perf/results.json   # redraw from a JSON

Writes ``results.json``, ``throughput.png``, ``latency.png`` and ``memory.png`` to
``--out`` (default ``docs/perf/``) and prints a markdown table with the ratios
smsgnet / baseline. The plots need matplotlib: ``pip install 'smsgnet[plots]'``;
without it the JSON and the table are still written and the script exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

KIB, MIB = 1024, 1024 * 1024
#: payload data bytes per message; the last is "1 MiB", less 1 KiB so that the sealed frame
#: (payload + ~400 bytes) fits smsgnet's default max_message_size and websockets' max_size (1 MiB)
SIZES = (64, KIB, 16 * KIB, 64 * KIB, MIB - KIB)
#: bytes in flight at most (smsgnet refuses a send that queues > max_send_queue_bytes = 4 MiB)
WINDOW_BYTES = 3 * MIB
CONNS = (100, 500, 1000, 2000)
MISSING_MATPLOTLIB = "matplotlib is not installed: pip install 'smsgnet[plots]' (or pip install 'matplotlib>=3.7')"

SMSGNET, BASELINE = "smsgnet", "plain websockets + orjson"
COLORS = {SMSGNET: "#1f77b4", BASELINE: "#ff7f0e"}


def size_label(n: int) -> str:
    if n >= MIB - KIB:
        return "1 MiB"
    return f"{n // KIB} KiB" if n >= KIB else f"{n} B"


def window_for(size: int, window: int) -> int:
    return max(2, min(window, WINDOW_BYTES // (size + 512)))


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# -- the plain websockets + orjson server (pair_vs_websockets.py --plain-server) ---------------------------


@contextlib.contextmanager
def plain_server() -> Iterator[tuple[int, int]]:
    """The baseline's server process; yields (port, pid)."""
    import pair_vs_websockets

    proc = subprocess.Popen([sys.executable, pair_vs_websockets.__file__, "--plain-server"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline()), proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def plain_message(kind: str, payload: Any) -> dict[str, Any]:
    """A transport-Message-shaped dict, as pair_vs_websockets' client sends."""
    return {"id": str(uuid.uuid4()), "type": kind, "from": "client", "to": "server",
            "ts": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "payload": payload}


# -- throughput ------------------------------------------------------------------------------------------


def smsgnet_throughput(size: int, window: int, warmup: float, duration: float) -> dict[str, Any]:
    import transport_throughput

    opts = argparse.Namespace(pin="none", window=window, warmup=warmup, duration=duration, messages=0,
                              rate_limit_demo=False)
    saved = transport_throughput.PAYLOAD
    transport_throughput.PAYLOAD = "x" * size  # the message sent by its measure()
    try:
        r = asyncio.run(transport_throughput.run(opts))
    finally:
        transport_throughput.PAYLOAD = saved
    if r["server_drops"] or r["client_drops"]:
        print(f"  warning: smsgnet {size_label(size)}: drops {r['server_drops']} / {r['client_drops']}",
              file=sys.stderr)
    return {"msgs_per_s": r["msgs_per_sec"], "other_load_cores": r["other_load_cores"], "messages": r["messages"],
            "cpu_pct": [r["client_cpu_pct"], r["server_cpu_pct"]]}


@contextlib.contextmanager
def short_close_timeout(seconds: float) -> Iterator[None]:
    """pair_vs_websockets.plain_client returns with up to a window of echoes unread; its
    close handshake then waits websockets' close_timeout (10 s) for a close frame queued
    behind them. It imports ``connect`` when called: hand it one with a shorter timeout."""
    import functools

    import websockets.asyncio.client as client

    original = client.connect
    client.connect = functools.partial(original, close_timeout=seconds)  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        client.connect = original  # type: ignore[misc]


def plain_throughput(size: int, window: int, warmup: float, duration: float) -> dict[str, Any]:
    import pair_vs_websockets
    from _bench_server import CpuWatch

    saved = pair_vs_websockets.PAYLOAD
    pair_vs_websockets.PAYLOAD = "x" * size  # the message sent (and checked) by its plain_client()
    try:
        with plain_server() as (port, pid), short_close_timeout(0.5):
            watch = CpuWatch(os.getpid(), pid)  # over warm-up + measurement
            watch.start()
            rate = asyncio.run(pair_vs_websockets.plain_client(port, window, warmup, duration))
            cpu = watch.stop()
    finally:
        pair_vs_websockets.PAYLOAD = saved
    return {"msgs_per_s": round(rate, 1), "other_load_cores": cpu["other_load_cores"],
            "messages": round(rate * duration), "cpu_pct": cpu["cpu_pct"]}


def measure_throughput(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """Every size ``--rounds`` times, round after round; in each round both pairs back to back,
    the order alternating. Per size: the median of each side and of the per-round ratios."""
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in opts.sizes}
    for rnd in range(opts.rounds):
        for i, size in enumerate(opts.sizes):
            window = window_for(size, opts.window)
            order = [(SMSGNET, smsgnet_throughput), (BASELINE, plain_throughput)]
            if (rnd + i) % 2:
                order.reverse()
            got: dict[str, Any] = {name: fn(size, window, opts.warmup, opts.duration) for name, fn in order}
            got["ratio"] = round(got[SMSGNET]["msgs_per_s"] / got[BASELINE]["msgs_per_s"], 3)
            got["first"] = order[0][0]
            runs[size].append(got)
            print(f"round {rnd + 1} {size_label(size):>6} (window {window}): smsgnet "
                  f"{got[SMSGNET]['msgs_per_s']:,.0f} msgs/s, baseline {got[BASELINE]['msgs_per_s']:,.0f} msgs/s, "
                  f"ratio {got['ratio']:.2f}", flush=True)
    rows = []
    for size in opts.sizes:
        row: dict[str, Any] = {"payload_bytes": size, "label": size_label(size), "window": window_for(size, opts.window)}
        for name in (SMSGNET, BASELINE):
            rates = [r[name]["msgs_per_s"] for r in runs[size]]
            row[name] = {"msgs_per_s": round(statistics.median(rates), 1),
                         "mb_per_s": round(statistics.median(rates) * size / 1e6, 2),
                         "msgs_per_s_range": [min(rates), max(rates)]}
        ratios = [r["ratio"] for r in runs[size]]
        row["ratio"] = round(statistics.median(ratios), 3)
        row["ratio_range"] = [min(ratios), max(ratios)]
        row["rounds"] = runs[size]
        rows.append(row)
    return rows


# -- latency ---------------------------------------------------------------------------------------------

PERCENTILES = (50, 90, 99, 99.9)


def percentiles(samples_ns: list[int]) -> dict[str, Any]:
    from smsgnet.cli.bench import percentile_us  # nearest rank, on sorted samples

    ordered = sorted(samples_ns)
    return {**{f"p{q:g}_us": percentile_us(ordered, q) for q in PERCENTILES},
            "mean_us": round(sum(ordered) / len(ordered) / 1000, 1), "max_us": round(ordered[-1] / 1000, 1),
            "samples": len(ordered)}


def smsgnet_rtts(pings: int, warmup: int) -> tuple[list[int], dict[str, Any]]:
    import transport_ping_rtt

    captured: list[list[int]] = []
    original = transport_ping_rtt.summarize

    def capture(samples_ns: list[int]) -> dict[str, float]:  # its run() hands the raw samples here
        captured.append(list(samples_ns))
        return original(samples_ns)

    transport_ping_rtt.summarize = capture
    try:
        r = asyncio.run(transport_ping_rtt.run(argparse.Namespace(
            pin="none", pings=pings, warmup=warmup, timeout=5.0, plain_baseline=False)))
    finally:
        transport_ping_rtt.summarize = original
    return captured[-1], {"other_load_cores": r["other_load_cores"], "cpu_pct": [r["client_cpu_pct"],
                                                                                   r["server_cpu_pct"]]}


async def _plain_rtts(port: int, pings: int, warmup: int) -> list[int]:
    import orjson
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None, max_size=2**20) as ws:
        clock = time.perf_counter_ns

        async def one() -> int:
            msg = plain_message("ping", {})
            t0 = clock()
            await ws.send(orjson.dumps(msg))
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5.0))
            elapsed = clock() - t0
            assert reply["replyTo"] == msg["id"]
            return elapsed

        for _ in range(warmup):
            await one()
        return [await one() for _ in range(pings)]


def plain_rtts(pings: int, warmup: int) -> tuple[list[int], dict[str, Any]]:
    from _bench_server import CpuWatch

    with plain_server() as (port, pid):
        watch = CpuWatch(os.getpid(), pid)
        watch.start()
        samples = asyncio.run(_plain_rtts(port, pings, warmup))
        cpu = watch.stop()
    return samples, {"other_load_cores": cpu["other_load_cores"], "cpu_pct": cpu["cpu_pct"]}


def measure_latency(opts: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"pings": opts.pings, "warmup_pings": opts.warmup_pings,
                           "smsgnet_what": "ping -> pong (Message.ping; the server's transport answers)",
                           "baseline_what": "ping-shaped JSON echoed by the plain server (orjson parse, reply, dump)"}
    for name, fn in ((SMSGNET, smsgnet_rtts), (BASELINE, plain_rtts)):
        samples, extra = fn(opts.pings, opts.warmup_pings)
        out[name] = {**percentiles(samples), **extra,
                     "rtts_us": [round(s / 1000, 1) for s in samples]}  # raw, in order of measurement
    s, b = out[SMSGNET], out[BASELINE]
    print("latency (round trip, µs):  " + "   ".join(
        f"p{q:g} {s[f'p{q:g}_us']:.0f} vs {b[f'p{q:g}_us']:.0f}" for q in PERCENTILES), flush=True)
    return out


# -- memory ----------------------------------------------------------------------------------------------


def smsgnet_idle_rss(conns: int, settle: float) -> dict[str, Any]:
    import transport_idle_rss

    r = asyncio.run(transport_idle_rss.run(argparse.Namespace(conns=conns, settle=settle, concurrency=50,
                                                              timeout=20.0, reping=False)))
    return {"kb_per_conn": r["rss_kb_per_conn"], "rss_before_kb": r["rss_before_kb"],
            "rss_after_kb": r["rss_after_kb"]}


async def _plain_idle_rss(port: int, pid: int, conns: int, settle: float) -> dict[str, Any]:
    import orjson
    from _bench_server import read_rss_kb
    from websockets.asyncio.client import ClientConnection, connect

    clients: list[ClientConnection] = []

    async def one() -> None:
        async with asyncio.timeout(20):
            ws = await connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None, proxy=None,
                               max_size=2**20, user_agent_header=None)
            clients.append(ws)
            await ws.send(orjson.dumps(plain_message("hello", {})))
            orjson.loads(await ws.recv())  # the server handled it: the connection is live

    try:
        await one()  # warm-up connection, as transport_idle_rss opens
        await asyncio.sleep(settle)
        before = read_rss_kb(pid)
        sem = asyncio.Semaphore(50)

        async def limited() -> None:
            async with sem:
                await one()

        await asyncio.gather(*(limited() for _ in range(conns)))
        await asyncio.sleep(settle)
        after = read_rss_kb(pid)
    finally:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
    return {"kb_per_conn": round((after - before) / conns, 2), "rss_before_kb": before, "rss_after_kb": after}


def plain_idle_rss(conns: int, settle: float) -> dict[str, Any]:
    with plain_server() as (port, pid):  # inherits our RLIMIT_NOFILE
        return asyncio.run(_plain_idle_rss(port, pid, conns, settle))


def measure_memory(opts: argparse.Namespace) -> list[dict[str, Any]]:
    from _bench_server import raise_nofile_limit

    need = max(opts.conns) + 256
    soft, _ = raise_nofile_limit(need)
    if soft < need:
        raise SystemExit(f"ulimit -n is {soft}, need {need} file descriptors for {max(opts.conns)} connections")
    rows = []
    for i, n in enumerate(opts.conns):
        runs = [(SMSGNET, smsgnet_idle_rss), (BASELINE, plain_idle_rss)]
        if i % 2:
            runs.reverse()
        row: dict[str, Any] = {"connections": n}
        for name, fn in runs:
            row[name] = fn(n, opts.settle)
        row["ratio"] = round(row[SMSGNET]["kb_per_conn"] / row[BASELINE]["kb_per_conn"], 3)
        print(f"memory {n:>5} idle links: smsgnet {row[SMSGNET]['kb_per_conn']:.1f} kB each, baseline "
              f"{row[BASELINE]['kb_per_conn']:.1f} kB each; ratio {row['ratio']:.2f}", flush=True)
        rows.append(row)
    return rows


def dump_json(results: dict[str, Any]) -> str:
    """Indented JSON with every list of numbers or strings on one line (the round trips)."""
    import re

    text = json.dumps(results, indent=1, ensure_ascii=False)
    compact = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                     lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"
                     if m.group(1).strip() else "[]", text)
    return (compact if json.loads(compact) == results else text) + "\n"  # a string with brackets: as is


# -- the machine -----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("smsgnet", "websockets", "orjson", "uvloop"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "python", "rust", "Cargo.toml"],
                             capture_output=True, text=True).stdout.split("\n")
    changed = [line[3:] for line in changed if line.strip()]
    import smsgnet  # what is measured: the installed package (editable: the working tree, changes and all)

    package = Path(smsgnet.__file__).parent
    installed = {"path": str(package)}
    for core in package.glob("_core*.so"):
        installed["core_built"] = datetime.datetime.fromtimestamp(core.stat().st_mtime, datetime.UTC).strftime(
            "%Y-%m-%d %H:%M UTC")
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "versions": versions, "git_head": commit,
        "uncommitted_changes": changed, "smsgnet_installed": installed,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def caption(meta: dict[str, Any]) -> str:
    load = meta.get("loadavg_start", [0])[0], meta.get("loadavg_end", [0])[0]
    text = (f"{meta['date']} · {meta['cpus']} × {meta['cpu']} · Python {meta['python']}, "
            f"websockets {meta['versions'].get('websockets', '?')} · git {meta['git_head']}"
            f"{' + local changes' if meta.get('uncommitted_changes') else ''} · "
            f"load avg {load[0]:.2f} → {load[1]:.2f}")
    if "other_load_cores" in meta:
        text += " · other processes: median {median:.2f}, max {max:.2f} core".format(**meta["other_load_cores"])
    return text


# -- the table -------------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lines = ["| measured in one run | smsgnet | plain websockets + orjson | smsgnet / baseline |",
             "|---|---:|---:|---:|"]
    for row in results.get("throughput", []):
        s, b = row[SMSGNET], row[BASELINE]
        lines.append(f"| echo throughput, {row['label']} messages, window {row['window']} (higher is better) "
                     f"| {s['msgs_per_s']:,.0f} msgs/s, {s['mb_per_s']:,.1f} MB/s "
                     f"| {b['msgs_per_s']:,.0f} msgs/s, {b['mb_per_s']:,.1f} MB/s | **{row['ratio']:.2f}**"
                     + (" ({:.2f}–{:.2f})".format(*row["ratio_range"]) if len(row["rounds"]) > 1 else "") + " |")
    lat = results.get("latency")
    if lat:
        for q in PERCENTILES:
            key = f"p{q:g}_us"
            s, b = lat[SMSGNET][key], lat[BASELINE][key]
            lines.append(f"| round trip p{q:g} (lower is better) | {s:,.0f} µs | {b:,.0f} µs | **{s / b:.2f}** |")
    for row in results.get("memory", []):
        s, b = row[SMSGNET], row[BASELINE]
        lines.append(f"| server RSS per idle link, {row['connections']:,} links (lower is better) "
                     f"| {s['kb_per_conn']:.1f} kB | {b['kb_per_conn']:.1f} kB | **{row['ratio']:.2f}** |")
    return "\n".join(lines)


# -- the plots -------------------------------------------------------------------------------------------


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain_numbers = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    meta = results["meta"]
    note = caption(meta)
    written = []

    def finish(fig: Any, title: str, name: str) -> None:
        fig.suptitle(title, fontsize=12)
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=8, color="#555555")
        fig.tight_layout(rect=(0, 0.04, 1, 0.95))
        path = out / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    rows = results.get("throughput")
    if rows:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
        xs = [r["payload_bytes"] for r in rows]
        for name in (SMSGNET, BASELINE):  # the median of the rounds, bars from the lowest to the highest
            for ax, scale in ((ax1, [1.0] * len(rows)), (ax2, [r["payload_bytes"] / 1e6 for r in rows])):
                mid = [r[name]["msgs_per_s"] * k for r, k in zip(rows, scale)]
                low = [m - r[name]["msgs_per_s_range"][0] * k for m, r, k in zip(mid, rows, scale)]
                high = [r[name]["msgs_per_s_range"][1] * k - m for m, r, k in zip(mid, rows, scale)]
                ax.errorbar(xs, mid, yerr=[low, high], fmt="o-", capsize=3, color=COLORS[name], label=name)
        for r in rows:  # the ratio above each pair of points
            top = max(r[SMSGNET]["mb_per_s"], r[BASELINE]["mb_per_s"])
            ax2.annotate(f"{r['ratio']:.2f}×", (r["payload_bytes"], top), textcoords="offset points",
                         xytext=(0, 8), ha="center", fontsize=9)
        for ax, label in ((ax1, "messages echoed per second"), (ax2, "MB/s of payload (one way)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(xs, [r["label"] for r in rows])
            ax.yaxis.set_major_formatter(plain_numbers)
            ax.minorticks_off()
            ax.set_xlabel("payload per message")
            ax.set_ylabel(label)
            ax.grid(True, which="major", alpha=0.3)
        ax1.legend(fontsize=9, loc="lower left")
        ax2.legend(fontsize=9, loc="lower right")
        ax2.set_ylim(top=ax2.get_ylim()[1] * 2)  # room for the ratios
        rounds = len(rows[0]["rounds"])
        finish(fig, "Pipelined echo, two processes on 127.0.0.1: median of "
               f"{rounds} round{'s' if rounds > 1 else ''} (numbers: smsgnet / baseline)", "throughput.png")

    lat = results.get("latency")
    if lat:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
        width = 0.38
        idx = range(len(PERCENTILES))
        for k, name in enumerate((SMSGNET, BASELINE)):
            vals = [lat[name][f"p{q:g}_us"] for q in PERCENTILES]
            bars = ax1.bar([i + (k - 0.5) * width for i in idx], vals, width, color=COLORS[name], label=name)
            ax1.bar_label(bars, fmt="%.0f", fontsize=8)
        ax1.set_xticks(list(idx), [f"p{q:g}" for q in PERCENTILES])
        ax1.set_ylabel("round trip, µs")
        ax1.legend(fontsize=9)
        ax1.grid(True, axis="y", alpha=0.3)
        for name in (SMSGNET, BASELINE):
            xs = sorted(lat[name]["rtts_us"])
            n = len(xs)
            ax2.plot(xs, [100 * (i + 1) / n for i in range(n)], color=COLORS[name], label=name)
        ax2.set_xscale("log")
        ax2.xaxis.set_major_formatter(plain_numbers)
        ax2.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if str(int(v))[0] in "25" else ""))
        ax2.set_xlabel("round trip, µs (log scale)")
        ax2.set_ylabel("% of round trips at most this long")
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=9, loc="lower right")
        finish(fig, f"Sequential round trips ({lat['pings']:,} each): smsgnet ping → pong vs. plain JSON echo",
               "latency.png")

    rows = results.get("memory")
    if rows:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
        xs = [r["connections"] for r in rows]
        for name in (SMSGNET, BASELINE):
            ax1.plot(xs, [(r[name]["rss_after_kb"] - r[name]["rss_before_kb"]) / 1024 for r in rows], "o-",
                     color=COLORS[name], label=name)
            ax2.plot(xs, [r[name]["kb_per_conn"] for r in rows], "o-", color=COLORS[name], label=name)
        ax1.set_ylabel("server RSS growth, MiB")
        ax2.set_ylabel("server RSS per idle link, kB")
        ax2.set_ylim(bottom=0)
        for ax in (ax1, ax2):
            ax.set_xlabel("idle connections to one server process")
            ax.set_xticks(xs)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=9)
        finish(fig, "Idle links: smsgnet (handshaken, proven) vs. plain websockets connections", "memory.png")
    return written


# -- main ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "perf", help="directory for results.json and the PNGs")
    ap.add_argument("--quick", action="store_true", help="about 30 s: shorter points, fewer sizes and connections")
    ap.add_argument("--window", type=int, default=1000, help="messages in flight at most (default 1000; "
                    f"never more than {WINDOW_BYTES // MIB} MiB)")
    ap.add_argument("--rounds", type=int, default=3, help="throughput: times every size is measured (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds before each throughput point is measured")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds measured per throughput point")
    ap.add_argument("--pings", type=int, default=5000, help="round trips measured for the percentiles")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading a server's RSS")
    ap.add_argument("--skip", action="append", default=[], choices=("throughput", "latency", "memory"),
                    help="leave a part out (repeatable)")
    ap.add_argument("--no-plots", action="store_true", help="the JSON and the table only")
    ap.add_argument("--replot", type=Path, metavar="JSON", help="draw the plots from a results.json, measure nothing")
    opts = ap.parse_args()

    if opts.replot:
        if not have_matplotlib():
            print(MISSING_MATPLOTLIB, file=sys.stderr)
            return 2
        saved = json.loads(opts.replot.read_text(encoding="utf-8"))
        opts.out.mkdir(parents=True, exist_ok=True)
        for path in plot(saved, opts.out):
            print(f"wrote {path}")
        print(table(saved))
        return 0

    plots = not opts.no_plots
    if plots and not have_matplotlib():
        print(f"{MISSING_MATPLOTLIB}\n(measuring anyway: the JSON and the table will be written, the plots "
              "skipped)", file=sys.stderr)
        plots = False
        missing = True
    else:
        missing = False

    opts.sizes, opts.conns, opts.warmup_pings = SIZES, CONNS, 200
    if opts.quick:
        opts.sizes, opts.conns, opts.rounds = (64, KIB, 64 * KIB, MIB - KIB), (100, 500), 1
        opts.warmup, opts.duration, opts.pings, opts.warmup_pings, opts.settle = 0.3, 1.0, 1000, 50, 0.3
    opts.out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    results: dict[str, Any] = {"bench": "plots", "quick": opts.quick, "meta": machine(),
                               "settings": {"rounds": opts.rounds, "window": opts.window, "window_bytes": WINDOW_BYTES,
                                            "warmup_s": opts.warmup, "duration_s": opts.duration,
                                            "settle_s": opts.settle}}
    print(f"plots: smsgnet vs {BASELINE}, {results['meta']['date']}, {results['meta']['cpus']} CPUs, "
          f"load average {results['meta']['loadavg_start'][0]:.2f}", flush=True)
    for part, measure in (("throughput", measure_throughput), ("latency", measure_latency),
                          ("memory", measure_memory)):
        if part not in opts.skip:
            t0 = time.monotonic()
            results[part] = measure(opts)
            print(f"  ({part}: {time.monotonic() - t0:.0f} s)", flush=True)
    results["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    others = [r[name].get("other_load_cores") for row in results.get("throughput", []) for r in row["rounds"]
              for name in (SMSGNET, BASELINE)]
    others += [results["latency"][name].get("other_load_cores") for name in (SMSGNET, BASELINE)
               if "latency" in results]
    others = [o for o in others if o is not None]
    if others:  # CPU used by other processes while our pairs ran (cores; > 0.25: disturbed)
        results["meta"]["other_load_cores"] = {"median": round(statistics.median(others), 2), "max": max(others)}
    results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    results["table_md"] = table(results)

    path = opts.out / "results.json"
    path.write_text(dump_json(results), encoding="utf-8")
    print(f"\nwrote {path}")
    if plots:
        for p in plot(results, opts.out):
            print(f"wrote {p}")
    print(f"\n{caption(results['meta'])}; {results['meta']['wall_s']:.0f} s\n")
    print(results["table_md"])
    if missing:
        print(f"\nplots skipped: {MISSING_MATPLOTLIB}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
