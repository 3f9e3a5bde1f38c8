"""Node identity (PROTOCOL.md §1): an X25519 key pair, its node ID, and the
JSON object a node presents in the handshake.

A :class:`NodeManager` owns the private key. With a state directory it keeps
``private.key`` (32 raw bytes, mode 0600) and ``identity.json`` in a directory
of mode 0700, both written atomically (temporary file, fsync, rename).

Limits on identity fields
-------------------------

A peer chooses every field of the identity it presents, and the registry keeps
and logs them, so each field has a maximum length (:data:`IDENTITY_LIMITS`,
in characters, by wire name)::

    id          32   exactly 32 lowercase hex digits (hash of the key, PROTOCOL.md §1)
    publicKey   44   exactly 44 characters of padded standard base64 (32 bytes)
    name       256
    createdAt   64   RFC 3339 as the reference writes it needs at most 35
    role        64   the reference roles need at most 10

and no field may hold a control character (U+0000-U+001F, U+007F-U+009F) or a
line/paragraph separator (U+2028, U+2029): such an identity is refused, not
cleaned, so what a peer is called is exactly what it sent. Other characters
are allowed; logs still show every peer string through
:func:`smsgnet.logsafe.clip`, which escapes anything not printable.
:meth:`NodeIdentity.check_fields` applies the rule; the handshake refuses a
peer's identity that breaks it (``accepted: false`` with the reason, e.g.
``identity field name too long (max 256)``), and :class:`NodeManager` refuses
to build such an identity for this node, so a node never presents one its
peers would refuse. The exact lengths of ``id`` and ``publicKey`` are checked
by :meth:`NodeIdentity.verify`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson

from smsgnet import _core
from smsgnet.exceptions import IdentityError, IdentityMismatchError, InvalidKeyError
from smsgnet.message import b64decode, b64encode, format_timestamp

__all__ = ["IDENTITY_LIMITS", "NodeRole", "NodeIdentity", "NodeManager"]

PRIVATE_KEY_FILE = "private.key"
IDENTITY_FILE = "identity.json"

#: Maximum length in characters of each identity field, by wire name.
IDENTITY_LIMITS: Final[Mapping[str, int]] = MappingProxyType(
    {"id": 32, "name": 256, "publicKey": 44, "createdAt": 64, "role": 64}
)
#: Characters no identity field may hold: C0 and C1 controls, DEL, U+2028, U+2029.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class NodeRole(StrEnum):
    """What a node does in the network."""

    CONTROLLER = "controller"
    WORKER = "worker"
    DUAL = "dual"


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """The public face of a node: ``{"id","name","publicKey","createdAt","role"}``."""

    id: str
    name: str
    public_key: str
    created_at: str
    role: str

    @property
    def public_key_bytes(self) -> bytes:
        """The 32 raw bytes of the public key."""
        return b64decode(self.public_key)

    def to_dict(self) -> dict[str, str]:
        """The identity as JSON-ready dict in wire key order."""
        return {
            "id": self.id,
            "name": self.name,
            "publicKey": self.public_key,
            "createdAt": self.created_at,
            "role": self.role,
        }

    def to_json(self) -> bytes:
        """Compact JSON, keys in wire order."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Any) -> NodeIdentity:
        """Parse an identity object. Raises :class:`ValueError` on a bad shape."""
        if not isinstance(obj, dict):
            raise ValueError("identity must be a JSON object")
        values = {}
        for key in ("id", "name", "publicKey", "createdAt", "role"):
            v = obj.get(key, "")
            if v is None:
                v = ""
            if not isinstance(v, str):
                raise ValueError(f"identity field {key!r} must be a string")
            values[key] = v
        return cls(values["id"], values["name"], values["publicKey"], values["createdAt"], values["role"])

    def check_fields(self) -> None:
        """Check every field against :data:`IDENTITY_LIMITS` and the control
        character rule (see the module docstring). Raises :class:`ValueError`
        whose message is the refusal reason, e.g. ``identity field name too
        long (max 256)``. Cheap: call it before anything else looks at a
        peer's identity."""
        for key, value in (("id", self.id), ("name", self.name), ("publicKey", self.public_key),
                           ("createdAt", self.created_at), ("role", self.role)):
            limit = IDENTITY_LIMITS[key]
            if len(value) > limit:
                raise ValueError(f"identity field {key} too long (max {limit})")
            if _FORBIDDEN.search(value):
                raise ValueError(f"identity field {key} holds a control character")

    def verify(self) -> bytes:
        """Check the identity is self-consistent; return the raw public key.

        The public key must be 32 bytes of strict standard base64 and ``id``
        must be the hash of it (the reference never checks this). Raises
        :class:`InvalidKeyError`.
        """
        try:
            public = b64decode(self.public_key)
        except ValueError as e:
            raise InvalidKeyError(f"invalid public key: {e}") from None
        if len(public) != 32:
            raise InvalidKeyError(f"public key must be 32 bytes, got {len(public)}")
        if _core.node_id(public) != self.id:
            raise IdentityMismatchError("node ID does not match public key")
        return public


