"""Shared test helpers: the reference vectors in ``tests/vectors/`` (copied
unchanged from the reference Go code's output; see the README there).

``SMSGNET_VECTORS`` overrides the directory. A missing directory or file is an
error, never a skip: the vectors are the interop contract.

Use either the ``vectors`` fixture (``vectors("ecdh.json")`` → {name: case}) or,
to get one test per case named after it, the marker::

    @pytest.mark.vectors("negative.json", where=lambda c: c["name"].startswith("ecdh_"))
    def test_x(case): ...
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

DEFAULT_VECTORS_DIR = Path(__file__).resolve().parent / "vectors"


def vectors_dir() -> Path:
    return Path(os.environ.get("SMSGNET_VECTORS") or DEFAULT_VECTORS_DIR)


@functools.cache
def load_cases(filename: str) -> dict[str, dict[str, Any]]:
    """Every case of one vector file, by name. Raises when the file is missing."""
    path = vectors_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"reference test vectors not found: {path} "
            "(set SMSGNET_VECTORS to the directory holding identity.json, smsg_frames.json, ...)"
        )
    cases = json.loads(path.read_text(encoding="utf-8"))["cases"]
    if not cases:
        raise ValueError(f"{path} has no cases")
    return {case["name"]: case for case in cases}


@pytest.fixture(scope="session")
def vectors() -> Callable[[str], dict[str, dict[str, Any]]]:
    return load_cases


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vectors(filename, where=None): one test per vector case, as argument `case`"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("vectors")
    if marker is None or "case" not in metafunc.fixturenames:
        return
    where = marker.kwargs.get("where") or (lambda case: True)
    cases = [c for c in load_cases(marker.args[0]).values() if where(c)]
    if not cases:
        raise ValueError(f"no case of {marker.args[0]} matches the filter of {metafunc.function.__name__}")
    metafunc.parametrize("case", cases, ids=[c["name"] for c in cases])
