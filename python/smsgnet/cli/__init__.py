"""The ``smsgnet`` command: ``keygen``, ``serve``, ``ping``, ``send``, ``bench`` and ``demo``.

Every subcommand has ``--help``. Exit codes: 0 success, 1 runtime failure
(unreachable peer, refused handshake, unreadable identity, no reply in time),
2 usage error (bad address, bad option value), 130 interrupted. Errors are one
line on stderr; logs go to stderr (``-v`` INFO, ``-vv`` DEBUG); stdout carries
only results, as JSON with ``--json``.

Layout: :mod:`~smsgnet.cli.arguments` defines every shared option once;
:mod:`~smsgnet.cli.output` prints results and errors; one module per command
(:mod:`~smsgnet.cli.keygen`, :mod:`~smsgnet.cli.serve`,
:mod:`~smsgnet.cli.client` for ``ping`` and ``send``, :mod:`~smsgnet.cli.bench`,
:mod:`~smsgnet.cli.demo`); :mod:`~smsgnet.cli.loops` picks the event loop
(``--loop asyncio|uvloop``) of ``serve`` and ``bench``.

``seal_sample`` and ``describe_frame`` are small public helpers the demo uses
to show what an SMSG frame looks like on the wire.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from smsgnet.cli import arguments, bench, client, demo, keygen, serve
from smsgnet.cli.client import client_config as _client_config  # noqa: F401  (tests check client nodes)
from smsgnet.cli.frames import describe_frame, seal_sample
from smsgnet.cli.output import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    UsageError,
    report_error,
    setup_logging,
)
from smsgnet.cli.state import default_state_dir
from smsgnet.exceptions import SmsgnetError

__all__ = ["main", "build_parser", "default_state_dir", "seal_sample", "describe_frame",
           "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``smsgnet`` command."""
    parser, sub = arguments.top_level_parser()
    keygen.add_parser(sub)
    serve.add_parser(sub)
    client.add_parsers(sub)
    bench.add_parser(sub)
    demo.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``smsgnet`` command; returns the exit code (for ``sys.exit``).

    Errors are one line on stderr, or with ``--json`` one JSON object on stdout
    (usage errors too, when ``--json`` is among the arguments).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        command = next((a for a in argv if a in _commands(parser)), None)
        return report_error(command, e, as_json="--json" in argv)
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except (CliError, SmsgnetError, KeyboardInterrupt) as e:
        return report_error(args.command, e, as_json=args.json)
    except BrokenPipeError:
        return EXIT_FAILURE


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices or {})
