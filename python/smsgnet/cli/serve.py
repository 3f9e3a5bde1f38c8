"""``smsgnet serve``: run a node until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable

from smsgnet import metrics
from smsgnet.config import TransportConfig
from smsgnet.connection import PeerConnection
from smsgnet.exceptions import RegistryError, SmsgnetError
from smsgnet.identity import NodeManager
from smsgnet.message import CONTROL_TYPES, Message
from smsgnet.registry import AuthMode, PeerRegistry
from smsgnet.transport import Transport

from smsgnet.cli import arguments, loops
from smsgnet.cli.arguments import DEFAULTS
from smsgnet.cli.output import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, say_json
from smsgnet.cli.state import default_state_dir, load_identity

log = logging.getLogger("smsgnet.cli")


def add_parser(sub: arguments.SubParsers) -> None:
    p = arguments.add_command(
        sub, "serve", run=run, help="run a node until Ctrl-C or SIGTERM",
        description="Run a node. Prints one JSON line {id, publicKey, listen, url, loop} on stdout when "
                    "listening (with --json, then one line per message received), runs until "
                    "SIGINT/SIGTERM, when it disconnects every peer (code 1004), and exits 0. "
                    "The default --listen :9091 listens on EVERY interface.")
    p.add_argument("--listen", metavar="HOST:PORT", type=arguments.listen_address, default=":9091",
                   help="address to listen on; ':9091' (the default) is every interface, port 0 picks a free port")
    p.add_argument("--path", type=arguments.ws_path, default="/ws", help="WebSocket path (default: /ws)")
    arguments.add_state_with_default(p, "identity directory, created on first use")
    arguments.add_identity_fields(p, only_when_created=True)
    p.add_argument("--allowlist", action="store_true",
                   help="accept only registered peers and --allow-key keys")
    p.add_argument("--allow-key", metavar="KEY", dest="allow_keys", action="extend", nargs="+", default=[],
                   type=arguments.public_key,
                   help="base64 public key allowed to connect (repeatable; implies --allowlist)")
    p.add_argument("--registry", metavar="FILE",
                   help="JSON file that keeps known peers and allowed keys (a file saved in allowlist "
                        "mode keeps that mode)")
    p.add_argument("--tls-cert", metavar="F", help="PEM certificate: serve wss:// (needs --tls-key)")
    p.add_argument("--tls-key", metavar="F", help="PEM private key of --tls-cert")
    p.add_argument("--max-conns", metavar="N", type=arguments.positive_int, default=DEFAULTS.max_conns,
                   help=f"connections (established + pending) before HTTP 503 (default: {DEFAULTS.max_conns})")
    p.add_argument("--rate-limit", metavar="BURST:PER_SEC|off", type=arguments.rate_limit,
                   default=(DEFAULTS.rate_limit_burst, DEFAULTS.rate_limit_per_sec),
                   help=f"per-connection token bucket (default: {DEFAULTS.rate_limit_burst}:"
                        f"{DEFAULTS.rate_limit_per_sec:g})")
    p.add_argument("--echo", action="store_true",
                   help="answer every application message with type 'echo', same payload, replyTo = its id")
    p.add_argument("--metrics", metavar="HOST:PORT", type=arguments.listen_address,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (needs smsgnet[metrics]; "
                        "port 0 picks a free port)")
    arguments.add_protocol_options(p)
    loops.add_loop(p)
    arguments.add_json(p, "after the startup line, print one JSON line {type, from, size, id} per "
                          "message received; errors as JSON")


def _check_tls(cert: str, key: str) -> None:
    for what, path in (("certificate", cert), ("key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise CliError(f"cannot read TLS {what} {path}: {e.strerror or e}", kind="TLSError") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as e:
        raise CliError(f"cannot load TLS certificate {cert} with key {key}: {e}", kind="TLSError") from None


def _config(args: argparse.Namespace) -> TransportConfig:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError("--tls-cert and --tls-key go together", EXIT_USAGE, kind="UsageError")
    if args.tls_cert:
        _check_tls(args.tls_cert, args.tls_key)
    arguments.check_protocols(args)
    burst, per_sec = args.rate_limit
    return TransportConfig(
        listen_addr=args.listen,
        ws_path=args.path,
        tls_cert_path=args.tls_cert,
        tls_key_path=args.tls_key,
        max_conns=args.max_conns,
        rate_limit_burst=burst,
        rate_limit_per_sec=per_sec if per_sec is not None else DEFAULTS.rate_limit_per_sec,
        # the replay table lives beside the identity: no frame is accepted twice across restarts
        state_dir=str(args.state or default_state_dir()),
        min_protocol=args.min_protocol,
        max_protocol=args.max_protocol,
    )


def _registry(args: argparse.Namespace) -> PeerRegistry:
    # without --allowlist/--allow-key the registry keeps the mode saved in its file (default open)
    mode = AuthMode.ALLOWLIST if args.allowlist or args.allow_keys else None
    try:
        registry = PeerRegistry(args.registry, auth_mode=mode)
    except RegistryError as e:
        raise CliError(str(e), kind="RegistryError") from None
    for key in args.allow_keys:
        registry.allow_key(key)
    if args.registry is not None:
        registry.save()  # the file records the mode from the start
    return registry


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.metrics:
        try:
            metrics.require_prometheus()
        except ImportError as e:
            raise CliError(str(e), kind="MissingDependency") from None
    node = load_identity(args.state or default_state_dir(), args.name, args.role)
    registry = _registry(args)
    loop = loops.resolve(args.loop)
    return loops.run(_serve(node, registry, config, args, loop), loop)


async def _drain(conn: PeerConnection) -> None:
    """Wait for a link's send buffer to drain (backpressure on the echo)."""
    try:
        await conn.drain()
    except SmsgnetError as e:
        log.info("echo to %s failed: %s", conn.peer_id, e)


