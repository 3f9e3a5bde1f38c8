"""Every argument the CLI shares, defined once: the value checkers, the parser
class (usage errors exit 2 with one line), the options common to all commands
and those of the client commands (``ping``, ``send``).

A command module registers itself with :func:`add_command` and adds its own
options; an option two commands share is a function here, not a copy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import orjson

from smsgnet import __version__
from smsgnet.config import PROTOCOLS, TransportConfig
from smsgnet.exceptions import ConfigError
from smsgnet.handshake import PROTOCOL_VERSION
from smsgnet.identity import NodeRole
from smsgnet.message import b64decode
from smsgnet.transport import build_url

from smsgnet.cli.output import EXIT_USAGE, CliError, UsageError

#: How long ping/send wait for the handshake (and each pong) by default.
DEFAULT_TIMEOUT = 5.0

DEFAULTS = TransportConfig()

EPILOG = "Exit codes: 0 success, 1 runtime failure, 2 usage error."

#: A command's entry point: parsed arguments in, exit code out.
Runner = Callable[[argparse.Namespace], int]


# -- value checkers (argparse ``type=``) -------------------------------------------------------


def address(text: str) -> str:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a ``ws://``/``wss://`` URL."""
    try:
        build_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def listen_address(text: str) -> str:
    """``HOST:PORT`` to listen on; an empty host is every interface, port 0 any free port."""
    try:
        TransportConfig(listen_addr=text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(f"bad listen address {text!r}: {e}") from None
    host = text.rpartition(":")[0]
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise argparse.ArgumentTypeError(f"bad listen address {text!r}: put IPv6 hosts in brackets, e.g. [::1]:9091")
    return text


def ws_path(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"path must start with '/', got {text!r}")
    return text


def public_key(text: str) -> str:
    """A base64 X25519 public key (32 bytes)."""
    try:
        raw = b64decode(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a base64 public key: {text!r}") from None
    if len(raw) != 32:
        raise argparse.ArgumentTypeError(f"a public key is 32 bytes, {text!r} has {len(raw)}")
    return text


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0)


def rate_limit(text: str) -> tuple[int | None, float | None]:
    """``BURST:PER_SEC`` or ``off`` (``(None, None)``)."""
    if text.strip().lower() == "off":
        return (None, None)
    burst, sep, rate = text.partition(":")
    try:
        b, r = int(burst), float(rate)
    except ValueError:
        b, r = 0, -1.0
    if not sep or b < 1 or not 0 <= r < float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected BURST:PER_SEC (e.g. 100:50) or 'off', got {text!r}")
    return (b, r)


def json_value(text: str) -> Any:
    """Inline JSON, ``@FILE`` (the JSON in that file) or ``-`` (the JSON on standard input)."""
    if text == "-":
        data, where = sys.stdin.buffer.read(), " on stdin"
    elif text.startswith("@"):
        path = text[1:]
        if not path:
            raise argparse.ArgumentTypeError("'@' needs a file name: @FILE")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise argparse.ArgumentTypeError(f"cannot read {path}: {e.strerror or e}") from None
        where = f" in {path}"
    else:
        data, where = text.encode("utf-8", "surrogateescape"), ""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"invalid JSON{where}: {e}") from None


def split_host_port(text: str) -> tuple[str | None, int]:
    """``HOST:PORT`` (checked by :func:`listen_address`) as ``(host or None, port)``; IPv6 brackets removed."""
    host, _, port = text.rpartition(":")
    return (host.strip("[]") or None), int(port)


# -- the parser ------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are a :class:`UsageError` (exit 2), reported by ``main``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


SubParsers = argparse._SubParsersAction  # type: ignore[type-arg]


def top_level_parser() -> tuple[Parser, SubParsers]:
    """The ``smsgnet`` parser and the action its commands are added to."""
    parser = Parser(
        prog="smsgnet",
        description="Encrypted peer-to-peer WebSocket transport, wire-compatible with the reference Go nodes.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version",
                        version=f"smsgnet {__version__} (protocol {PROTOCOL_VERSION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    return parser, sub


def add_command(sub: SubParsers, name: str, *, help: str, description: str, run: Runner) -> Parser:
    """Add command ``name`` with the options every command has (``-v``)."""
    p: Parser = sub.add_parser(name, help=help, description=description, epilog=EPILOG)
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log more to stderr (-v INFO, -vv DEBUG)")
    p.set_defaults(func=run)
    return p


# -- options shared by several commands ----------------------------------------------------------------


_DEFAULT_STATE = "$SMSGNET_STATE, $XDG_DATA_HOME/smsgnet or ~/.local/share/smsgnet"


def add_state(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--state", metavar="DIR", type=Path, help=help)


def add_state_with_default(p: argparse.ArgumentParser, what: str) -> None:
    add_state(p, f"{what} (default: {_DEFAULT_STATE})")


def add_identity_fields(p: argparse.ArgumentParser, *, only_when_created: bool) -> None:
    """``--name`` and ``--role`` of a new identity."""
    when = ", used only when a new identity is created" if only_when_created else ""
    p.add_argument("--name", default="",
                   help=f"node name{when}" if when else "node name shown to peers (default: empty)")
    p.add_argument("--role", default=str(NodeRole.DUAL), choices=[str(r) for r in NodeRole],
                   help=f"node role{when} (default: dual)")


def add_json(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_protocol_options(p: argparse.ArgumentParser) -> None:
    """``--min-protocol`` and ``--max-protocol`` (docs/protocol.md, "Protocol 2.0")."""
    p.add_argument("--min-protocol", choices=PROTOCOLS, default="1.0",
                   help="refuse links below this protocol; 2.0 refuses the Go nodes' 1.0 (default: 1.0)")
    p.add_argument("--max-protocol", choices=PROTOCOLS, default="2.0",
                   help="1.0 never offers or accepts protocol 2.0 (default: 2.0)")


def check_protocols(args: argparse.Namespace) -> None:
    """``--min-protocol`` above ``--max-protocol`` is a usage error (exit 2)."""
    if PROTOCOLS.index(args.min_protocol) > PROTOCOLS.index(args.max_protocol):
        raise CliError(f"--min-protocol {args.min_protocol} is above --max-protocol {args.max_protocol}",
                       EXIT_USAGE, kind="UsageError")


def add_client_options(p: argparse.ArgumentParser) -> None:
    """ADDR and the options of every command that dials a node (``ping``, ``send``)."""
    p.add_argument("addr", metavar="ADDR", type=address,
                   help="HOST:PORT, [IPv6]:PORT, or a full ws:// or wss:// URL")
    p.add_argument("--path", type=ws_path, default="/ws",
                   help="WebSocket path when ADDR is HOST:PORT (default: /ws)")
    p.add_argument("--expect-key", metavar="KEY", type=public_key,
                   help="refuse the peer unless it proves this base64 public key")
    add_state(p, "use (or create) the identity in DIR instead of a throwaway one")
    p.add_argument("--timeout", metavar="S", type=positive_float, default=DEFAULT_TIMEOUT,
                   help=f"seconds to wait for the handshake, and for each pong (default: {DEFAULT_TIMEOUT:g})")
    p.add_argument("--insecure", action="store_true",
                   help="wss:// only: do not verify the TLS certificate (the X25519 key is still checked)")
    p.add_argument("--ca", metavar="FILE",
                   help="wss:// only: CA bundle to verify the peer's TLS certificate")
    add_protocol_options(p)
    add_json(p, "print the result as JSON")
