"""Helper of the end-to-end transport benchmarks (benches/transport_*.py).

Run as a script, it is the *server node*: one :class:`smsgnet.Transport` on
``127.0.0.1:0`` whose handler echoes every non-control message back
(``msg.reply("echo", msg.payload)``). It prints one JSON line on stdout when it
listens::

    {"event": "listening", "address": "127.0.0.1:PORT", "pid": ..., "node_id": ..., "public_key": ...}

then answers commands, one per line on stdin, with one JSON line each:

    stats                 transport counters (TransportStats as a dict)
    conns                 {"connections": n, "unproven": m}
    gc                    run gc.collect() twice
    rss                   {"rss_kb": VmRSS of this process}
    tasks                 {"tasks": asyncio tasks alive now (an idle link should have none)}
    trace_start [DEPTH]   start tracemalloc (for memory analysis, not for measurements)
    trace_stop [N]        the N biggest allocation sites since trace_start, then stop tracemalloc
    profile_start         start cProfile
    profile_stop PATH     stop cProfile and dump the stats to PATH
    quit                  stop the transport and exit (so does EOF on stdin)

With ``--plain-websockets`` it serves a bare ``websockets`` echo instead (no
smsgnet at all; only ``quit``/EOF), the floor the RTT benchmark compares with.

Imported, it gives the benchmark scripts :class:`BenchServer` (spawn, talk to,
and always clean up the server process) and a few small shared helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
#: the CPUs this process could use when it started (before any pinning)
ALL_CPUS = sorted(os.sched_getaffinity(0))


# ---------------------------------------------------------------------------
# shared helpers


def raise_nofile_limit(wanted: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to ``wanted`` (capped at the hard limit); return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft, hard


def read_rss_kb(pid: int) -> int:
    """VmRSS of a process in kB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return total - idle, total


