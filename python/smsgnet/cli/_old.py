"""The ``smsgnet`` command: ``keygen``, ``serve``, ``ping``, ``send`` and ``demo``.

Every subcommand has ``--help``. Exit codes: 0 success, 1 runtime failure
(unreachable peer, refused handshake, unreadable identity, no reply in time),
2 usage error (bad address, bad option value), 130 interrupted. Errors are one
line on stderr; logs go to stderr (``-v`` INFO, ``-vv`` DEBUG); stdout carries
only results, as JSON with ``--json``.

``seal_sample`` and ``describe_frame`` are small public helpers the demo uses
to show what an SMSG frame looks like on the wire.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson

from smsgnet import _core
from smsgnet.config import TransportConfig
from smsgnet.connection import PeerConnection
from smsgnet.exceptions import (
    ConfigError,
    HandshakeRefused,
    IdentityError,
    PeerAuthenticationError,
    RegistryError,
    SmsgnetError,
)
from smsgnet.handshake import PROTOCOL_VERSION, Initiator, Responder
from smsgnet.identity import NodeManager, NodeRole
from smsgnet.message import CONTROL_TYPES, Message, b64decode
from smsgnet.registry import AuthMode, PeerRegistry
from smsgnet.transport import Transport, build_url

__all__ = ["main", "default_state_dir", "seal_sample", "describe_frame"]

log = logging.getLogger("smsgnet.cli")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: How long ping/send wait for the handshake (and each pong) by default.
DEFAULT_TIMEOUT = 5.0

_DEFAULTS = TransportConfig()


class CliError(Exception):
    """A failure reported as one line on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# -- public helpers ------------------------------------------------------------------


