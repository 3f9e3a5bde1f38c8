"""The package type-checks: its annotations (shipped with py.typed) are a contract too."""

from __future__ import annotations

import subprocess
import sys


def test_the_package_passes_mypy(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "-p", "smsgnet", "--ignore-missing-imports",
         "--cache-dir", str(tmp_path / "mypy-cache")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
