"""Helpers for the command-line tests: run ``python -m smsgnet`` with a
private environment, and start ``smsgnet serve`` in the background.

Every subprocess has a timeout and is killed in a ``finally``; every node
listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "smsgnet"]
#: Generous: the machine is shared; a healthy command takes well under a second.
RUN_TIMEOUT = 30.0


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose default state directory is inside tmp_path."""
    env = dict(os.environ)
    env["SMSGNET_STATE"] = str(tmp_path / "default-state")
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SSL_CERT_FILE", None)
    return env


class Run:
    """Run one CLI command to completion."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, timeout: float = RUN_TIMEOUT, input: str | None = None,
                 exe: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*(exe or CLI), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)


@pytest.fixture
def cli(cli_env: dict[str, str]) -> Run:
    return Run(cli_env)


class Server:
    """``smsgnet serve`` running in the background."""

    def __init__(self, proc: subprocess.Popen[str], stderr_path: Path, info: dict[str, Any]) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.info = info

    @property
    def port(self) -> int:
        return int(self.info["listen"].rsplit(":", 1)[1])

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def lines(self, n: int, timeout: float = RUN_TIMEOUT) -> list[str]:
        """The next ``n`` lines on stdout after the startup line."""
        return read_lines(self.proc, n, timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line of ``proc``, or a test failure after ``timeout``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no output line in time")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            return proc.stdout.readline()


def read_lines(proc: subprocess.Popen[str], n: int, timeout: float) -> list[str]:
    """The next ``n`` stdout lines of ``proc`` (after those read with :func:`read_line`),
    or a test failure after ``timeout``. Reads the pipe itself: lines that arrive
    together would otherwise sit in the file object's buffer, out of select()'s sight."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"not {n} output lines in time: {data!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stdout closed after {data!r}")
            data += chunk
    return data.decode().splitlines()[:n]


@pytest.fixture
def serve(tmp_path: Path, cli_env: dict[str, str]) -> Iterator[Any]:
    """Start ``smsgnet serve --listen 127.0.0.1:0 --state <tmp>`` plus extra args;
    returns a :class:`Server` once its JSON line arrived. Killed at teardown."""
    servers: list[Server] = []

    def start(*args: str, state: Path | None = None, listen: str = "127.0.0.1:0") -> Server:
        n = len(servers)
        state = state or tmp_path / f"server-{n}"
        stderr_path = tmp_path / f"serve-{n}.stderr"
        with open(stderr_path, "w") as err:
            proc = subprocess.Popen([*CLI, "serve", "--listen", listen, "--state", str(state), *args],
                                    env=cli_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err, text=True)
        server = Server(proc, stderr_path, {})
        servers.append(server)
        try:
            line = read_line(proc, RUN_TIMEOUT)
        except AssertionError:
            server.kill()
            raise AssertionError(f"serve printed nothing; stderr:\n{server.stderr}") from None
        if not line:
            server.kill()
            raise AssertionError(f"serve exited with {proc.wait(10)}; stderr:\n{server.stderr}")
        server.info = json.loads(line)
        return server

    try:
        yield start
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
                try:
                    s.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            s.kill()
            if s.proc.stdout is not None:
                s.proc.stdout.close()