def _write_atomic(path: Path, data: bytes | Iterable[bytes | memoryview], mode: int) -> None:
    """Replace ``path`` with ``data`` (bytes, or pieces written in turn):
    temporary file, fsync, rename, fsync of the directory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                for piece in data:
                    f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class NodeManager:
    """Owns this node's key pair and identity.

    Build one with :meth:`generate`, :meth:`load` or :meth:`load_or_generate`.
    The private key never leaves this object except through
    :meth:`derive_shared_secret` (and ``private_key`` for tests and tools).
    """

    __slots__ = ("_private", "identity", "state_dir")

    def __init__(self, private_key: bytes, identity: NodeIdentity, state_dir: Path | None = None) -> None:
        try:
            identity.check_fields()
        except ValueError as e:
            raise IdentityError(str(e)) from None
        public = _core.public_key(private_key)
        if b64encode(public) != identity.public_key or _core.node_id(public) != identity.id:
            raise IdentityError("identity does not match the private key")
        self._private = bytes(private_key)
        self.identity = identity
        self.state_dir = state_dir

    @classmethod
    def from_private_key(
        cls, private_key: bytes, name: str = "", role: str = NodeRole.DUAL, created_at: str | None = None
    ) -> NodeManager:
        """An in-memory node for a given private key (tests, tools).

        Raises :class:`IdentityError` for an unknown role, or a name or
        ``created_at`` beyond :data:`IDENTITY_LIMITS` or holding a control
        character (peers would refuse such an identity)."""
        try:
            role = str(NodeRole(role))
        except ValueError:
            raise IdentityError(f"role must be one of controller, worker, dual; got {role!r}") from None
        public = _core.public_key(private_key)
        identity = NodeIdentity(
            id=_core.node_id(public),
            name=name,
            public_key=b64encode(public),
            created_at=created_at or format_timestamp(),
            role=role,
        )
        return cls(private_key, identity)

    @classmethod
    def generate(
        cls, name: str = "", role: str = NodeRole.DUAL, state_dir: str | os.PathLike[str] | None = None,
        *, overwrite: bool = False,
    ) -> NodeManager:
        """A fresh identity; saved to ``state_dir`` when given.

        Refuses to replace an identity already in ``state_dir`` unless
        ``overwrite``, and a name beyond :data:`IDENTITY_LIMITS` or holding a
        control character (raises :class:`IdentityError`).
        """
        try:
            role = str(NodeRole(role))
        except ValueError:
            raise IdentityError(f"role must be one of controller, worker, dual; got {role!r}") from None
        private, _ = _core.generate_keypair()
        node = cls.from_private_key(private, name, role)
        if state_dir is not None:
            node.save(state_dir, overwrite=overwrite)
        return node

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str]) -> NodeManager:
        """Load the identity saved in ``state_dir``. Raises :class:`IdentityError`."""
        d = Path(state_dir)
        try:
            private = (d / PRIVATE_KEY_FILE).read_bytes()
            obj = orjson.loads((d / IDENTITY_FILE).read_bytes())
        except FileNotFoundError as e:
            raise IdentityError(f"no identity in {d}: {e.filename} is missing") from None
        except (OSError, orjson.JSONDecodeError) as e:
            raise IdentityError(f"cannot read identity in {d}: {e}") from None
        if len(private) != 32:
            raise IdentityError(f"{d / PRIVATE_KEY_FILE} must hold 32 bytes, has {len(private)}")
        try:
            identity = NodeIdentity.from_dict(obj)
        except ValueError as e:
            raise IdentityError(f"{d / IDENTITY_FILE}: {e}") from None
        return cls(private, identity, d)

    @classmethod
    def exists(cls, state_dir: str | os.PathLike[str]) -> bool:
        """True when ``state_dir`` holds a private key."""
        return (Path(state_dir) / PRIVATE_KEY_FILE).exists()

    @classmethod
    def load_or_generate(
        cls, state_dir: str | os.PathLike[str], name: str = "", role: str = NodeRole.DUAL
    ) -> NodeManager:
        """Load the identity in ``state_dir``, creating one the first time."""
        if cls.exists(state_dir):
            return cls.load(state_dir)
        return cls.generate(name, role, state_dir)

    def save(self, state_dir: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write ``private.key`` (0600) and ``identity.json`` into ``state_dir`` (0700)."""
        d = Path(state_dir)
        if not overwrite and (d / PRIVATE_KEY_FILE).exists():
            raise IdentityError(f"an identity already exists in {d} (use overwrite/--force to replace it)")
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        _write_atomic(d / PRIVATE_KEY_FILE, self._private, 0o600)
        _write_atomic(d / IDENTITY_FILE, orjson.dumps(self.identity.to_dict(), option=orjson.OPT_INDENT_2), 0o644)
        self.state_dir = d

    @property
    def node_id(self) -> str:
        """This node's ID (hex of the first 16 bytes of SHA-256 of the public key)."""
        return self.identity.id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self.identity.public_key_bytes

    @property
    def private_key(self) -> bytes:
        """The raw 32-byte private key. Handle with care."""
        return self._private

    def derive_shared_secret(self, peer_public: bytes) -> bytes:
        """SHA-256 of X25519(our private, peer public). Raises InvalidKeyError."""
        return _core.derive_shared_secret(self._private, peer_public)

    def __repr__(self) -> str:
        i = self.identity
        return f"NodeManager(id={i.id!r}, name={i.name!r}, role={i.role!r})"
