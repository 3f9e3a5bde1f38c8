#!/usr/bin/env python3
"""Generate docs/api.md from the docstrings of every name in ``smsgnet.__all__``.

    python docs/gen_api.py           # rewrite docs/api.md
    python docs/gen_api.py --check   # exit 1 if docs/api.md is out of date

The grouping and the short introductions are written here; everything else
(signatures, docstrings, fields, enum members) comes from the code, so the
reference cannot drift from it. tests/docs/test_docs.py runs ``--check``.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

import smsgnet

API_MD = Path(__file__).resolve().parent / "api.md"

#: (section title, introduction, names). Names in ``__all__`` that no section
#: lists land in "Other names", so a new export is never left out.
SECTIONS: list[tuple[str, str, list[str]]] = [
    ("Transport",
     "A node on the network: it listens, connects, runs the handshake and routes messages "
     "to one handler. See [quickstart.md](quickstart.md) for a walk-through.",
     ["Transport", "TransportStats", "build_url"]),
    ("Configuration",
     "Every limit and timeout, with the reference defaults. The table with every field and "
     "its default is in [configuration.md](configuration.md).",
     ["TransportConfig"]),
    ("Connections",
     "One live, authenticated connection to one peer.",
     ["PeerConnection", "ConnectionState", "ConnectionStats"]),
    ("Identity",
     "This node's X25519 key pair and the identity it presents in the handshake.",
     ["NodeManager", "NodeIdentity", "NodeRole"]),
    ("Peers",
     "Known peers and who may connect (open or allowlist).",
     ["Peer", "PeerRegistry", "AuthMode"]),
    ("Messages",
     "The transport message and its built-in payloads ([protocol.md](protocol.md) §3, §6).",
     ["Message", "MessageType", "DisconnectCode", "ErrorCode", "format_timestamp", "parse_timestamp",
      "PingPayload", "PongPayload", "DisconnectPayload", "ErrorPayload", "HandshakePayload",
      "HandshakeAckPayload"]),
    ("Handshake (sans I/O)",
     "The handshake as pure functions of bytes: usable without sockets, e.g. to test a peer "
     "implementation. The transport drives these for you.",
     ["Initiator", "Responder", "HandshakeResult", "PROTOCOL_VERSION"]),
]

_ALL = set(smsgnet.__all__)

#: Notes for public attributes that have no ``#:`` comment in the code.
ATTRIBUTE_NOTES: dict[str, str] = {
    "Transport.node": "this node's `NodeManager`",
    "Transport.registry": "the `PeerRegistry` (a fresh open one when none was given)",
    "Transport.config": "the `TransportConfig` in use",
    "PeerConnection.identity": "the peer's verified `NodeIdentity`",
    "PeerConnection.peer": "the peer's `Peer` record (the registry's once the peer is proven)",
    "PeerConnection.shared_secret": "the 32-byte secret both sides derived (static for this pair of keys)",
    "PeerConnection.outbound": "True when we connected, False when the peer connected to us",
    "PeerConnection.address": "the peer's `HOST:PORT` (or the URL we dialled)",
    "PeerConnection.state": "a `ConnectionState`",
    "PeerConnection.last_activity": "`time.monotonic()` of the last accepted frame",
    "PeerConnection.ping_ms": "round-trip time of the last answered ping, or None",
    "PeerConnection.close_reason": "see `close_code`",
    "PeerConnection.closed_by_peer": "True when the peer ended the connection",
    "PeerConnection.bytes_in": "frame bytes received",
    "PeerConnection.bytes_out": "frame bytes sent",
    "PeerConnection.frames_in": "frames received, dropped ones included",
    "NodeManager.identity": "this node's `NodeIdentity`",
    "NodeManager.state_dir": "the directory it was loaded from or saved to, or None",
    "PeerRegistry.auth_mode": "an `AuthMode`",
    "PeerRegistry.path": "the JSON file, or None when not persisted",
    "Initiator.challenge": "the random challenge sent in `hello()`",
    "Responder.refusal": "the reason of a refusal, or None",
    "Responder.peer": "the identity the initiator presented, once `receive_hello()` parsed it",
}


def _anchor(name: str) -> str:
    return name.lower()


def _link(name: str) -> str:
    short = name.rsplit(".", 1)[-1]
    return f"[`{short}`](#{_anchor(short)})" if short in _ALL else f"`{short}`"


def _inline(text: str) -> str:
    def role(m: re.Match[str]) -> str:
        kind, target = m.group(1), m.group(2).lstrip("~")
        if kind in ("class", "exc", "data"):
            return _link(target)
        name = target.rsplit(".", 1)[-1]
        return f"`{name}()`" if kind in ("meth", "func") else f"`{name}`"

    text = re.sub(r":(\w+):`([^`]+)`", role, text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def rst_to_md(text: str) -> str:
    """The little reStructuredText our docstrings use, as Markdown: roles and
    double backquotes in prose; ``::`` literal blocks as fenced code, verbatim."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            head = line.rstrip()[:-2].rstrip()
            if head:
                out.append(_inline(head) + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                block.append(lines[i][4:])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            while out and not out[-1].strip():
                out.pop()
            out += ["", "```", *block, "```", ""]
            continue
        out.append(_inline(line))
        i += 1
    return "\n".join(out).strip()


def instance_attributes(cls: type) -> list[tuple[str, str]]:
    """Public attributes set as ``self.name = ...`` in ``__init__``, with the
    ``#:`` comment above each (empty when there is none)."""
    init = cls.__dict__.get("__init__")
    if init is None or not inspect.isfunction(init):
        return []
    try:
        source = inspect.getsource(init)
    except (OSError, TypeError):
        return []
    found: dict[str, str] = {}
    comment: list[str] = []
    for raw in source.splitlines():
        line = raw.strip()
        if line.startswith("#:"):
            comment.append(line[2:].strip())
            continue
        m = re.match(r"self\.([a-z]\w*)\s*(?::[^=]+)?=(?!=)", line)
        if m and m.group(1) not in found and not isinstance(getattr(cls, m.group(1), None), property):
            found[m.group(1)] = " ".join(comment)
        comment = []
    return list(found.items())


def _annotation(ann: Any) -> str:
    if ann is inspect.Parameter.empty:
        return ""
    return ann if isinstance(ann, str) else inspect.formatannotation(ann)


def _default(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if value is dataclasses.MISSING:
        return "..."
    text = repr(value)
    return "<factory>" if text == "<factory>" else text


def signature(obj: Any, *, drop_self: bool = False) -> str:
    """``(a: int = 1, *, b: str = '') -> T`` with string annotations kept as written."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    parts: list[str] = []
    star_done = False
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if p.kind is p.VAR_POSITIONAL:
            star_done = True
            parts.append(f"*{p.name}")
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        text = p.name
        ann = _annotation(p.annotation)
        if ann:
            text += f": {ann}"
        if p.default is not p.empty:
            d = "<factory>" if repr(p.default) == "<factory>" else _default(p.default)
            text += f" = {d}" if ann else f"={d}"
        parts.append(text)
    ret = _annotation(sig.return_annotation)
    return f"({', '.join(parts)})" + (f" -> {ret}" if ret and ret != "None" else "")


def _doc(obj: Any) -> str:
    doc = obj.__doc__ if isinstance(obj, type) else inspect.getdoc(obj)
    return rst_to_md(inspect.cleandoc(doc)) if doc else "*(no docstring)*"


def _cell(text: str) -> str:
    """Table cell content: a code span with its pipes escaped."""
    return "`" + text.replace("|", "\\|") + "`"


def _members(cls: type) -> list[tuple[str, Any]]:
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod, property)) or inspect.isfunction(value):
            out.append((name, value))
    return out


def document_class(name: str, cls: type) -> list[str]:
    lines: list[str] = []
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    if issubclass(cls, BaseException):
        lines += [f"```python\nclass {name}({', '.join(bases)})\n```", "", _doc(cls), ""]
        attrs = instance_attributes(cls)
        if attrs:
            lines += ["Attributes: " + ", ".join(f"`{a}`" for a, _ in attrs) + ".", ""]
        return lines
    if typing.is_typeddict(cls):
        lines += [f"```python\nclass {name}(TypedDict)\n```", "", _doc(cls), ""]
        lines += ["| key | type | required |", "|---|---|---|"]
        for key, ann in cls.__annotations__.items():
            # with postponed annotations, __required_keys__ misses NotRequired on 3.11: read the text
            text = getattr(ann, "__forward_arg__", ann)
            text = text if isinstance(text, str) else inspect.formatannotation(text)
            optional = re.match(r"^(?:typing\.)?NotRequired\[(.*)\]$", text)
            if optional:
                text = optional.group(1)
            lines.append(f"| `{key}` | {_cell(text)} | {'no' if optional else 'yes'} |")
        return lines + [""]
    if issubclass(cls, enum.Enum):
        kind = ", ".join(bases)
        lines += [f"```python\nclass {name}({kind})\n```", "", _doc(cls), ""]
        lines += ["| member | value |", "|---|---|"]
        lines += [f"| `{m.name}` | {_cell(repr(m.value))} |" for m in cls]
        return lines + [""]
    lines += [f"```python\nclass {name}{signature(cls)}\n```", "", _doc(cls), ""]
    if dataclasses.is_dataclass(cls):
        lines += ["| field | type | default |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                d = _default(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                d = "computed"
            else:
                d = "required"
            ann = f.type if isinstance(f.type, str) else inspect.formatannotation(f.type)
            lines.append(f"| `{f.name}` | {_cell(ann)} | {_cell(d)} |")
        lines.append("")
    attrs = [] if dataclasses.is_dataclass(cls) else instance_attributes(cls)
    if attrs:
        lines += ["Attributes:", ""]
        for a, d in attrs:
            d = d or ATTRIBUTE_NOTES.get(f"{name}.{a}", "")
            lines.append(f"- `{a}`" + (f": {_inline(d)}" if d else ""))
        lines.append("")
    for member, value in _members(cls):
        if isinstance(value, property):
            head = f"{name}.{member}"
            tag = "property"
            doc = _doc(value.fget) if value.fget else ""
        else:
            func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            tag = ("classmethod" if isinstance(value, classmethod) else
                   "staticmethod" if isinstance(value, staticmethod) else
                   "async method" if inspect.iscoroutinefunction(func) else "method")
            head = f"{name}.{member}{signature(func, drop_self=not isinstance(value, staticmethod))}"
            doc = _doc(func)
        lines += [f"#### `{head}`", "", f"*{tag}.* {doc}", ""]
    return lines


def document(name: str) -> list[str]:
    obj = getattr(smsgnet, name)
    lines = [f"### `{name}`", ""]
    if inspect.isclass(obj):
        lines += document_class(name, obj)
    elif inspect.isfunction(obj):
        lines += [f"```python\n{name}{signature(obj)}\n```", "", _doc(obj), ""]
    else:
        lines += [f"```python\n{name} = {obj!r}\n```", ""]
        if name == "PROTOCOL_VERSION":
            lines += ["The handshake protocol version this package speaks (the only one the "
                      "reference nodes accept).", ""]
    return lines


def generate() -> str:
    listed = [n for _, _, names in SECTIONS for n in names]
    exceptions = [n for n in smsgnet.__all__ if isinstance(getattr(smsgnet, n), type)
                  and issubclass(getattr(smsgnet, n), BaseException)]
    other = [n for n in smsgnet.__all__ if n not in listed and n not in exceptions]
    out = [
        "# API reference",
        "",
        "<!-- Generated by docs/gen_api.py from the docstrings; do not edit by hand. -->",
        "",
        "Everything below is importable from `smsgnet` (`from smsgnet import Transport, ...`).",
        "Nothing else is public: `smsgnet._core` and the submodules are implementation details.",
        "Durations are seconds; keys are raw bytes or standard base64 strings as noted.",
        "",
        "## Contents",
        "",
    ]
    sections = [(t, i, [n for n in names if n in _ALL]) for t, i, names in SECTIONS]
    if other:
        sections.append(("Other names", "", other))
    sections.append(("Exceptions", "", exceptions))
    for title, _, names in sections:
        out.append(f"- **{title}**: " + ", ".join(f"[`{n}`](#{_anchor(n)})" for n in names))
    out.append("")
    for title, intro, names in sections:
        out += [f"## {title}", ""]
        if title == "Exceptions":
            import smsgnet.exceptions as exc_mod

            out += [_doc(exc_mod), ""]
        elif intro:
            out += [intro, ""]
        for n in names:
            out += document(n)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = generate()
    if "--check" in argv:
        current = API_MD.read_text(encoding="utf-8") if API_MD.exists() else ""
        if current != text:
            print(f"{API_MD} is out of date: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    API_MD.write_text(text, encoding="utf-8")
    print(f"wrote {API_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
