"""The documentation stays in sync with the code: API reference, configuration
table, CLI options, docstrings, README commands and example, links."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import smsgnet
from smsgnet import TransportConfig
from smsgnet.cli import build_parser
from smsgnet.session import DROP_REASONS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
#: Written by someone else; links to it are allowed before it exists.
NOT_OURS = {"performance.md"}


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


# -- API reference -------------------------------------------------------------------------


@pytest.mark.parametrize("name", smsgnet.__all__)
def test_every_public_name_is_in_the_api_reference(name):
    assert f"### `{name}`" in read(DOCS / "api.md"), f"{name} is missing from docs/api.md: run python docs/gen_api.py"


def test_api_reference_is_up_to_date():
    r = subprocess.run([sys.executable, str(DOCS / "gen_api.py"), "--check"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def _public_members(cls: type) -> list[tuple[str, object]]:
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            out.append((name, value.fget))
        elif isinstance(value, (staticmethod, classmethod)):
            out.append((name, value.__func__))
        elif inspect.isfunction(value):
            out.append((name, value))
    return out


def _own_doc(obj: object) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    if dataclasses.is_dataclass(obj) and isinstance(obj, type) and doc.startswith(f"{obj.__name__}("):
        return ""  # the signature dataclasses write when there is no docstring
    return doc.strip()


@pytest.mark.parametrize("name", smsgnet.__all__)
def test_every_public_name_and_method_has_a_docstring(name):
    obj = getattr(smsgnet, name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return  # constants (PROTOCOL_VERSION) are documented in api.md
    assert _own_doc(obj), f"{name} has no docstring"
    if inspect.isclass(obj):
        missing = [m for m, f in _public_members(obj) if not (f and _own_doc(f))]
        assert not missing, f"{name}: no docstring on {missing}"


# -- configuration ------------------------------------------------------------------------------


def config_table() -> list[tuple[str, str]]:
    text = read(DOCS / "configuration.md")
    section = text.split("## Every field", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", section, flags=re.M)
    assert rows, "no table found under '## Every field' in docs/configuration.md"
    return rows


def test_configuration_table_matches_transport_config():
    documented = config_table()
    actual = [(k, repr(v)) for k, v in TransportConfig().as_dict().items()]
    assert [k for k, _ in documented] == [k for k, _ in actual], "fields missing, extra or out of order"
    assert documented == actual, "a documented default differs from TransportConfig()"


def test_every_drop_reason_is_documented():
    text = read(DOCS / "configuration.md")
    for reason in DROP_REASONS:
        assert f"| `{reason}` |" in text, reason


# -- CLI ------------------------------------------------------------------------------------------------


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_cli_option_is_documented(command):
    text = read(DOCS / "cli.md")
    assert f"## `smsgnet {command}`" in text
    section = text.split(f"## `smsgnet {command}`", 1)[1].split("\n## ", 1)[0]
    assert "`-v`" in text.split("\n## ", 1)[0]  # -v/--verbose is common to all: in the conventions
    for action in _subparsers()[command]._actions:
        longs = [o for o in action.option_strings if o.startswith("--") and o not in ("--help", "--verbose")]
        for option in longs[:1]:
            assert option in section, f"{option} of smsgnet {command} is not in its section of docs/cli.md"


# -- README -----------------------------------------------------------------------------------------------


def test_readme_starts_with_the_two_commands():
    text = read(README)
    first_block = code_blocks(text, "sh")[0]
    assert first_block == "pip install . && smsgnet demo\npip install '.[test]' && python -m pytest\n"
    assert text.index(first_block) < text.index("## ")  # before any section


def test_ci_runs_the_readme_test_command():
    assert "python -m pytest" in read(ROOT / ".ci" / "run")


def test_readme_example_is_examples_two_nodes():
    block = code_blocks(read(README), "python")[0]
    assert block == read(ROOT / "examples" / "two_nodes.py")
    assert block in code_blocks(read(DOCS / "quickstart.md"), "python")


@pytest.mark.parametrize("path", [README, *sorted(p for p in DOCS.glob("*.md") if p.name != "api.md")],
                         ids=lambda p: p.name)
def test_python_snippets_compile(path):
    # (api.md's python blocks are signatures, not code)
    for i, block in enumerate(code_blocks(read(path), "python")):
        compile(block, f"{path.name} block {i}", "exec")


# -- links ---------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = read(path)
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("path", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(path):
    text = re.sub(r"^```.*?^```", "", read(path), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if dest.name in NOT_OURS and not dest.exists():
            continue
        assert dest.exists(), f"{path.name}: broken link {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{path.name}: no heading for #{anchor} in {dest.name}"


def test_the_docs_set_is_complete():
    for name in ("quickstart.md", "api.md", "protocol.md", "configuration.md", "security.md", "cli.md",
                 "operations.md"):
        assert (DOCS / name).is_file(), name
