"""docs/performance.md's plots: the images it shows exist and are PNGs, and the script
that makes them (benches/plots.py) starts. Nothing is measured here (a run takes minutes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SCRIPT = ROOT / "benches" / "plots.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def images() -> list[str]:
    text = re.sub(r"^```.*?^```", "", (DOCS / "performance.md").read_text(encoding="utf-8"), flags=re.S | re.M)
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", text)


def test_performance_md_shows_the_three_plots():
    assert {Path(i).name for i in images()} >= {"throughput.png", "latency.png", "memory.png"}


@pytest.mark.parametrize("image", images())
def test_every_image_in_performance_md_is_a_png(image):
    path = DOCS / image
    assert path.is_file(), f"docs/performance.md shows {image}, which does not exist"
    with path.open("rb") as f:
        assert f.read(8) == PNG_MAGIC, f"{image} is not a PNG"


def test_the_plots_come_with_their_numbers():
    results = json.loads((DOCS / "perf" / "results.json").read_text(encoding="utf-8"))
    for part in ("throughput", "latency", "memory"):
        assert results[part], part
    assert results["meta"]["date"] and results["meta"]["cpu"]


def run(*args: str, prelude: str = "pass") -> subprocess.CompletedProcess[str]:
    code = f"import runpy, sys; {prelude}; sys.argv = {[str(SCRIPT), *args]!r}; " \
           f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_plots_script_help():
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--quick" in r.stdout and "--out" in r.stdout


def test_without_matplotlib_it_says_what_to_install(tmp_path):
    r = run("--replot", str(DOCS / "perf" / "results.json"), "--out", str(tmp_path),
            prelude="sys.modules['matplotlib'] = None")  # import matplotlib -> ImportError
    assert r.returncode == 2
    assert "pip install 'smsgnet[plots]'" in r.stderr
    assert not list(tmp_path.iterdir())


def test_replot_redraws_the_committed_numbers(tmp_path):
    pytest.importorskip("matplotlib")
    r = run("--replot", str(DOCS / "perf" / "results.json"), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency.png", "memory.png", "throughput.png"]
    assert "| smsgnet / baseline |" in r.stdout
