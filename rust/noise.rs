//! Protocol 2.0: the Noise handshake and the record layer of a 2.0 link.
//!
//! Theory of operation
//! -------------------
//! Protocol 2.0 runs between smsgnet nodes that both offered and accepted it in
//! the clear-text 1.0 exchange (`docs/protocol.md`, "Protocol 2.0"). The Noise
//! primitives are the `snow` crate's, with ring for AES-256-GCM and
//! SHA-256 and curve25519-dalek for X25519; nothing here is a hand-written
//! primitive. This module only fixes the pattern, the roles and the framing.
//!
//! **Pattern and roles.** `Noise_IK_25519_AESGCM_SHA256`, with the node's
//! long-term X25519 identity key as the Noise static key. The *Noise initiator
//! is the WebSocket responder* (the acceptor): the dialler's hello already
//! carries the dialler's public key, so the acceptor always knows the other
//! side's static key, which is what IK needs. The acceptor sends its
//! `handshake_ack` and IK message 1 (`e, es, s, ss`) in one flight; the
//! dialler answers with message 2 (`e, ee, se`) and may send its first record
//! in the same flight. The whole handshake is one round trip after the HTTP
//! upgrade for the dialler, one and a half for the acceptor.
//!
//! ```text
//!   dialler (Noise responder)                    acceptor (Noise initiator)
//!   hello {.., "protocols": ["2.0"]}   ──text──▶
//!                                      ◀──text──  handshake_ack {.., "protocol": "2.0"}
//!                                      ◀─binary─  IK msg 1: e, es, s, ss
//!   IK msg 2: e, ee, se                ─binary─▶
//!   records ...                        ◀──────▶   records ...
//! ```
//!
//! **Prologue.** Both sides start Noise with the prologue
//! `"smsgnet/2.0\n" || u32be(len hello) || hello || u32be(len ack) || ack`,
//! the exact bytes of the two TEXT frames. Any change to either (an offer
//! stripped, an identity swapped) makes message 1 fail to decrypt.
//!
//! **What is proven.** Reading message 1 needs the dialler's static private key
//! (`es`, `ss`); a message 1 that decrypts needed the acceptor's (`ss`).
//! Message 2's tag depends on both, so when the acceptor reads it, both keys
//! are proven and the link is live: no proof ping, no pending state. The
//! transport keys also depend on `ee`, so recorded traffic stays unreadable to
//! someone who later learns both long-term keys (forward secrecy).
//!
//! **Records.** A Noise transport message carries at most 65,535 bytes. One
//! transport Message (its JSON) goes in one binary WebSocket frame as one or
//! more records; each record's plaintext is one flags byte then up to
//! [`RECORD_DATA_MAX`] bytes of the message. Every record but the last is
//! exactly [`RECORD_MAX`] bytes long, so the receiver cuts the frame without
//! any length field. Flags: [`FLAG_FINAL`] on the last record only;
//! [`FLAG_REKEY`] (only with `FLAG_FINAL`) means "the sender rekeys its
//! sending key after this record": the receiver rekeys its receiving key after
//! opening it, so each side chooses its own rekey interval. Nonces are Noise's
//! counters: a link delivers in order, so a replayed, dropped, reordered or
//! injected record fails to open, and so does every record after it. A 2.0
//! link needs no replay table; any record that fails to open ends the link.

use snow::resolvers::{BoxedCryptoResolver, CryptoResolver, DefaultResolver, FallbackResolver};
use std::cell::RefCell;
use std::sync::{Mutex, RwLock};

use snow::{params::NoiseParams, Builder, HandshakeState, StatelessTransportState};

use crate::error::CoreError;
use crate::sizes::{KEY_LEN, TAG_LEN};