class CpuWatch:
    """CPU used by our processes and by everything else on the machine during
    a measurement, to tell a clean run from one disturbed by other work."""

    #: more than this many cores of other work marks a run as disturbed
    DISTURBED_CORES = 0.25

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.cores = os.cpu_count() or 1

    def start(self) -> None:
        self._t = time.perf_counter()
        self._ours = [cpu_seconds(p) for p in self.pids]
        self._machine = _machine_ticks()

    #: /proc counts in clock ticks (10 ms): shorter windows say nothing
    MIN_WINDOW = 0.1

    def stop(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self._t
        if elapsed < self.MIN_WINDOW:
            return {"cpu_pct": [None] * len(self.pids), "machine_cores": self.cores,
                    "other_load_cores": None, "disturbed": None}
        ours = [cpu_seconds(p) - c for p, c in zip(self.pids, self._ours)]
        busy, total = (b - a for a, b in zip(self._machine, _machine_ticks()))
        machine_busy_cores = self.cores * busy / total if total else 0.0
        others = max(0.0, machine_busy_cores - sum(ours) / elapsed)
        return {
            "cpu_pct": [round(100 * c / elapsed, 1) for c in ours],
            "machine_cores": self.cores,
            "other_load_cores": round(others, 2),
            "disturbed": others > self.DISTURBED_CORES,
        }


def pin_processes(mode: str, server_pid: int) -> str:
    """CPU placement of this process and the server: ``none`` (leave it to the
    scheduler), ``same`` (both on the first CPU we may use), ``split`` (one CPU
    each). Returns a description for the result line."""
    if mode == "none":
        return "none"
    cpus = ALL_CPUS
    if mode == "same":
        client_cpu = server_cpu = cpus[0]
    elif mode == "split":
        if len(cpus) < 2:
            raise SystemExit("--pin split needs two CPUs")
        client_cpu, server_cpu = cpus[0], cpus[1]
    else:
        raise ValueError(mode)
    os.sched_setaffinity(0, {client_cpu})
    os.sched_setaffinity(server_pid, {server_cpu})
    return f"{mode} (client on CPU {client_cpu}, server on CPU {server_cpu})"


def describe_cpu(client_pct: float | None, server_pct: float | None, others: float | None) -> str:
    """One summary line about CPU use and other load on the machine."""
    if others is None:
        return "CPU: window too short to measure"
    line = (f"CPU: client {client_pct:.0f} %, server {server_pct:.0f} % of one core; "
            f"other load on the machine: {others:.2f} cores")
    if others > CpuWatch.DISTURBED_CORES:
        line += "  ** DISTURBED: rerun when the machine is quiet **"
    return line


def emit_result(result: dict[str, Any]) -> None:
    """The machine-readable result: one JSON line starting with ``{"bench":``."""
    print(json.dumps(result, sort_keys=False), flush=True)


# ---------------------------------------------------------------------------
# the client side: spawn and drive a server process


class BenchServer:
    """A server node in a child process. Use as a context manager: the child is
    always stopped (quit, then SIGTERM, then SIGKILL) when the block exits."""

    def __init__(self, *args: str, start_timeout: float = 20.0) -> None:
        self.args = list(args)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self.info: dict[str, Any] = {}

    def __enter__(self) -> BenchServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_bench_server.py"), *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the server's log goes to our stderr
            bufsize=0,
        )
        try:
            self.info = self._read_json(self.start_timeout)
        except BaseException:
            self.close()
            raise
        if self.info.get("event") != "listening":
            self.close()
            raise RuntimeError(f"server did not start: {self.info}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def address(self) -> str:
        return str(self.info["address"])

    @property
    def public_key(self) -> str:
        return str(self.info["public_key"])

    @property
    def url(self) -> str:
        return f"ws://{self.address}/ws"

    def _read_json(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"server (pid {self.proc.pid}) did not answer within {timeout:g}s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"server (pid {self.proc.pid}) exited (status {self.proc.poll()})")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def command(self, cmd: str, timeout: float = 20.0) -> dict[str, Any]:
        """Send one command line and return the server's JSON answer (blocking)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        return self._read_json(timeout)

    async def acommand(self, cmd: str, timeout: float = 20.0) -> dict[str, Any]:
        """:meth:`command` off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.command, cmd, timeout)

    async def aclose(self, timeout: float = 10.0) -> None:
        """:meth:`close` off the event loop, so this process keeps answering the
        server's close handshakes while it shuts down."""
        await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child: ``quit`` + EOF, then SIGTERM, then SIGKILL. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write(b"quit\n")
                    proc.stdin.close()
                except OSError:
                    pass
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(3)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            self.proc = None


# ---------------------------------------------------------------------------
# the server process


async def _serve(opts: argparse.Namespace) -> None:
    from smsgnet import ConnectionClosedError, NodeManager, Transport, TransportConfig

    raise_nofile_limit(opts.nofile)
    config = TransportConfig(
        listen_addr="127.0.0.1:0",
        max_conns=opts.max_conns,
        ping_interval=opts.ping_interval,
        handshake_timeout=30.0,
        rate_limit_burst=None if opts.rate_limit == "off" else 100,
    )
    transport = Transport(NodeManager.generate("bench-server"), config=config)

    echo_failures = 0

    @transport.on_message
    async def echo(conn: Any, msg: Any) -> None:
        nonlocal echo_failures
        try:
            await conn.send(msg.reply("echo", msg.payload))
        except ConnectionClosedError:
            # frames already read when the connection started closing (e.g. at
            # shutdown) are still delivered; their echoes cannot be sent
            echo_failures += 1

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    profiler = None

    async def commands() -> None:
        nonlocal profiler
        while True:
            line = await stdin.readline()
            if not line:
                break
            cmd, _, arg = line.decode().strip().partition(" ")
            if cmd == "quit":
                break
            if cmd == "stats":
                answer({**asdict(transport.stats()), "echo_failures": echo_failures})
            elif cmd == "conns":
                s = transport.stats()
                answer({"connections": s.connections, "unproven": s.unproven_connections,
                        "accepted": s.connections_accepted})
            elif cmd == "gc":
                gc.collect()
                gc.collect()
                answer({"ok": True})
            elif cmd == "rss":
                answer({"rss_kb": read_rss_kb(os.getpid())})
            elif cmd == "tasks":
                answer({"tasks": len(asyncio.all_tasks())})
            elif cmd == "trace_start":
                tracemalloc.start(int(arg or 1))
                answer({"ok": True})
            elif cmd == "trace_stop":
                snap = tracemalloc.take_snapshot()
                depth = tracemalloc.get_traceback_limit()
                tracemalloc.stop()
                top = snap.statistics("lineno" if depth == 1 else "traceback")
                answer({"total_kb": round(sum(s.size for s in top) / 1024, 1),
                        "top": [[" <- ".join(str(f) for f in s.traceback), round(s.size / 1024, 1), s.count]
                                for s in top[: int(arg or 25)]]})
            elif cmd == "profile_start":
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
                answer({"ok": True})
            elif cmd == "profile_stop":
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(arg)
                    profiler = None
                answer({"ok": True, "path": arg})
            else:
                answer({"error": f"unknown command {cmd!r}"})
        stop.set()

    await transport.start()
    try:
        answer({
            "event": "listening",
            "address": transport.address,
            "pid": os.getpid(),
            "node_id": transport.node.node_id,
            "public_key": transport.node.identity.public_key,
            "rate_limit": opts.rate_limit,
        })
        cmd_task = asyncio.create_task(commands())
        await stop.wait()
        cmd_task.cancel()
    finally:
        try:
            async with asyncio.timeout(8):
                await transport.stop()
        except TimeoutError:
            pass


async def _serve_plain() -> None:
    """A plain ``websockets`` echo server, no smsgnet: the floor under the transport."""
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
    async with serve(echo, "127.0.0.1", 0, compression=None, ping_interval=None, server_header=None) as server:
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(json.dumps({"event": "listening", "address": f"127.0.0.1:{port}", "pid": os.getpid(),
                                     "node_id": "", "public_key": "", "plain_websockets": True}) + "\n")
        sys.stdout.flush()
        while True:
            line = await stdin.readline()
            if not line or line.strip() == b"quit":
                break
            sys.stdout.write(json.dumps({"error": "plain server: only quit"}) + "\n")
            sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate-limit", choices=("off", "default"), default="off",
                    help="off: rate_limit_burst=None; default: TransportConfig() defaults (100 burst, 50/s)")
    ap.add_argument("--max-conns", type=int, default=100)
    ap.add_argument("--ping-interval", type=float, default=30.0)
    ap.add_argument("--nofile", type=int, default=4096, help="soft RLIMIT_NOFILE to ask for")
    ap.add_argument("--plain-websockets", action="store_true",
                    help="serve a plain websockets echo (no smsgnet) instead, for a baseline")
    ap.add_argument("--log-level", default="ERROR", help="smsgnet log level on stderr (drop warnings are WARNING)")
    opts = ap.parse_args()
    import logging

    logging.basicConfig(level=opts.log_level.upper(), format="server %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve_plain() if opts.plain_websockets else _serve(opts))


if __name__ == "__main__":
    main()
