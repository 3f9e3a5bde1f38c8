"""``smsgnet keygen``: create a node identity, refusing to replace one."""

from __future__ import annotations

import argparse
from pathlib import Path

from smsgnet.exceptions import IdentityError
from smsgnet.identity import NodeManager

from smsgnet.cli import arguments
from smsgnet.cli.output import EXIT_OK, CliError, say, say_json
from smsgnet.cli.state import default_state_dir


def add_parser(sub: arguments.SubParsers) -> None:
    p = arguments.add_command(
        sub, "keygen", run=run, help="create a node identity (X25519 key pair)",
        description="Create a node identity and print its ID and public key. "
                    "Refuses to replace an existing identity unless --force.")
    arguments.add_state_with_default(p, "state directory")
    arguments.add_identity_fields(p, only_when_created=False)
    p.add_argument("--force", action="store_true", help="replace an existing identity")
    arguments.add_json(p, "print the identity as JSON")


def run(args: argparse.Namespace) -> int:
    state: Path = args.state or default_state_dir()
    if NodeManager.exists(state) and not args.force:
        try:
            existing = f" (node {NodeManager.load(state).node_id})"
        except IdentityError:
            existing = ""
        raise CliError(f"an identity already exists in {state}{existing}; use --force to replace it",
                       kind="IdentityExists")
    try:
        node = NodeManager.generate(args.name, args.role, state, overwrite=args.force)
    except IdentityError as e:
        raise CliError(str(e), kind="IdentityError") from None
    except OSError as e:
        raise CliError(f"cannot write identity to {state}: {e.strerror or e}", kind="IdentityError") from None
    ident = node.identity
    if args.json:
        say_json({**ident.to_dict(), "stateDir": str(state)})
    else:
        say(f"created identity in {state}")
        say(f"id          {ident.id}")
        say(f"public key  {ident.public_key}")
        say(f"name        {ident.name or '(none)'}")
        say(f"role        {ident.role}")
    return EXIT_OK
