"""Every example runs and exits 0 (subprocesses on 127.0.0.1, with timeouts)."""

from __future__ import annotations

import os
import re
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 30.0


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=EXAMPLES.parent)


class Proc:
    """A background example; a thread collects its stdout lines (select() on a
    buffered text pipe would miss lines already read into the buffer)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=EXAMPLES.parent,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_lines(self, count: int, timeout: float = TIMEOUT) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"only got {got!r}") from None
            assert line is not None, f"process ended early after {got!r}: {self.stderr()}"
            got.append(line)
        return got

    def rest(self, timeout: float = TIMEOUT) -> list[str]:
        """Every remaining line, once the process has ended."""
        self.proc.wait(timeout)
        got: list[str] = []
        while (line := self.lines.get(timeout=timeout)) is not None:
            got.append(line)
        return got

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def stop(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_every_example_is_covered_here():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == ["chat.py", "request_response.py", "two_nodes.py"]


def test_two_nodes():
    r = run("examples/two_nodes.py")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "alice got greeting {'hello': 'alice'} from bob\n"


def test_request_response_in_one_process():
    r = run("examples/request_response.py")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "controller: connected to worker-1 (worker)"
    assert lines[1].startswith("controller: stats {'name': 'worker-1', 'uptimeSeconds': ")
    assert lines[2] == "controller: error 1003: unknown request 'get_logs'"


def test_request_response_worker_and_controller_separately():
    worker = Proc("examples/request_response.py", "worker", "--listen", "127.0.0.1:0")
    try:
        url_line, key_line = worker.read_lines(2)
        url = re.fullmatch(r"worker: listening on (ws://127\.0\.0\.1:\d+/ws)", url_line).group(1)
        key = re.fullmatch(r"worker: public key (\S+)", key_line).group(1)
        r = run("examples/request_response.py", "controller", url, "--expect-key", key)
        assert r.returncode == 0, r.stderr
        assert "controller: stats" in r.stdout
        # a controller expecting another key is refused
        other = "zGqvMolwDshmNi0RlguOlsYNL1/D2NGLKV5a4+2V2j0="
        bad = run("examples/request_response.py", "controller", url, "--expect-key", other)
        assert bad.returncode == 1 and "different public key" in bad.stderr
        worker.proc.terminate()
        assert worker.proc.wait(10) == 0
    finally:
        worker.stop()


def test_chat_between_two_processes():
    listener = Proc("examples/chat.py", "listen", "--listen", "127.0.0.1:0", "--script", "welcome!")
    try:
        (first,) = listener.read_lines(1)
        url = re.fullmatch(r"\* listening on (ws://127\.0\.0\.1:\d+/ws) as listener; waiting for a peer",
                           first).group(1)
        r = run("examples/chat.py", "connect", url, "--script", "hello;how are you", "--linger", "1")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == "* connected to listener"
        assert "listener: welcome!" in r.stdout.splitlines()
        assert listener.rest() == ["* connector joined", "connector: hello", "connector: how are you",
                                   "* connector left"]
        assert listener.proc.returncode == 0, listener.stderr()
    finally:
        listener.stop()


def test_chat_reads_stdin():
    listener = Proc("examples/chat.py", "listen", "--listen", "127.0.0.1:0")
    try:
        (first,) = listener.read_lines(1)
        url = first.split()[3]
        r = subprocess.run([sys.executable, "examples/chat.py", "connect", url, "--linger", "0.2"],
                           input="line one\n\nline two\n", capture_output=True, text=True, timeout=TIMEOUT,
                           cwd=EXAMPLES.parent)
        assert r.returncode == 0, r.stderr
        out = listener.rest()
        assert "connector: line one" in out and "connector: line two" in out
        assert listener.proc.returncode == 0
    finally:
        listener.stop()


@pytest.mark.parametrize("script", ["chat.py", "request_response.py"])
def test_examples_have_help(script):
    r = run(f"examples/{script}", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage:")


def test_the_examples_and_the_readme_example_pass_mypy_strict(tmp_path):
    # issue 9: user code written from the README type-checks under --strict
    import subprocess
    import sys
    files = sorted(str(p) for p in EXAMPLES.glob("*.py"))
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                        "--cache-dir", str(tmp_path / "cache"), *files], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
