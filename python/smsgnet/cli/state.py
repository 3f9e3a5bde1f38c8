"""Where the CLI keeps a node's identity, and loading it."""

from __future__ import annotations

import os
from pathlib import Path

from smsgnet.exceptions import IdentityError
from smsgnet.identity import NodeManager, NodeRole

from smsgnet.cli.output import CliError


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


def load_identity(state: Path, name: str = "", role: str = NodeRole.DUAL) -> NodeManager:
    """The identity in ``state``, created on first use; a :class:`CliError` when it cannot be used."""
    try:
        return NodeManager.load_or_generate(state, name, role)
    except IdentityError as e:
        raise CliError(f"cannot use identity: {e}", kind="IdentityError") from None
    except OSError as e:
        raise CliError(f"cannot use identity in {state}: {e.strerror or e}", kind="IdentityError") from None