/// The Noise protocol name of a 2.0 link.
/// AES-GCM rather than ChaChaPoly: with ring's AES-NI code a 1 KiB record seals
/// and opens in a third of the time here (`cargo test --release -- --ignored
/// --nocapture bench_noise_ciphers`: 0.39 vs 1.14 us); ring's AES is
/// constant-time on machines without AES instructions too.
pub const PATTERN: &str = "Noise_IK_25519_AESGCM_SHA256";
/// The first bytes of every 2.0 prologue.
pub const PROLOGUE_LABEL: &[u8] = b"smsgnet/2.0\n";
/// Noise's limit on one transport message (ciphertext, tag included).
pub const RECORD_MAX: usize = 65_535;
/// Message bytes in one full record (the flags byte and the tag take the rest).
pub const RECORD_DATA_MAX: usize = RECORD_MAX - TAG_LEN - 1;
/// The smallest record: the flags byte and its tag.
pub const RECORD_MIN: usize = TAG_LEN + 1;
/// Flags byte: this record is the message's last.
pub const FLAG_FINAL: u8 = 0x01;
/// Flags byte: the sender rekeys its sending key after this (final) record.
pub const FLAG_REKEY: u8 = 0x02;
/// The largest handshake message of this pattern (msg 1: 32 + 48 + 16 bytes).
const HANDSHAKE_MSG_MAX: usize = 256;

fn params() -> NoiseParams {
    // The name is a constant and parses; a failure here is a bug caught by the tests.
    PATTERN.parse().unwrap_or_else(|_| unreachable!("PATTERN is a valid Noise name"))
}

fn resolver() -> BoxedCryptoResolver {
    // ring for AES-GCM, SHA-256 and randomness; the default resolver
    // (curve25519-dalek) for X25519, which ring's resolver does not offer.
    Box::new(FallbackResolver::new(Box::new(snow::resolvers::RingResolver), Box::new(DefaultResolver)))
        as Box<dyn CryptoResolver + Send>
}

fn handshake_err(what: &str, e: snow::Error) -> CoreError {
    CoreError::NoiseHandshake(format!("{what}: {e}"))
}

/// The prologue both sides feed to Noise: the label, then the hello and the
/// ack, each behind its length (u32 big-endian).
pub fn prologue(hello: &[u8], ack: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + 8 + hello.len() + ack.len());
    p.extend_from_slice(PROLOGUE_LABEL);
    p.extend_from_slice(&(hello.len() as u32).to_be_bytes());
    p.extend_from_slice(hello);
    p.extend_from_slice(&(ack.len() as u32).to_be_bytes());
    p.extend_from_slice(ack);
    p
}

fn key32(key: &[u8], what: &'static str) -> Result<(), CoreError> {
    if key.len() == KEY_LEN {
        Ok(())
    } else {
        Err(CoreError::KeyLength { what, got: key.len() })
    }
}

/// One side of the 2.0 handshake.
pub struct Handshake {
    state: HandshakeState,
}

impl Handshake {
    /// The acceptor's side (Noise initiator): it knows the dialler's key from the hello.
    pub fn acceptor(local_private: &[u8], dialler_public: &[u8], prologue: &[u8]) -> Result<Self, CoreError> {
        Self::start(local_private, Some(dialler_public), prologue, None)
    }

    /// The dialler's side (Noise responder).
    pub fn dialler(local_private: &[u8], prologue: &[u8]) -> Result<Self, CoreError> {
        Self::start(local_private, None, prologue, None)
    }

    /// Like [`Handshake::acceptor`] (with `remote_public`) or
    /// [`Handshake::dialler`] (without), with a fixed ephemeral key: for the
    /// test vectors only.
    pub fn with_ephemeral_for_tests(
        local_private: &[u8],
        remote_public: Option<&[u8]>,
        prologue: &[u8],
        ephemeral: &[u8],
    ) -> Result<Self, CoreError> {
        key32(ephemeral, "ephemeral key")?;
        Self::start(local_private, remote_public, prologue, Some(ephemeral))
    }

