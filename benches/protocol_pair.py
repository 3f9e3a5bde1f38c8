"""Protocol 2.0 pair against protocol 1.0 pair, back to back, as a ratio.

Issue 11's target: two smsgnet nodes on protocol 2.0 (Noise records, counter
nonces) against the same two nodes on protocol 1.0 (SMSG: envelope, SHA-256
keystream, XChaCha20-Poly1305, replay table), same traffic: the pipelined echo
of ``benches/transport_throughput.py`` (two processes on 127.0.0.1, rate limit
off), the client choosing the protocol (``--protocol 1.0`` never offers 2.0).

Each round runs both (the order alternates); the result is the median over
rounds of 2.0 / 1.0 per message size, with the range. Absolute figures drift
2-3x between days on these machines; the ratio in one run is the figure.

    python benches/protocol_pair.py                      # 1 KiB and 64 KiB, 3 rounds (~1 min)
    python benches/protocol_pair.py --sizes 1024 --rounds 1 --duration 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# in flight at most 3 MiB, below max_send_queue_bytes: the window rule of benches/plots.py
from plots import window_for  # noqa: E402


def run_pair(protocol: str, size: int, opts: argparse.Namespace) -> dict[str, float | str]:
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "transport_throughput.py"), "--no-rate-limit-demo",
         "--protocol", protocol, "--size", str(size), "--window", str(window_for(size, opts.window)),
         "--warmup", str(opts.warmup), "--duration", str(opts.duration)],
        capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["protocol"] != protocol:
        raise SystemExit(f"asked for protocol {protocol}, the link ran {result['protocol']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 65536], help="payload bytes")
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    opts = parser.parse_args()
    summary = []
    for size in opts.sizes:
        ratios, rows = [], []
        for r in range(opts.rounds):
            order = ("1.0", "2.0") if r % 2 == 0 else ("2.0", "1.0")
            got = {p: float(run_pair(p, size, opts)["msgs_per_sec"]) for p in order}
            ratio = got["2.0"] / got["1.0"]
            ratios.append(ratio)
            rows.append({"v1_msgs_per_s": round(got["1.0"]), "v2_msgs_per_s": round(got["2.0"]),
                         "ratio": round(ratio, 3)})
            print(f"{size:>8,} B round {r + 1}: 1.0 {got['1.0']:,.0f} msgs/s, 2.0 {got['2.0']:,.0f} msgs/s, "
                  f"2.0/1.0 {ratio:.2f}", flush=True)
        median = statistics.median(ratios)
        print(f"{size:>8,} B: protocol 2.0 / 1.0 median {median:.2f} "
              f"(range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds)", flush=True)
        summary.append({"size": size, "window": window_for(size, opts.window), "rounds": rows,
                        "median_ratio": round(median, 3)})
    print(json.dumps({"bench": "protocol_pair", "sizes": summary}))


if __name__ == "__main__":
    main()
