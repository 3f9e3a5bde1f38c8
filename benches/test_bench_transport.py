"""The end-to-end transport benchmarks run, in their --quick size.

Each script starts a server node in a child process and drives it from a
client node; here we only check that it completes, cleans up, and prints a
well-formed JSON result line with positive figures. No timing assertions:
CI machines are too noisy for that (the real figures are in docs/performance.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHES = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def run_quick(script: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(BENCHES / script), "--quick"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"bench"')]
    assert len(lines) == 1, f"{script} printed {len(lines)} result lines:\n{proc.stdout}"
    result = json.loads(lines[0])
    assert result["bench"] == script.removesuffix(".py")
    assert result["quick"] is True
    # the human-readable summary comes too
    assert result["bench"] + ":" in proc.stdout
    return result


def positive(result: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = result[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)


def test_throughput_quick() -> None:
    r = run_quick("transport_throughput.py")
    positive(r, "msgs_per_sec", "messages", "elapsed_s", "payload_bytes", "window")
    assert r["payload_bytes"] == 1024
    assert r["messages"] >= 200
    assert r["echoed_total"] == r["sent_total"]  # every message came back
    assert r["server_drops"] == {}  # rate limiting was off
    demo = r["rate_limit_demo"]
    positive(demo, "sent", "echoed")
    assert demo["echoed"] < demo["sent"]  # the default limit let the burst through, not the rest
    assert demo["server_drops"].get("rate_limited", 0) > 0


def test_ping_rtt_quick() -> None:
    r = run_quick("transport_ping_rtt.py")
    positive(r, "pings", "p50_us", "p99_us", "mean_us", "min_us", "max_us")
    assert r["pings"] == 50
    assert r["min_us"] <= r["p50_us"] <= r["p99_us"] <= r["max_us"]
    assert r["server_drops"] == {}


def test_idle_rss_quick() -> None:
    r = run_quick("transport_idle_rss.py")
    positive(r, "connections", "rss_kb_per_conn", "rss_before_kb", "rss_after_kb")
    assert r["connections"] == 50
    assert r["server_connections"] == 51  # the warm-up connection + 50