    /// The acceptor's side when the dialler's key is known, else the dialler's.
    fn start(
        local_private: &[u8],
        remote_public: Option<&[u8]>,
        prologue: &[u8],
        ephemeral: Option<&[u8]>,
    ) -> Result<Self, CoreError> {
        key32(local_private, "private key")?;
        if let Some(rs) = remote_public {
            key32(rs, "peer public key")?;
        }
        let failed = |e| handshake_err("cannot start the handshake", e);
        let mut b = Builder::with_resolver(params(), resolver())
            .local_private_key(local_private)
            .and_then(|b| b.prologue(prologue))
            .map_err(failed)?;
        if let Some(e) = ephemeral {
            b = b.fixed_ephemeral_key_for_testing_only(e);
        }
        let state = match remote_public {
            Some(rs) => b.remote_public_key(rs).and_then(|b| b.build_initiator()),
            None => b.build_responder(),
        }
        .map_err(failed)?;
        Ok(Handshake { state })
    }

    /// The next handshake message to send (empty payload).
    pub fn write_message(&mut self) -> Result<Vec<u8>, CoreError> {
        let mut buf = vec![0u8; HANDSHAKE_MSG_MAX];
        let n = self
            .state
            .write_message(&[], &mut buf)
            .map_err(|e| handshake_err("cannot write the handshake message", e))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Read the peer's handshake message; any payload must be empty.
    pub fn read_message(&mut self, message: &[u8]) -> Result<(), CoreError> {
        if message.len() > HANDSHAKE_MSG_MAX {
            return Err(CoreError::NoiseHandshake(format!(
                "handshake message of {} bytes (at most {HANDSHAKE_MSG_MAX})",
                message.len()
            )));
        }
        let mut buf = vec![0u8; HANDSHAKE_MSG_MAX];
        let n = self
            .state
            .read_message(message, &mut buf)
            .map_err(|e| handshake_err("handshake message did not verify", e))?;
        if n != 0 {
            return Err(CoreError::NoiseHandshake("handshake message carries a payload".into()));
        }
        Ok(())
    }

    /// True once both messages went through.
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The peer's static key (the acceptor knows it from the start; the
    /// dialler learns it from message 1).
    pub fn remote_static(&self) -> Option<[u8; KEY_LEN]> {
        self.state.get_remote_static().and_then(|k| k.try_into().ok())
    }

    /// The handshake hash (the same on both sides once finished).
    pub fn handshake_hash(&self) -> Vec<u8> {
        self.state.get_handshake_hash().to_vec()
    }

    /// The link's record layer; `rekey_interval` messages sent between rekeys (0: never).
    pub fn into_link(self, rekey_interval: u64) -> Result<Link, CoreError> {
        if !self.state.is_handshake_finished() {
            return Err(CoreError::NoiseHandshake("the handshake is not finished".into()));
        }
        let state = self
            .state
            .into_stateless_transport_mode()
            .map_err(|e| handshake_err("cannot start the link", e))?;
        Ok(Link {
            state: RwLock::new(state),
            send: Mutex::new(SendSide { nonce: 0, since_rekey: 0, rekeys: 0 }),
            recv: Mutex::new(ReceiveSide { nonce: 0, rekeys: 0, broken: false }),
            rekey_interval,
        })
    }
}

struct SendSide {
    nonce: u64,
    since_rekey: u64,
    rekeys: u64,
}

struct ReceiveSide {
    nonce: u64,
    rekeys: u64,
    broken: bool,
}

/// The record layer of one 2.0 link: seal and open whole messages.
///
/// Sealing and opening may run at the same time on two threads (a large frame
/// is opened off the event loop while the loop seals): each direction has its
/// own lock and counter, and only a rekey takes the Noise state exclusively.
/// Seals are numbered in call order, so the caller must write frames in the
/// order it sealed them.
pub struct Link {
    state: RwLock<StatelessTransportState>,
    send: Mutex<SendSide>,
    recv: Mutex<ReceiveSide>,
    rekey_interval: u64,
}

/// Frame length for a message of `len` bytes.
pub fn sealed_len(len: usize) -> usize {
    let records = len.div_ceil(RECORD_DATA_MAX).max(1);
    len + records * (TAG_LEN + 1)
}

fn poisoned<T>(_: T) -> CoreError {
    CoreError::RecordInvalid("the link's lock is poisoned".into())
}

thread_local! {
    /// One record's plaintext, reused by every seal and open on this thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's record buffer ([`RECORD_MAX`] bytes).
fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < RECORD_MAX {
            buf.resize(RECORD_MAX, 0);
        }
        f(&mut buf[..])
    })
}

