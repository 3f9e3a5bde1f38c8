"""The stub python/smsgnet/_core.pyi is the contract of the native module
(STYLE.md point 7): stubtest checks every signature against the built module,
and the public names must match exactly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import smsgnet
from smsgnet import _core, exceptions

STUB = Path(smsgnet.__file__).resolve().parent / "_core.pyi"


def stub_names() -> set[str]:
    """Names the stub defines at module level (functions, classes, constants, imports)."""
    names: set[str] = set()
    for node in ast.parse(STUB.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom) and node.module != "typing":
            names.update(alias.asname or alias.name for alias in node.names)
    return {n for n in names if not n.startswith("_")}


def stub_all() -> list[str]:
    for node in ast.parse(STUB.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("the stub has no __all__")


def test_stub_names_match_the_module():
    runtime = {n for n in dir(_core) if not n.startswith("_")}
    stub = stub_names()
    assert runtime - stub == set(), "exported by _core but missing from the stub"
    assert stub - runtime == set(), "in the stub but not exported by _core"
    assert sorted(stub_all()) == sorted(_core.__all__)


def test_exceptions_are_the_ones_from_smsgnet_exceptions():
    for name in _core.__all__:
        obj = getattr(_core, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert obj is getattr(exceptions, name)


def test_stubtest(tmp_path):
    config = tmp_path / "mypy.ini"  # keeps mypy's cache out of the working tree
    config.write_text(f"[mypy]\ncache_dir = {tmp_path / 'mypy_cache'}\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(config), "smsgnet._core"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"stubtest failed:\n{result.stdout}\n{result.stderr}"
