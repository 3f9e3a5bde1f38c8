"""Protocol 2.0 against an independent implementation written from the specs.

``ReferenceNoiseIK`` below is the Noise Protocol Framework (revision 34,
sections 5 and 7) for ``Noise_IK_25519_AESGCM_SHA256``, written here in
Python from the specification with the ``cryptography`` package's X25519,
AES-256-GCM and HMAC-SHA256, plus the record layer of docs/protocol.md
("Protocol 2.0"). With the same static and ephemeral keys, the native core
(snow) must produce the same handshake messages byte for byte, the same
records, and open what the reference seals: this is what lets another
implementation be written from docs/protocol.md.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smsgnet import _core

NAME = b"Noise_IK_25519_AESGCM_SHA256"
assert len(NAME) == 28  # under HASHLEN: padded with zeros (Noise section 5.2)
RECORD_MAX = 65_535
RECORD_DATA_MAX = RECORD_MAX - 16 - 1

ACCEPTOR_STATIC = bytes(range(1, 33))
DIALLER_STATIC = bytes(range(33, 65))
ACCEPTOR_EPHEMERAL = bytes(range(65, 97))
DIALLER_EPHEMERAL = bytes(range(97, 129))
HELLO = b'{"type":"handshake","payload":{"version":"1.0","protocols":["2.0"]}}'
ACK = b'{"type":"handshake_ack","payload":{"accepted":true,"protocol":"2.0"}}'


def public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def dh(private: bytes, peer_public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))


def hkdf(ck: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = hmac.new(ck, ikm, hashlib.sha256).digest()
    out1 = hmac.new(temp, b"\x01", hashlib.sha256).digest()
    out2 = hmac.new(temp, out1 + b"\x02", hashlib.sha256).digest()
    return out1, out2


def nonce(n: int) -> bytes:  # AESGCM: 32 zero bits, then n big-endian (Noise section 12.4)
    return b"\x00" * 4 + struct.pack(">Q", n)


class CipherState:
    def __init__(self, key: bytes | None = None) -> None:
        self.k, self.n = key, 0

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        assert self.k is not None
        out = AESGCM(self.k).encrypt(nonce(self.n), plaintext, ad)
        self.n += 1
        return out

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        assert self.k is not None
        out = AESGCM(self.k).decrypt(nonce(self.n), ciphertext, ad)
        self.n += 1
        return out

    def rekey(self) -> None:  # Noise section 4.2: REKEY(k) = ENCRYPT(k, 2^64 - 1, "", zeros)[:32]
        assert self.k is not None
        self.k = AESGCM(self.k).encrypt(nonce(2**64 - 1), b"\x00" * 32, b"")[:32]


class SymmetricState:
    def __init__(self, prologue: bytes) -> None:
        self.h = NAME.ljust(32, b"\x00")  # shorter than HASHLEN: zero-padded
        self.ck = self.h
        self.cipher = CipherState()
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, key = hkdf(self.ck, ikm)
        self.cipher = CipherState(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        out = self.cipher.encrypt(self.h, plaintext) if self.cipher.k else plaintext
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        out = self.cipher.decrypt(self.h, ciphertext) if self.cipher.k else ciphertext
        self.mix_hash(ciphertext)
        return out

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = hkdf(self.ck, b"")
        return CipherState(k1), CipherState(k2)


def reference_handshake() -> tuple[bytes, bytes, tuple[CipherState, CipherState], tuple[CipherState, CipherState]]:
    """IK with the acceptor as Noise initiator (it knows the dialler's static key)."""
    prologue = b"smsgnet/2.0\n" + struct.pack(">I", len(HELLO)) + HELLO + struct.pack(">I", len(ACK)) + ACK
    d_static_pub = public(DIALLER_STATIC)
    # acceptor: pre-message <- s, then -> e, es, s, ss
    acc = SymmetricState(prologue)
    acc.mix_hash(d_static_pub)
    e_pub = public(ACCEPTOR_EPHEMERAL)
    acc.mix_hash(e_pub)
    acc.mix_key(dh(ACCEPTOR_EPHEMERAL, d_static_pub))
    enc_s = acc.encrypt_and_hash(public(ACCEPTOR_STATIC))
    acc.mix_key(dh(ACCEPTOR_STATIC, d_static_pub))
    m1 = e_pub + enc_s + acc.encrypt_and_hash(b"")
    # dialler reads it
    dia = SymmetricState(prologue)
    dia.mix_hash(d_static_pub)
    re = m1[:32]
    dia.mix_hash(re)
    dia.mix_key(dh(DIALLER_STATIC, re))
    rs = dia.decrypt_and_hash(m1[32:80])
    assert rs == public(ACCEPTOR_STATIC)
    dia.mix_key(dh(DIALLER_STATIC, rs))
    assert dia.decrypt_and_hash(m1[80:]) == b""
    # dialler: <- e, ee, se
    de_pub = public(DIALLER_EPHEMERAL)
    dia.mix_hash(de_pub)
    dia.mix_key(dh(DIALLER_EPHEMERAL, re))
    dia.mix_key(dh(DIALLER_EPHEMERAL, rs))
    m2 = de_pub + dia.encrypt_and_hash(b"")
    # acceptor reads it
    acc.mix_hash(m2[:32])
    acc.mix_key(dh(ACCEPTOR_EPHEMERAL, m2[:32]))
    acc.mix_key(dh(ACCEPTOR_STATIC, m2[:32]))
    assert acc.decrypt_and_hash(m2[32:]) == b""
    assert acc.h == dia.h
    # Split: the Noise initiator (acceptor) sends with c1, the dialler with c2
    c1, c2 = acc.split()
    d1, d2 = dia.split()
    return m1, m2, (c1, c2), (d2, d1)  # (send, receive) for acceptor, then dialler


def reference_seal(send: CipherState, message: bytes, rekey: bool = False) -> bytes:
    chunks = [message[i:i + RECORD_DATA_MAX] for i in range(0, len(message), RECORD_DATA_MAX)] or [b""]
    out = b""
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        flags = (0x01 | (0x02 if rekey else 0)) if last else 0
        out += send.encrypt(b"", bytes([flags]) + chunk)
    if rekey:
        send.rekey()
    return out


def reference_open(receive: CipherState, frame: bytes) -> bytes:
    pieces = [frame[i:i + RECORD_MAX] for i in range(0, len(frame), RECORD_MAX)]
    message, rekey = b"", False
    for i, piece in enumerate(pieces):
        plain = receive.decrypt(b"", piece)
        last = i == len(pieces) - 1
        assert plain[0] == (plain[0] & 0x03 if last else 0) and (not last or plain[0] & 0x01)
        message += plain[1:]
        rekey = last and bool(plain[0] & 0x02)
    if rekey:
        receive.rekey()
    return message


def native_pair(rekey_interval: int = 0) -> tuple[bytes, bytes, _core.NoiseLink, _core.NoiseLink]:
    prologue = _core.noise_prologue(HELLO, ACK)
    acceptor = _core.NoiseHandshake.acceptor(ACCEPTOR_STATIC, public(DIALLER_STATIC), prologue,
                                             ephemeral=ACCEPTOR_EPHEMERAL)
    dialler = _core.NoiseHandshake.dialler(DIALLER_STATIC, prologue, ephemeral=DIALLER_EPHEMERAL)
    m1 = acceptor.write_message()
    dialler.read_message(m1)
    assert dialler.remote_public == public(ACCEPTOR_STATIC)
    m2 = dialler.write_message()
    acceptor.read_message(m2)
    assert acceptor.handshake_hash == dialler.handshake_hash
    return (m1, m2, acceptor.into_link(rekey_interval=rekey_interval),
            dialler.into_link(rekey_interval=rekey_interval))


def test_the_prologue_is_the_label_then_hello_and_ack_behind_their_lengths():
    assert _core.noise_prologue(HELLO, ACK) == (
        b"smsgnet/2.0\n" + struct.pack(">I", len(HELLO)) + HELLO + struct.pack(">I", len(ACK)) + ACK)


def test_handshake_messages_match_the_specification_byte_for_byte():
    m1, m2, _, _ = native_pair()
    ref_m1, ref_m2, _, _ = reference_handshake()
    assert len(m1) == 96 and len(m2) == 48
    assert m1 == ref_m1
    assert m2 == ref_m2


@pytest.mark.parametrize("size", [0, 1, 1024, RECORD_DATA_MAX, RECORD_DATA_MAX + 1, 3 * RECORD_DATA_MAX + 7])
def test_records_match_the_specification_in_both_directions(size):
    _, _, acceptor, dialler = native_pair()
    _, _, (a_send, a_recv), (d_send, d_recv) = reference_handshake()
    message = orjson.dumps({"id": "m", "type": "t", "payload": "x" * size})[: max(size, 1)] if size else b""
    for _ in range(2):  # the counters move on together
        # dialler -> acceptor: the same bytes as the reference, opened by both
        frame = dialler.seal(message)
        assert frame == reference_seal(d_send, message)
        assert reference_open(a_recv, frame) == message
        assert acceptor.open(frame) == message
        # acceptor -> dialler
        frame = acceptor.seal(message)
        assert frame == reference_seal(a_send, message)
        assert reference_open(d_recv, frame) == message
        assert dialler.open(frame) == message


def test_rekey_follows_noise_section_11_3():
    _, _, acceptor, dialler = native_pair(rekey_interval=2)
    _, _, (_, a_recv), (d_send, _) = reference_handshake()
    for i in range(7):
        message = b'{"n":%d}' % i
        frame = dialler.seal(message)
        assert frame == reference_seal(d_send, message, rekey=i % 2 == 1)  # every second message
        assert reference_open(a_recv, frame) == message
    assert dialler.rekeys == (3, 0)