/// Length of the message inside a frame of `frame_len` bytes; an error when
/// no frame of records has that length.
pub fn opened_len(frame_len: usize) -> Result<usize, CoreError> {
    if frame_len < RECORD_MIN {
        return Err(CoreError::Truncated("record shorter than its flags byte and tag"));
    }
    let records = frame_len.div_ceil(RECORD_MAX);
    if frame_len - (records - 1) * RECORD_MAX < RECORD_MIN {
        return Err(CoreError::Truncated("last record shorter than its flags byte and tag"));
    }
    Ok(frame_len - records * (TAG_LEN + 1))
}

impl Link {
    /// Seal one message (its JSON) into one frame of records.
    pub fn seal(&self, message: &[u8]) -> Result<Vec<u8>, CoreError> {
        let mut frame = vec![0u8; sealed_len(message.len())];
        self.seal_into(message, &mut frame)?;
        Ok(frame)
    }

    /// Seal one message into `out`, which must be [`sealed_len`] bytes long.
    pub fn seal_into(&self, message: &[u8], out: &mut [u8]) -> Result<(), CoreError> {
        if out.len() != sealed_len(message.len()) {
            return Err(CoreError::InvalidInput("seal_into: the output is not sealed_len(message) bytes"));
        }
        let mut send = self.send.lock().map_err(poisoned)?;
        let rekey = self.rekey_interval != 0 && send.since_rekey + 1 >= self.rekey_interval;
        let final_flags = FLAG_FINAL | if rekey { FLAG_REKEY } else { 0 };
        let mut nonce = send.nonce;
        {
            let state = self.state.read().map_err(poisoned)?;
            with_scratch(|plain| -> Result<(), CoreError> {
                let mut at = 0;
                let mut offset = 0;
                loop {
                    let take = (message.len() - offset).min(RECORD_DATA_MAX);
                    let last = offset + take == message.len();
                    plain[0] = if last { final_flags } else { 0 };
                    plain[1..=take].copy_from_slice(&message[offset..offset + take]);
                    at += state
                        .write_message(nonce, &plain[..=take], &mut out[at..])
                        .map_err(|e| CoreError::RecordInvalid(format!("cannot seal a record: {e}")))?;
                    nonce += 1;
                    offset += take;
                    if last {
                        return Ok(());
                    }
                }
            })?;
        }
        send.nonce = nonce;
        send.since_rekey += 1;
        if rekey {
            self.state.write().map_err(poisoned)?.rekey_outgoing();
            send.since_rekey = 0;
            send.rekeys += 1;
        }
        Ok(())
    }

    /// Open one frame; the message's JSON. After any error the link is broken
    /// (its receiving counter no longer follows the sender's) and every later
    /// frame is refused: close it.
    pub fn open(&self, frame: &[u8]) -> Result<Vec<u8>, CoreError> {
        let mut message = vec![0u8; opened_len(frame.len()).inspect_err(|_| self.mark_broken())?];
        self.open_into(frame, &mut message)?;
        Ok(message)
    }

    /// Refuse every later frame (after a frame no link could open).
    pub fn mark_broken(&self) {
        if let Ok(mut recv) = self.recv.lock() {
            recv.broken = true;
        }
    }

    /// Open one frame into `out`, which must be [`opened_len`] bytes long.
    /// Breaks the link on any error, like [`Link::open`].
    pub fn open_into(&self, frame: &[u8], out: &mut [u8]) -> Result<(), CoreError> {
        let mut recv = self.recv.lock().map_err(poisoned)?;
        if recv.broken {
            return Err(CoreError::RecordInvalid("the link is broken by an earlier bad frame".into()));
        }
        let result = self.open_records(&mut recv, frame, out);
        if result.is_err() {
            recv.broken = true;
        }
        result
    }