async def _serve(node: NodeManager, registry: PeerRegistry, config: TransportConfig,
                 args: argparse.Namespace, loop_name: str = "asyncio") -> int:
    transport = Transport(node, registry, config)
    stop = asyncio.Event()
    failed = False

    logging_messages = log.isEnabledFor(logging.INFO)  # -v: decided once, not per message

    def handle(conn: PeerConnection, msg: Message) -> Awaitable[None] | None:
        # a plain function: the echo is queued at once (send_nowait), and only a
        # full send buffer makes this link's reader wait (the drain it returns)
        nonlocal failed
        if logging_messages:
            log.info("%s from %s (%s)", msg.type, conn.peer_id, conn.identity.name or "unnamed")
        if args.json and not failed:
            try:
                say_json({"type": msg.type, "from": msg.from_, "size": len(msg.to_json()), "id": msg.id})
            except BrokenPipeError:  # nobody reads stdout any more: stop, as a pipeline would
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                failed = True
                stop.set()
        if args.echo and msg.type not in CONTROL_TYPES:
            try:
                if not conn.send_nowait(msg.reply("echo", msg.payload, from_=node.node_id)):
                    return _drain(conn)
            except SmsgnetError as e:
                log.info("echo to %s failed: %s", conn.peer_id, e)
        return None

    transport.on_message(handle)
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
    exporter: metrics.MetricsServer | None = None
    running = False
    try:
        await transport.start()  # when it raises, it has undone itself: nothing to stop
        running = True
        host = (config.listen_addr or "").rpartition(":")[0]
        started = {
            "id": node.node_id,
            "publicKey": node.identity.public_key,
            "listen": f"{host}:{transport.port}",
            "url": transport.url,
            "loop": loop_name,
        }
        if args.metrics:
            exporter = await _serve_metrics(transport, args.metrics)
            started["metrics"] = exporter.url
        say_json(started)
        where = "every interface" if host in ("", "0.0.0.0", "[::]") else host
        also = f"; metrics at {exporter.url}" if exporter is not None else ""
        print(f"smsgnet serve: node {node.node_id} listening on {where}, port {transport.port} "
              f"({transport.url}, auth {registry.auth_mode}){also}; Ctrl-C to stop", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("stopping: disconnecting %d peer(s)", transport.connected_peers)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if exporter is not None:
            await exporter.close()
        if running:
            await transport.stop()
    return EXIT_FAILURE if failed else EXIT_OK


async def _serve_metrics(transport: Transport, address: str) -> metrics.MetricsServer:
    host, port = arguments.split_host_port(address)
    try:
        return await metrics.serve_metrics(transport, host, port)
    except OSError as e:
        raise CliError(f"cannot serve metrics on {address}: {e.strerror or e}", kind="MetricsError") from None