def default_state_dir() -> Path:
    """Where the CLI keeps the node identity when ``--state`` is not given.

    ``$SMSGNET_STATE`` if set, else ``$XDG_DATA_HOME/smsgnet``, else
    ``~/.local/share/smsgnet``.
    """
    env = os.environ.get("SMSGNET_STATE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "smsgnet"


def seal_sample(conn: PeerConnection, msg: Message) -> bytes:
    """Seal ``msg`` into an SMSG frame with ``conn``'s shared secret, as the
    connection would, without sending it or touching its counters.

    For showing and measuring frames; the nonce is fresh, so the bytes differ
    from any frame actually sent (the length is the same).
    """
    return _core.SmsgCipher(conn.shared_secret).seal(msg.to_json())


def describe_frame(frame: bytes) -> dict[str, Any]:
    """The clear-text parts of an SMSG frame (PROTOCOL.md §4).

    Returns ``magic``, ``version``, ``header_len``, ``header`` (the JSON text),
    ``nonce_hex``, ``sealed_len`` (ciphertext + 16-byte tag) and ``frame_len``.
    Nothing is decrypted. Raises :class:`ValueError` when the frame is too
    short to hold them.
    """
    if len(frame) < 9:
        raise ValueError("frame shorter than its 9-byte prefix")
    header_len = int.from_bytes(frame[5:9], "big")
    end = 9 + header_len
    if len(frame) < end + 24:
        raise ValueError("frame ends inside its header or nonce")
    return {
        "magic": frame[:4].decode("latin-1"),
        "version": frame[4],
        "header_len": header_len,
        "header": frame[9:end].decode("utf-8", "replace"),
        "nonce_hex": frame[end:end + 24].hex(),
        "sealed_len": len(frame) - end - 24,
        "frame_len": len(frame),
    }


# -- argument types ----------------------------------------------------------------------


def _address(text: str) -> str:
    try:
        build_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _listen(text: str) -> str:
    try:
        TransportConfig(listen_addr=text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(f"bad listen address {text!r}: {e}") from None
    host = text.rpartition(":")[0]
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise argparse.ArgumentTypeError(f"bad listen address {text!r}: put IPv6 hosts in brackets, e.g. [::1]:9091")
    return text


def _ws_path(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"path must start with '/', got {text!r}")
    return text


def _public_key(text: str) -> str:
    try:
        raw = b64decode(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a base64 public key: {text!r}") from None
    if len(raw) != 32:
        raise argparse.ArgumentTypeError(f"a public key is 32 bytes, {text!r} has {len(raw)}")
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _rate_limit(text: str) -> tuple[int | None, float | None]:
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


def _json_value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"invalid JSON: {e}") from None


# -- parser -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_EPILOG = "Exit codes: 0 success, 1 runtime failure, 2 usage error."


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``smsgnet`` command."""
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more to stderr (-v INFO, -vv DEBUG)")

    client = _Parser(add_help=False)
    client.add_argument("addr", metavar="ADDR", type=_address,
                        help="HOST:PORT, [IPv6]:PORT, or a full ws:// or wss:// URL")
    client.add_argument("--path", type=_ws_path, default="/ws",
                        help="WebSocket path when ADDR is HOST:PORT (default: /ws)")
    client.add_argument("--expect-key", metavar="KEY", type=_public_key,
                        help="refuse the peer unless it proves this base64 public key")
    client.add_argument("--state", metavar="DIR", type=Path,
                        help="use (or create) the identity in DIR instead of a throwaway one")
    client.add_argument("--timeout", metavar="S", type=_positive_float, default=DEFAULT_TIMEOUT,
                        help=f"seconds to wait for the handshake, and for each pong (default: {DEFAULT_TIMEOUT:g})")
    client.add_argument("--insecure", action="store_true",
                        help="wss:// only: do not verify the TLS certificate (the X25519 key is still checked)")
    client.add_argument("--ca", metavar="FILE",
                        help="wss:// only: CA bundle to verify the peer's TLS certificate")
    client.add_argument("--json", action="store_true", help="print the result as JSON")

    parser = _Parser(
        prog="smsgnet",
        description="Encrypted peer-to-peer WebSocket transport, wire-compatible with the reference Go nodes.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"smsgnet {_version()} (protocol {PROTOCOL_VERSION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    p = sub.add_parser("keygen", parents=[common], help="create a node identity (X25519 key pair)",
                       description="Create a node identity and print its ID and public key. "
                                   "Refuses to replace an existing identity unless --force.",
                       epilog=_EPILOG)
    p.add_argument("--state", metavar="DIR", type=Path,
                   help="state directory (default: $SMSGNET_STATE, $XDG_DATA_HOME/smsgnet or ~/.local/share/smsgnet)")
    p.add_argument("--name", default="", help="node name shown to peers (default: empty)")
    p.add_argument("--role", default=str(NodeRole.DUAL), choices=[str(r) for r in NodeRole],
                   help="node role (default: dual)")
    p.add_argument("--force", action="store_true", help="replace an existing identity")
    p.add_argument("--json", action="store_true", help="print the identity as JSON")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser(
        "serve", parents=[common], help="run a node until Ctrl-C or SIGTERM",
        description="Run a node. Prints one JSON line {id, publicKey, listen, url} on stdout when "
                    "listening, then runs until SIGINT/SIGTERM, when it disconnects every peer "
                    "(code 1004) and exits 0. The default --listen :9091 listens on EVERY interface.",
        epilog=_EPILOG)
    p.add_argument("--listen", metavar="HOST:PORT", type=_listen, default=":9091",
                   help="address to listen on; ':9091' (the default) is every interface, port 0 picks a free port")
    p.add_argument("--path", type=_ws_path, default="/ws", help="WebSocket path (default: /ws)")
    p.add_argument("--state", metavar="DIR", type=Path,
                   help="identity directory, created on first use (default: $SMSGNET_STATE, "
                        "$XDG_DATA_HOME/smsgnet or ~/.local/share/smsgnet)")
    p.add_argument("--name", default="", help="node name, used only when a new identity is created")
    p.add_argument("--role", default=str(NodeRole.DUAL), choices=[str(r) for r in NodeRole],
                   help="node role, used only when a new identity is created (default: dual)")
    p.add_argument("--allowlist", action="store_true",
                   help="accept only registered peers and --allow-key keys")
    p.add_argument("--allow-key", metavar="KEY", dest="allow_keys", action="extend", nargs="+", default=[],
                   type=_public_key, help="base64 public key allowed to connect (repeatable; implies --allowlist)")
    p.add_argument("--registry", metavar="FILE",
                   help="JSON file that keeps known peers and allowed keys (a file saved in allowlist "
                        "mode keeps that mode)")
    p.add_argument("--tls-cert", metavar="F", help="PEM certificate: serve wss:// (needs --tls-key)")
    p.add_argument("--tls-key", metavar="F", help="PEM private key of --tls-cert")
    p.add_argument("--max-conns", metavar="N", type=_positive_int, default=_DEFAULTS.max_conns,
                   help=f"connections (established + pending) before HTTP 503 (default: {_DEFAULTS.max_conns})")
    p.add_argument("--rate-limit", metavar="BURST:PER_SEC|off", type=_rate_limit,
                   default=(_DEFAULTS.rate_limit_burst, _DEFAULTS.rate_limit_per_sec),
                   help=f"per-connection token bucket (default: {_DEFAULTS.rate_limit_burst}:"
                        f"{_DEFAULTS.rate_limit_per_sec:g})")
    p.add_argument("--echo", action="store_true",
                   help="answer every application message with type 'echo', same payload, replyTo = its id")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ping", parents=[common, client], help="handshake with a node and measure round trips",
                       description="Connect to ADDR, complete the handshake, send ping messages and "
                                   "print the round-trip time of each pong. Exits 0 when every ping "
                                   "was answered.", epilog=_EPILOG)
    p.add_argument("--count", "-c", metavar="N", type=_positive_int, default=3, help="pings to send (default: 3)")
    p.add_argument("--interval", "-i", metavar="S", type=_nonnegative_float, default=1.0,
                   help="seconds between pings (default: 1)")
    p.set_defaults(func=cmd_ping)

    p = sub.add_parser("send", parents=[common, client], help="send one message, optionally wait for the reply",
                       description="Connect to ADDR, send one message and, with --wait-reply, print the "
                                   "payload of the reply (the message whose replyTo is the sent id). "
                                   "--json prints the whole message instead: the reply when waiting, "
                                   "else the message sent.", epilog=_EPILOG)
    p.add_argument("--type", "-t", required=True, help="message type, e.g. get_stats")
    p.add_argument("--payload", "-p", metavar="JSON", type=_json_value, default=None,
                   help="payload as JSON (default: null)")
    p.add_argument("--wait-reply", metavar="SECONDS", type=_positive_float,
                   help="wait this long for the reply and print it")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("demo", parents=[common], help="three nodes in one process: see the protocol at work",
                       description="Start alice (controller), bob (worker) and carol on 127.0.0.1 in this "
                                   "process and show the handshake, messages both ways, a broadcast, a "
                                   "frame on the wire, a replay being dropped, the ping time and a clean "
                                   "shutdown. Loopback only; takes well under a second.", epilog=_EPILOG)
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=cmd_demo)
    return parser


def _version() -> str:
    from smsgnet import __version__

    return __version__


# -- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``smsgnet`` command; returns the exit code (for ``sys.exit``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    _setup_logging(args.verbose)
    prog = f"smsgnet {args.command}"
    try:
        return int(args.func(args))
    except CliError as e:
        _error(prog, str(e))
        return e.code
    except SmsgnetError as e:
        _error(prog, _describe_error(e))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _error(prog, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILURE


def _error(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


def _describe_error(e: SmsgnetError) -> str:
    if isinstance(e, HandshakeRefused):
        return f"handshake refused by peer: {e.reason}"
    if isinstance(e, PeerAuthenticationError):
        return f"peer authentication failed: {e}"
    return str(e) or type(e).__name__


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(stream=sys.stderr, level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("smsgnet").setLevel(level)
    # websockets logs every frame at DEBUG: only from -vvv.
    logging.getLogger("websockets").setLevel(
        logging.WARNING if verbose <= 1 else logging.INFO if verbose == 2 else logging.DEBUG)


def _print(text: str = "") -> None:
    print(text, flush=True)


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def _load_identity(state: Path, name: str = "", role: str = NodeRole.DUAL) -> NodeManager:
    try:
        return NodeManager.load_or_generate(state, name, role)
    except IdentityError as e:
        raise CliError(f"cannot use identity: {e}") from None
    except OSError as e:
        raise CliError(f"cannot use identity in {state}: {e.strerror or e}") from None


# -- keygen ---------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    """``smsgnet keygen``: create an identity, refusing to overwrite one."""
    state: Path = args.state or default_state_dir()
    if NodeManager.exists(state) and not args.force:
        try:
            existing = f" (node {NodeManager.load(state).node_id})"
        except IdentityError:
            existing = ""
        raise CliError(f"an identity already exists in {state}{existing}; use --force to replace it")
    try:
        node = NodeManager.generate(args.name, args.role, state, overwrite=args.force)
    except IdentityError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot write identity to {state}: {e.strerror or e}") from None
    ident = node.identity
    if args.json:
        _print_json({**ident.to_dict(), "stateDir": str(state)})
    else:
        _print(f"created identity in {state}")
        _print(f"id          {ident.id}")
        _print(f"public key  {ident.public_key}")
        _print(f"name        {ident.name or '(none)'}")
        _print(f"role        {ident.role}")
    return EXIT_OK


# -- serve ------------------------------------------------------------------------------------


def _check_tls(cert: str, key: str) -> None:
    for what, path in (("certificate", cert), ("key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise CliError(f"cannot read TLS {what} {path}: {e.strerror or e}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as e:
        raise CliError(f"cannot load TLS certificate {cert} with key {key}: {e}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    """``smsgnet serve``: run a node until SIGINT/SIGTERM."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError("--tls-cert and --tls-key go together", EXIT_USAGE)
    if args.tls_cert:
        _check_tls(args.tls_cert, args.tls_key)
    burst, per_sec = args.rate_limit
    config = TransportConfig(
        listen_addr=args.listen,
        ws_path=args.path,
        tls_cert_path=args.tls_cert,
        tls_key_path=args.tls_key,
        max_conns=args.max_conns,
        rate_limit_burst=burst,
        rate_limit_per_sec=per_sec if per_sec is not None else _DEFAULTS.rate_limit_per_sec,
    )
    node = _load_identity(args.state or default_state_dir(), args.name, args.role)
    # without --allowlist/--allow-key the registry keeps the mode saved in its file (default open)
    mode = AuthMode.ALLOWLIST if args.allowlist or args.allow_keys else None
    try:
        registry = PeerRegistry(args.registry, auth_mode=mode)
    except RegistryError as e:
        raise CliError(str(e)) from None
    for key in args.allow_keys:
        registry.allow_key(key)
    if args.registry is not None:
        registry.save()  # the file records the mode from the start
    return asyncio.run(_serve(node, registry, config, echo=args.echo))


async def _serve(node: NodeManager, registry: PeerRegistry, config: TransportConfig, *, echo: bool) -> int:
    transport = Transport(node, registry, config)

    async def handle(conn: PeerConnection, msg: Message) -> None:
        log.info("%s from %s (%s)", msg.type, conn.peer_id, conn.identity.name or "unnamed")
        if echo and msg.type not in CONTROL_TYPES:
            try:
                await conn.send(msg.reply("echo", msg.payload, from_=node.node_id))
            except SmsgnetError as e:
                log.info("echo to %s failed: %s", conn.peer_id, e)

    transport.on_message(handle)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
    try:
        await transport.start()
        host = (config.listen_addr or "").rpartition(":")[0]
        _print_json({
            "id": node.node_id,
            "publicKey": node.identity.public_key,
            "listen": f"{host}:{transport.port}",
            "url": transport.url,
        })
        where = "every interface" if host in ("", "0.0.0.0", "[::]") else host
        print(f"smsgnet serve: node {node.node_id} listening on {where}, port {transport.port} "
              f"({transport.url}, auth {registry.auth_mode}); Ctrl-C to stop", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("stopping: disconnecting %d peer(s)", transport.connected_peers)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await transport.stop()
    return EXIT_OK


# -- ping / send ---------------------------------------------------------------------------


class _Replies:
    """A message handler that resolves futures by ``replyTo``."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Message]] = {}

    def expect(self, message_id: str) -> asyncio.Future[Message]:
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = fut
        return fut

    def forget(self, message_id: str) -> None:
        self._waiting.pop(message_id, None)

    def __call__(self, conn: PeerConnection, msg: Message) -> None:
        fut = self._waiting.pop(msg.reply_to, None) if msg.reply_to else None
        if fut is not None and not fut.done():
            fut.set_result(msg)


def _client_config(args: argparse.Namespace, *, control: bool) -> TransportConfig:
    return TransportConfig(
        listen_addr=None,  # a client listens on nothing
        ws_path=args.path,
        handshake_timeout=args.timeout,
        tls_verify=not args.insecure,
        tls_ca_path=args.ca,
        deliver_control_messages=control,
    )


def _client_node(args: argparse.Namespace, name: str) -> NodeManager:
    if args.state is not None:
        return _load_identity(args.state)
    return NodeManager.generate(name)


@contextlib.asynccontextmanager
async def _client_session(
    args: argparse.Namespace, node: NodeManager, *, control: bool
) -> AsyncIterator[tuple[str, PeerConnection, _Replies]]:
    """Start a client-only transport, connect to ADDR, and close it all afterwards."""
    url = build_url(args.addr, args.path)
    replies = _Replies()
    transport = Transport(node, config=_client_config(args, control=control))
    transport.on_message(replies)
    conn: PeerConnection | None = None
    try:
        await transport.start()
        conn = await transport.connect(url, expect_key=args.expect_key)
        yield url, conn, replies
    finally:
        if conn is not None:
            await conn.graceful_close("done")
        await transport.stop()


def cmd_ping(args: argparse.Namespace) -> int:
    """``smsgnet ping``: handshake, then measure ping/pong round trips."""
    node = _client_node(args, "smsgnet-ping")
    return asyncio.run(_ping(args, node))


async def _ping(args: argparse.Namespace, node: NodeManager) -> int:
    rtts: list[float | None] = []
    async with _client_session(args, node, control=True) as (url, conn, replies):
        peer = conn.identity
        if not args.json:
            _print(f"PING {url}: node {peer.id}" + (f" ({peer.name}, {peer.role})" if peer.name else f" ({peer.role})"))
        for seq in range(1, args.count + 1):
            if seq > 1 and args.interval:
                await asyncio.sleep(args.interval)
            msg = Message.ping(node.node_id, conn.peer_id)
            fut = replies.expect(msg.id)
            start = time.perf_counter()
            await conn.send(msg)
            try:
                await asyncio.wait_for(fut, args.timeout)
            except TimeoutError:
                replies.forget(msg.id)
                rtts.append(None)
                if not args.json:
                    _print(f"no pong within {args.timeout:g} s: seq={seq}")
                continue
            rtt = (time.perf_counter() - start) * 1000.0
            rtts.append(rtt)
            if not args.json:
                _print(f"pong from {conn.peer_id}: seq={seq} time={rtt:.3f} ms")
    got = [r for r in rtts if r is not None]
    summary = {
        "min": min(got) if got else None,
        "avg": sum(got) / len(got) if got else None,
        "max": max(got) if got else None,
    }
    if args.json:
        _print_json({
            "peerId": conn.peer_id,
            "peerName": conn.identity.name,
            "publicKey": conn.identity.public_key,
            "url": url,
            "sent": len(rtts),
            "received": len(got),
            "rttMs": [round(r, 3) if r is not None else None for r in rtts],
            "minMs": _round(summary["min"]),
            "avgMs": _round(summary["avg"]),
            "maxMs": _round(summary["max"]),
        })
    else:
        lost = len(rtts) - len(got)
        line = f"{len(rtts)} pings, {len(got)} pongs, {lost} lost"
        if got:
            line += f"; rtt min/avg/max = {summary['min']:.3f}/{summary['avg']:.3f}/{summary['max']:.3f} ms"
        _print(line)
    if len(got) < len(rtts):
        raise CliError(f"{len(rtts) - len(got)} of {len(rtts)} pings got no pong within {args.timeout:g} s")
    return EXIT_OK


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def cmd_send(args: argparse.Namespace) -> int:
    """``smsgnet send``: send one message, optionally wait for its reply."""
    node = _client_node(args, "smsgnet-send")
    return asyncio.run(_send(args, node))


async def _send(args: argparse.Namespace, node: NodeManager) -> int:
    reply: Message | None = None
    async with _client_session(args, node, control=False) as (_url, conn, replies):
        msg = Message.new(args.type, node.node_id, conn.peer_id, args.payload)
        fut = replies.expect(msg.id) if args.wait_reply else None
        await conn.send(msg)
        log.info("sent %s %s to %s", msg.type, msg.id, conn.peer_id)
        if fut is not None:
            try:
                reply = await asyncio.wait_for(fut, args.wait_reply)
            except TimeoutError:
                raise CliError(f"no reply within {args.wait_reply:g} s") from None
    if reply is None:
        if args.json:
            _print(msg.to_json().decode())
        else:
            _print(msg.id)
        return EXIT_OK
    if args.json:
        _print(reply.to_json().decode())
    else:
        _print(orjson.dumps(reply.payload).decode())
    if reply.type == "error":
        p = reply.payload if isinstance(reply.payload, dict) else {}
        raise CliError(f"peer answered with error {p.get('code', '?')}: {p.get('message', '')}".rstrip(": "))
    return EXIT_OK


# -- demo --------------------------------------------------------------------------------------


async def _wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def _short(value: Any, limit: int = 90) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def cmd_demo(args: argparse.Namespace) -> int:
    """``smsgnet demo``: three in-process nodes showing the protocol."""
    if args.verbose == 0:
        # the demo reports the replay it provokes; keep the log warning about it out of the way
        logging.getLogger("smsgnet").setLevel(logging.ERROR)
    return asyncio.run(_demo(as_json=args.json))


async def _demo(*, as_json: bool) -> int:
    started = time.perf_counter()
    out: Callable[[str], None] = (lambda _text: None) if as_json else _print
    names = {"alice": NodeRole.CONTROLLER, "bob": NodeRole.WORKER, "carol": NodeRole.DUAL}
    nodes = {name: NodeManager.generate(name, role) for name, role in names.items()}
    name_of = {n.node_id: name for name, n in nodes.items()}
    received: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    replies = _Replies()
    transports: dict[str, Transport] = {}

    def recorder(me: str) -> Callable[[PeerConnection, Message], Any]:
        async def handle(conn: PeerConnection, msg: Message) -> None:
            if msg.type in CONTROL_TYPES and msg.type != "pong":
                return
            if msg.type != "pong":
                received[me].append({"type": msg.type, "from": name_of.get(msg.from_, msg.from_),
                                     "payload": msg.payload, "replyTo": msg.reply_to or None})
            if me == "alice":
                replies(conn, msg)
            if me == "bob" and msg.type == "get_stats":
                s = transports["bob"].stats()
                await conn.send(msg.reply("stats", {
                    "node": "bob", "peers": transports["bob"].connected_peers,
                    "messagesIn": s.messages_in, "messagesOut": s.messages_out,
                    "uptimeMs": round((time.perf_counter() - started) * 1000),
                }, from_=nodes["bob"].node_id))
        return handle

    result: dict[str, Any] = {"nodes": {}}
    try:
        for name, node in nodes.items():
            # alice also sees pongs, to time her pings
            config = TransportConfig(listen_addr="127.0.0.1:0", handshake_timeout=2.0, write_timeout=2.0,
                                     deliver_control_messages=(name == "alice"))
            t = Transport(node, config=config)
            t.on_message(recorder(name))
            await t.start()
            transports[name] = t
        alice, bob, carol = transports["alice"], transports["bob"], transports["carol"]

        out("smsgnet demo: three nodes in this process, talking over 127.0.0.1")
        out("")
        out("1. Nodes (fresh X25519 key pairs, in memory; node ID = first 16 bytes of SHA-256(public key))")
        for name, t in transports.items():
            ident = nodes[name].identity
            result["nodes"][name] = {"id": ident.id, "role": ident.role, "publicKey": ident.public_key, "url": t.url}
            out(f"   {name:<6} {ident.role:<10} {ident.id}  {t.url}")

        # -- handshake --
        hello = Initiator(nodes["alice"]).hello()
        ack, _ = Responder(nodes["bob"], PeerRegistry()).receive_hello(hello)
        a2b = await alice.connect(bob.url, expect_key=nodes["bob"].identity.public_key)
        await _wait_until(lambda: bob.get_connection(nodes["alice"].node_id) is not None)
        b2a = bob.get_connection(nodes["alice"].node_id)
        assert b2a is not None
        await _wait_until(lambda: b2a.proven)
        same_secret = a2b.shared_secret == b2a.shared_secret
        out("")
        out("2. Handshake: alice connects to bob (clear-text JSON text frames)")
        out(f"   alice -> bob  handshake      {len(hello):4d} bytes: alice's identity, a 32-byte random challenge, "
            f"version {PROTOCOL_VERSION}")
        out(f"   bob -> alice  handshake_ack  {len(ack):4d} bytes: bob's identity, HMAC-SHA256(shared secret, challenge)")
        out("   alice verified the HMAC and that bob presented the key she expected (--expect-key);")
        out("   bob counts alice as proven once her first encrypted frame opens (she answered his ping).")
        out(f"   both sides derived the same shared secret on their own: {'yes' if same_secret else 'NO'}")
        result["handshake"] = {"helloBytes": len(hello), "ackBytes": len(ack), "sameSecret": same_secret,
                               "bobSeesAliceProven": b2a.proven}

        # -- messages both ways --
        request = Message.new("get_stats", nodes["alice"].node_id, nodes["bob"].node_id, {"detail": "short"})
        waiting = replies.expect(request.id)
        await a2b.send(request)
        stats = await asyncio.wait_for(waiting, 2.0)
        await b2a.send(Message.new("hello", nodes["bob"].node_id, nodes["alice"].node_id, "hi alice, bob here"))
        await _wait_until(lambda: any(m["type"] == "hello" for m in received["alice"]))
        out("")
        out("3. Messages both ways (each one an SMSG frame, XChaCha20-Poly1305)")
        out(f"   alice -> bob  get_stats  {_short(request.payload)}")
        out(f"   bob -> alice  stats      {_short(stats.payload)}")
        out(f"                 replyTo {stats.reply_to} "
            f"{'= the id of get_stats' if stats.reply_to == request.id else '!= the id of get_stats (WRONG)'}")
        out(f"   bob -> alice  hello      {_short('hi alice, bob here')}")
        result["request"] = {"id": request.id, "replyTo": stats.reply_to, "reply": stats.payload}

        # -- broadcast --
        await carol.connect(alice.url)
        await carol.connect(bob.url)
        cid = nodes["carol"].node_id
        await _wait_until(lambda: all((c := t.get_connection(cid)) is not None and c.proven for t in (alice, bob)))
        announce = Message.new("announce", nodes["alice"].node_id, "", {"text": "new job available"})
        failures = await alice.broadcast(announce)
        await _wait_until(lambda: all(any(m["type"] == "announce" for m in received[n]) for n in ("bob", "carol")))
        await asyncio.sleep(0.02)  # would alice's own broadcast come back to her? (it must not)
        reached = [n for n in names if any(m["type"] == "announce" for m in received[n])]
        out("")
        out("4. Broadcast: carol joins (alice, bob and carol are now fully connected)")
        out(f"   alice broadcasts 'announce' to every peer except the sender: reached {', '.join(reached)}"
            f"; alice herself: {'yes (WRONG)' if 'alice' in reached else 'no'}")
        result["broadcast"] = {"reached": reached, "failures": {k: str(v) for k, v in failures.items()}}

        # -- the wire --
        frame = seal_sample(a2b, request)
        info = describe_frame(frame)
        body_len = len(request.to_json())
        opened = _core.SmsgCipher(b2a.shared_secret).open(frame) == request.to_json()
        sizes = {t: len(seal_sample(a2b, m)) for t, m in (
            ("ping", Message.ping(nodes["alice"].node_id, nodes["bob"].node_id)),
            ("get_stats", request),
            ("stats", stats),
            ("announce", announce),
        )}
        out("")
        out("5. On the wire: the get_stats frame, taken apart")
        out(f"   message JSON {body_len} bytes -> frame {info['frame_len']} bytes:")
        out(f"   magic    {info['magic']!r}                     (clear text)")
        out(f"   version  0x{info['version']:02x}                       (clear text)")
        out(f"   header   {info['header_len']} bytes {info['header']}  (clear text, NOT authenticated)")
        out(f"   nonce    {info['nonce_hex']}  (24 random bytes)")
        out(f"   sealed   {info['sealed_len']} bytes: envelope {{body, timestamp}} XOR SHA-256 keystream, "
            "XChaCha20-Poly1305, 16-byte tag")
        out(f"   bob opens it with the key he derived himself: {'yes' if opened else 'NO'}")
        out("   frame sizes: " + ", ".join(f"{t} {n} B" for t, n in sizes.items()))
        result["frame"] = {**info, "messageJsonLen": body_len, "bobOpensIt": opened, "sizes": sizes}

        # -- replay --
        copy = Message.new("note", nodes["alice"].node_id, nodes["bob"].node_id, "sent twice, delivered once")
        await a2b.send(copy)
        await a2b.send(copy)  # same id again: a replay
        again = Message.new("get_stats", nodes["alice"].node_id, nodes["bob"].node_id)
        waiting = replies.expect(again.id)
        await a2b.send(again)
        await asyncio.wait_for(waiting, 2.0)  # bob reads in order: the copy has been handled by now
        notes = sum(1 for m in received["bob"] if m["type"] == "note")
        out("")
        out("6. Replay: alice sends the same message (same id) twice")
        out(f"   bob delivered it {notes} time(s) and dropped the copy: drops {bob.stats().drops}")

        # -- ping --
        rtts = []
        for _ in range(3):
            ping = Message.ping(nodes["alice"].node_id, nodes["bob"].node_id)
            waiting = replies.expect(ping.id)
            t0 = time.perf_counter()
            await a2b.send(ping)
            await asyncio.wait_for(waiting, 2.0)
            rtts.append((time.perf_counter() - t0) * 1000.0)
        out("")
        out("7. Ping: alice -> bob -> alice, round-trip times " + ", ".join(f"{r:.3f} ms" for r in rtts))
        result["pingMs"] = [round(r, 3) for r in rtts]

        # -- what each side received, drops --
        out("")
        out("8. What each node's handler received, and the frames each dropped")
        result["received"] = received
        result["drops"] = {}
        for name, t in transports.items():
            got = ", ".join(f"{m['type']} (from {m['from']})" for m in received[name]) or "nothing"
            st = t.stats()
            result["drops"][name] = st.drops
            out(f"   {name:<6} {got}")
            out(f"          messages in {st.messages_in}, out {st.messages_out}; drops: {st.drops or 'none'}")

        # -- shutdown --
        t0 = time.perf_counter()
        await alice.stop()
        await _wait_until(lambda: b2a.state.value == "closed")
        out("")
        out("9. Shutdown: alice stops first")
        out(f"   bob saw: disconnect code {b2a.close_code} ({b2a.close_reason!r}), sent by alice: {b2a.closed_by_peer}")
        await asyncio.gather(bob.stop(), carol.stop())
        out(f"   all three nodes stopped in {(time.perf_counter() - t0) * 1000:.0f} ms")
        result["shutdown"] = {"bobSawCode": b2a.close_code, "reason": b2a.close_reason}
    finally:
        await asyncio.gather(*(t.stop() for t in transports.values()), return_exceptions=True)
    result["elapsedMs"] = round((time.perf_counter() - started) * 1000)
    if as_json:
        _print_json(result)
    else:
        out(f"\ndone in {result['elapsedMs']} ms. Next: smsgnet serve --listen 127.0.0.1:9091 --echo, "
            "then smsgnet ping 127.0.0.1:9091 (see docs/quickstart.md)")
    return EXIT_OK