    fn open_records(&self, recv: &mut ReceiveSide, frame: &[u8], out: &mut [u8]) -> Result<(), CoreError> {
        if opened_len(frame.len())? != out.len() {
            return Err(CoreError::InvalidInput("open_into: the output is not opened_len(frame) bytes"));
        }
        let records = frame.len().div_ceil(RECORD_MAX);
        let rekey = {
            let state = self.state.read().map_err(poisoned)?;
            with_scratch(|plain| -> Result<bool, CoreError> {
                let mut at = 0;
                let mut rekey = false;
                for (i, record) in frame.chunks(RECORD_MAX).enumerate() {
                    let n = state
                        .read_message(recv.nonce, record, plain)
                        .map_err(|_| CoreError::AuthenticationFailed)?;
                    recv.nonce += 1;
                    let flags = plain[0];
                    let last = i + 1 == records;
                    let allowed = if last { FLAG_FINAL | FLAG_REKEY } else { 0 };
                    if flags & !allowed != 0 || (last && flags & FLAG_FINAL == 0) {
                        return Err(CoreError::RecordInvalid(format!("record {i} has flags 0x{flags:02x}")));
                    }
                    out[at..at + n - 1].copy_from_slice(&plain[1..n]);
                    at += n - 1;
                    rekey = last && flags & FLAG_REKEY != 0;
                }
                Ok(rekey)
            })?
        };
        if rekey {
            self.state.write().map_err(poisoned)?.rekey_incoming();
            recv.rekeys += 1;
        }
        Ok(())
    }

    /// Times this side rekeyed its sending key, and its receiving key.
    pub fn rekeys(&self) -> (u64, u64) {
        let sent = self.send.lock().map(|s| s.rekeys).unwrap_or(0);
        let received = self.recv.lock().map(|r| r.rekeys).unwrap_or(0);
        (sent, received)
    }

    /// True after a frame failed to open.
    pub fn is_broken(&self) -> bool {
        self.recv.lock().map(|r| r.broken).unwrap_or(true)
    }

    /// The rekey interval this side seals with (messages; 0: never).
    pub fn rekey_interval(&self) -> u64 {
        self.rekey_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;

    struct Pair {
        dialler: Link,
        acceptor: Link,
    }

    fn keypair() -> ([u8; 32], [u8; 32]) {
        let (private, public) = keys::generate_keypair().expect("keys");
        (*private, public)
    }

    fn handshake(hello: &[u8], ack_seen_by_dialler: &[u8], rekey: u64) -> Result<Pair, CoreError> {
        let (a_priv, a_pub) = keypair();
        let (d_priv, d_pub) = keypair();
        let mut acceptor = Handshake::acceptor(&a_priv, &d_pub, &prologue(hello, b"ack"))?;
        let mut dialler = Handshake::dialler(&d_priv, &prologue(hello, ack_seen_by_dialler))?;
        let m1 = acceptor.write_message()?;
        dialler.read_message(&m1)?;
        assert_eq!(dialler.remote_static(), Some(a_pub));
        let m2 = dialler.write_message()?;
        acceptor.read_message(&m2)?;
        assert!(acceptor.is_finished() && dialler.is_finished());
        assert_eq!(acceptor.handshake_hash(), dialler.handshake_hash());
        Ok(Pair { dialler: dialler.into_link(rekey)?, acceptor: acceptor.into_link(rekey)? })
    }

    #[test]
    fn both_sides_finish_in_two_messages_and_talk_both_ways() {
        let p = handshake(b"hello", b"ack", 0).expect("handshake");
        let f = p.dialler.seal(b"{\"a\":1}").expect("seal");
        assert_eq!(f.len(), 7 + 17);
        assert_eq!(p.acceptor.open(&f).expect("open"), b"{\"a\":1}");
        let g = p.acceptor.seal(b"pong").expect("seal");
        assert_eq!(p.dialler.open(&g).expect("open"), b"pong");
    }

    #[test]
    fn a_changed_ack_in_the_prologue_fails_message_one() {
        let err = handshake(b"hello", b"ack with the offer stripped", 0).err().expect("must fail");
        assert!(matches!(err, CoreError::NoiseHandshake(_)), "{err}");
    }

    #[test]
    fn a_wrong_dialler_key_cannot_read_message_one() {
        let (a_priv, _) = keypair();
        let (_, d_pub) = keypair();
        let (other_priv, _) = keypair();
        let pro = prologue(b"h", b"a");
        let mut acceptor = Handshake::acceptor(&a_priv, &d_pub, &pro).expect("start");
        let mut impostor = Handshake::dialler(&other_priv, &pro).expect("start");
        let m1 = acceptor.write_message().expect("m1");
        assert!(impostor.read_message(&m1).is_err());
    }

    #[test]
    fn messages_above_one_record_split_and_join_at_every_boundary() {
        let p = handshake(b"h", b"ack", 0).expect("handshake");
        for len in [0, 1, RECORD_DATA_MAX - 1, RECORD_DATA_MAX, RECORD_DATA_MAX + 1, 2 * RECORD_DATA_MAX, 1 << 20] {
            let msg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let f = p.dialler.seal(&msg).expect("seal");
            assert_eq!(f.len(), sealed_len(len), "len {len}");
            for (i, r) in f.chunks(RECORD_MAX).enumerate() {
                if i + 1 < f.len().div_ceil(RECORD_MAX) {
                    assert_eq!(r.len(), RECORD_MAX);
                }
            }
            assert_eq!(p.acceptor.open(&f).expect("open"), msg, "len {len}");
        }
    }

    #[test]
    fn replayed_dropped_or_altered_frames_fail() {
        let p = handshake(b"h", b"ack", 0).expect("handshake");
        let f1 = p.dialler.seal(b"one").expect("seal");
        let f2 = p.dialler.seal(b"two").expect("seal");
        assert_eq!(p.acceptor.open(&f1).expect("open"), b"one");
        assert!(p.acceptor.open(&f1).is_err(), "a replay must fail");
        assert!(p.acceptor.is_broken());
        assert!(p.acceptor.open(&f2).is_err(), "a broken link opens nothing more");
        // skipping a frame, or altering one, fails too
        let q = handshake(b"h", b"ack", 0).expect("handshake");
        let _g1 = q.dialler.seal(b"one").expect("seal");
        let g2 = q.dialler.seal(b"two").expect("seal");
        assert!(q.acceptor.open(&g2).is_err(), "skipping a frame must fail");
        let r = handshake(b"h", b"ack", 0).expect("handshake");
        let mut bad = r.dialler.seal(b"one").expect("seal");
        bad[3] ^= 1;
        assert!(r.acceptor.open(&bad).is_err(), "an altered frame must fail");
    }

    #[test]
    fn a_truncated_multi_record_frame_fails() {
        let p = handshake(b"h", b"ack", 0).expect("handshake");
        let msg = vec![b'x'; RECORD_DATA_MAX * 2 + 10];
        let f = p.dialler.seal(&msg).expect("seal");
        // the first two full records alone: they open, but the second is not final
        let err = p.acceptor.open(&f[..2 * RECORD_MAX]).err().expect("must fail");
        assert!(matches!(err, CoreError::RecordInvalid(_)), "{err}");
    }

    #[test]
    fn rekey_is_signalled_and_followed() {
        let p = handshake(b"h", b"ack", 3).expect("handshake");
        for i in 0..10u8 {
            let f = p.dialler.seal(&[i]).expect("seal");
            assert_eq!(p.acceptor.open(&f).expect("open"), [i]);
            let g = p.acceptor.seal(&[i, i]).expect("seal");
            assert_eq!(p.dialler.open(&g).expect("open"), [i, i]);
        }
        assert_eq!(p.dialler.rekeys(), (3, 3));
        assert_eq!(p.acceptor.rekeys(), (3, 3));
    }

    #[test]
    fn short_frames_are_refused_not_panicking() {
        let p = handshake(b"h", b"ack", 0).expect("handshake");
        for len in [0, 1, 16] {
            assert!(p.acceptor.open(&vec![0u8; len]).is_err());
        }
        // a frame whose last record would be under 17 bytes
        assert!(p.acceptor.open(&vec![0u8; RECORD_MAX + 5]).is_err());
    }
}
