//! The SMSG v1 container as the transport uses it (PROTOCOL.md §4).
//!
//! ```text
//! "SMSG" | 0x02 | u32be N | header JSON (N bytes) | nonce (24) | XChaCha20-Poly1305(obfuscated envelope) | tag (16)
//! envelope   = {"body":"<transport Message JSON as a JSON string>","timestamp":<unix seconds>}
//! obfuscated = envelope XOR (SHA-256(nonce ‖ u64be 0) ‖ SHA-256(nonce ‖ u64be 1) ‖ …)
//! ```
//!
//! `seal` writes the envelope straight into the output frame, XORs the
//! keystream over it and encrypts in place: one allocation per frame. `open`
//! checks the container without allocating anything the frame did not pay for,
//! then decrypts, strips the keystream and unescapes the body.

use std::borrow::Cow;

use crate::aead::XChaCha20Poly1305;
use serde::Deserialize;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::CoreError;

pub const MAGIC: &[u8; 4] = b"SMSG";
pub const CONTAINER_VERSION: u8 = 0x02;
/// The header the reference always writes (keys in alphabetical order, 48 bytes).
pub const HEADER: &[u8] = br#"{"algorithm":"chacha20poly1305","version":"1.0"}"#;
/// Largest header length a frame may declare (the reference's MaxHeaderSize).
pub const MAX_HEADER_LEN: u32 = 16 << 20;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
const PREFIX_LEN: usize = 4 + 1 + 4;

/// Large inputs: above this many bytes the Python bindings release the GIL.
pub const LARGE_FRAME: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Keystream

/// SHA-256 initial hash value (FIPS 180-4 §5.3.3). The compression function
/// itself comes from the `sha2` crate.
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The one padded SHA-256 block behind keystream block `i`:
/// nonce (24) ‖ u64be i ‖ 0x80 ‖ zeros ‖ u64be 256 (the message length in bits).
///
/// nonce ‖ counter is exactly 32 bytes, so every keystream block is the hash of
/// this one block: one call of the compression function, with the padding laid
/// out once instead of going through the streaming hasher.
#[repr(C, align(16))]
struct KeystreamBlock {
    block: [u8; 64],
    /// Bytes 16..24 of the nonce, as they sit in memory.
    nonce_tail: u64,
}

impl KeystreamBlock {
    fn new(nonce: &[u8; NONCE_LEN]) -> KeystreamBlock {
        let mut block = [0u8; 64];
        block[..NONCE_LEN].copy_from_slice(nonce);
        block[32] = 0x80; // padding bit
        block[62] = 0x01; // message length: 256 bits, big-endian in the last 8 bytes
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&nonce[16..24]);
        KeystreamBlock { block, nonce_tail: u64::from_ne_bytes(tail) }
    }

    /// SHA-256(nonce ‖ u64be counter) as the eight big-endian state words.
    #[inline(always)]
    fn hash(&mut self, counter: u64) -> [u32; 8] {
        self.set_counter(counter);
        let mut state = SHA256_IV;
        sha2::compress256(&mut state, std::slice::from_ref(GenericArray::from_slice(&self.block)));
        state
    }

    /// Write the counter into bytes 24..32.
    ///
    /// On x86-64 bytes 16..32 are written with one 16-byte store: the
    /// compression function reads that half of the block with one 16-byte
    /// load, and a load the CPU cannot forward from a single earlier store
    /// (an 8-byte counter store would be one) has to wait until that store
    /// has retired, i.e. until the previous block's compression has finished.
    /// That stall serialises consecutive blocks; with the wide store the SHA
    /// rounds of neighbouring blocks overlap (about 1.7x faster keystream).
    #[inline(always)]
    fn set_counter(&mut self, counter: u64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of the x86-64 baseline; the store writes bytes
        // 16..32 of `self.block`, which is 64 bytes long.
        unsafe {
            use std::arch::x86_64::{__m128i, _mm_set_epi64x, _mm_storeu_si128};
            let half = _mm_set_epi64x(u64::from_ne_bytes(counter.to_be_bytes()) as i64, self.nonce_tail as i64);
            _mm_storeu_si128(self.block.as_mut_ptr().add(16).cast::<__m128i>(), half);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self.nonce_tail;
            self.block[24..32].copy_from_slice(&counter.to_be_bytes());
        }
    }
}

/// XOR one keystream block (the state words of one hash) into up to 32 bytes.
#[inline(always)]
fn xor_block(chunk: &mut [u8], ks: &[u32; 8]) {
    if let Ok(full) = <&mut [u8; 32]>::try_from(&mut *chunk) {
        for (d, k) in full.chunks_exact_mut(4).zip(ks.iter()) {
            let v = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) ^ k;
            d.copy_from_slice(&v.to_be_bytes());
        }
    } else {
        for (i, d) in chunk.iter_mut().enumerate() {
            *d ^= ks[i / 4].to_be_bytes()[i % 4];
        }
    }
}

/// XOR `data` with SHA-256(nonce ‖ u64be(0)) ‖ SHA-256(nonce ‖ u64be(1)) ‖ …
pub fn xor_keystream(nonce: &[u8; NONCE_LEN], data: &mut [u8]) {
    // Two blocks per round, each hashed from its own buffer.
    let mut even = KeystreamBlock::new(nonce);
    let mut odd = KeystreamBlock::new(nonce);
    let mut counter = 0u64;
    let mut pairs = data.chunks_exact_mut(64);
    for pair in &mut pairs {
        let ka = even.hash(counter);
        let kb = odd.hash(counter + 1);
        let (x, y) = pair.split_at_mut(32);
        xor_block(x, &ka);
        xor_block(y, &kb);
        counter += 2;
    }
    for chunk in pairs.into_remainder().chunks_mut(32) {
        let ks = even.hash(counter);
        xor_block(chunk, &ks);
        counter += 1;
    }
}

/// The first `len` bytes of the keystream for `nonce` (for tests and vectors).
pub fn keystream(nonce: &[u8; NONCE_LEN], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    xor_keystream(nonce, &mut out);
    out
}

// ---------------------------------------------------------------------------
// Byte scanning, 16 bytes at a time (SSE2 on x86-64, a table elsewhere)

/// 0 = copy as is; 1 = needs the escape routine (Go's encoding/json with HTML escaping).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = 1;
        i += 1;
    }
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 1;
    t[b'<' as usize] = 1;
    t[b'>' as usize] = 1;
    t[b'&' as usize] = 1;
    t[0xE2] = 1; // first byte of U+2028 / U+2029
    t
};

/// 0 = ordinary byte inside a JSON string; 1 = `"`, `\` or a control character.
#[cfg(not(target_arch = "x86_64"))]
static STRING_STOP: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = 1;
        i += 1;
    }
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 1;
    t
};

/// Copy the 16 bytes at `src` to `dst` and return a bit mask of the ones
/// `ESCAPE` flags (bit i = byte i).
///
/// # Safety
/// `src` must be readable and `dst` writable for 16 bytes.
#[inline(always)]
unsafe fn copy16_escape_mask(src: *const u8, dst: *mut u8) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let v = _mm_loadu_si128(src.cast::<__m128i>());
        _mm_storeu_si128(dst.cast::<__m128i>(), v);
        let ctrl = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1F)), _mm_set1_epi8(0x1F));
        // '<' 0x3C | 2 == '>' 0x3E | 2 == 0x3E; '"' 0x22 | 4 == '&' 0x26 | 4 == 0x26
        let angle = _mm_cmpeq_epi8(_mm_or_si128(v, _mm_set1_epi8(0x02)), _mm_set1_epi8(0x3E));
        let quote_amp = _mm_cmpeq_epi8(_mm_or_si128(v, _mm_set1_epi8(0x04)), _mm_set1_epi8(0x26));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        let e2 = _mm_cmpeq_epi8(v, _mm_set1_epi8(0xE2u8 as i8));
        let any = _mm_or_si128(_mm_or_si128(ctrl, angle), _mm_or_si128(_mm_or_si128(quote_amp, backslash), e2));
        _mm_movemask_epi8(any) as u32
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::ptr::copy_nonoverlapping(src, dst, 16);
        let mut mask = 0u32;
        for i in 0..16 {
            mask |= (ESCAPE[*src.add(i) as usize] as u32) << i;
        }
        mask
    }
}

/// Copy the 16 bytes at `src` to `dst` and return a bit mask of the ones
/// `STRING_STOP` flags (bit i = byte i).
///
/// # Safety
/// `src` must be readable and `dst` writable for 16 bytes.
#[inline(always)]
unsafe fn copy16_string_stop_mask(src: *const u8, dst: *mut u8) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let v = _mm_loadu_si128(src.cast::<__m128i>());
        _mm_storeu_si128(dst.cast::<__m128i>(), v);
        let ctrl = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1F)), _mm_set1_epi8(0x1F));
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(ctrl, _mm_or_si128(quote, backslash))) as u32
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::ptr::copy_nonoverlapping(src, dst, 16);
        let mut mask = 0u32;
        for i in 0..16 {
            mask |= (STRING_STOP[*src.add(i) as usize] as u32) << i;
        }
        mask
    }
}

// ---------------------------------------------------------------------------
// Envelope escaping (Go's encoding/json with HTML escaping)

/// How each byte is written inside the envelope string: bytes 0..6 the text
/// (padded), byte 7 its length. 0xE2 is listed as itself; the caller checks
/// whether it starts U+2028 / U+2029.
static ESCAPE_SEQ: [[u8; 8]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 8]; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b'"' => [b'\\', b'"', 0, 0, 0, 0, 0, 2],
            b'\\' => [b'\\', b'\\', 0, 0, 0, 0, 0, 2],
            b'\n' => [b'\\', b'n', 0, 0, 0, 0, 0, 2],
            b'\r' => [b'\\', b'r', 0, 0, 0, 0, 0, 2],
            b'\t' => [b'\\', b't', 0, 0, 0, 0, 0, 2],
            0x00..=0x1F | b'<' | b'>' | b'&' => {
                [b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize], 0, 6]
            }
            _ => [b, 0, 0, 0, 0, 0, 0, 1],
        };
        i += 1;
    }
    t
};

/// Write the escaped form of `s[i]` (a byte `ESCAPE` flags) at `dst` and
/// return (bytes written, bytes of `s` used).
///
/// # Safety
/// `i < s.len()` and `dst` writable for 8 bytes.
#[inline(always)]
unsafe fn write_escape(s: &[u8], i: usize, dst: *mut u8) -> (usize, usize) {
    let b = *s.get_unchecked(i);
    if b == 0xE2 && i + 2 < s.len() && *s.get_unchecked(i + 1) == 0x80 && (*s.get_unchecked(i + 2) | 1) == 0xA9 {
        let seq: &[u8; 8] = if *s.get_unchecked(i + 2) == 0xA8 { b"\\u2028\0\0" } else { b"\\u2029\0\0" };
        std::ptr::copy_nonoverlapping(seq.as_ptr(), dst, 8);
        return (6, 3);
    }
    let seq = &ESCAPE_SEQ[b as usize];
    std::ptr::copy_nonoverlapping(seq.as_ptr(), dst, 8);
    (seq[7] as usize, 1)
}

/// Append `s` to `out` as the inside of a JSON string, escaped the way the
/// reference's inner `json.Marshal` does it.
///
/// 16 bytes at a time: each chunk is copied whole to the output and the bytes
/// that need a look are found with one mask; the output position then only
/// advances over the clean prefix. Several escapes in one chunk reuse the mask.
pub fn escape_go_json_into(out: &mut Vec<u8>, s: &[u8]) {
    /// Most bytes one round of the outer loop writes: at most 18 input bytes
    /// (a U+2028 sequence may run past the chunk) at most 6 output bytes each,
    /// plus the 16-byte and 8-byte over-writes.
    const STEP: usize = 128;
    let n = s.len();
    out.reserve(n + STEP);
    let src = s.as_ptr();
    let mut len = out.len();
    let mut cap = out.capacity();
    let mut dst = out.as_mut_ptr();
    let mut i = 0;
    loop {
        if cap - len < STEP {
            // SAFETY: the first `len` bytes have been written.
            unsafe { out.set_len(len) };
            out.reserve((n - i) + (n - i) / 4 + STEP);
            cap = out.capacity();
            dst = out.as_mut_ptr();
        }
        if i + 16 <= n {
            // SAFETY: 16 bytes readable at src+i; cap - len >= STEP.
            let mut mask = unsafe { copy16_escape_mask(src.add(i), dst.add(len)) };
            if mask == 0 {
                i += 16;
                len += 16;
                continue;
            }
            let base = i;
            loop {
                // bytes i..next are clean and already copied to dst+len
                let next = base + mask.trailing_zeros() as usize;
                len += next - i;
                // SAFETY: next < base + 16 <= n; output room per the STEP bound.
                let (written, used) = unsafe { write_escape(s, next, dst.add(len)) };
                len += written;
                i = next + used;
                let done = i - base;
                if done >= 16 {
                    break;
                }
                mask &= u32::MAX << done;
                if mask == 0 || i + 16 > n {
                    break; // the outer loop takes it from i
                }
                // SAFETY: 16 bytes readable at src+i (checked); output room per STEP.
                unsafe { std::ptr::copy_nonoverlapping(src.add(i), dst.add(len), 16) };
            }
        } else {
            if i == n {
                break;
            }
            let b = s[i];
            if ESCAPE[b as usize] == 0 {
                // SAFETY: cap - len >= STEP.
                unsafe { *dst.add(len) = b };
                i += 1;
                len += 1;
            } else {
                // SAFETY: i < n; cap - len >= STEP.
                let (written, used) = unsafe { write_escape(s, i, dst.add(len)) };
                len += written;
                i += used;
            }
        }
    }
    // SAFETY: the first `len` bytes have been written.
    unsafe { out.set_len(len) };
}

/// The envelope bytes for a message (for tests and vectors).
pub fn envelope(message_json: &[u8], timestamp: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(message_json.len() + message_json.len() / 8 + 48);
    write_envelope(&mut out, message_json, timestamp);
    out
}

/// Decimal text of an i64 without going through `fmt`.
fn push_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    let mut u = v.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[pos..]);
}

fn write_envelope(out: &mut Vec<u8>, message_json: &[u8], timestamp: i64) {
    out.extend_from_slice(ENVELOPE_HEAD);
    escape_go_json_into(out, message_json);
    out.extend_from_slice(ENVELOPE_MID);
    push_i64(out, timestamp);
    out.push(b'}');
}

const ENVELOPE_HEAD: &[u8] = b"{\"body\":\"";
const ENVELOPE_MID: &[u8] = b"\",\"timestamp\":";

// ---------------------------------------------------------------------------
// Envelope parsing: a fast path for the shape the reference writes

/// Four hex digits as a number (either case), or None.
#[inline]
fn hex4(h: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in h.get(..4)? {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u32;
    }
    Some(v)
}

/// Unescape the JSON escape at `plain[*r]` (a backslash) into `dst + *w` and
/// step past it; None for anything serde_json would refuse (unknown escape,
/// bad hex, lone surrogate, end of input).
///
/// # Safety
/// `dst` must be writable up to `plain.len()` bytes and `*w <= *r`: an escape
/// never yields more bytes than it takes, so the write stays below `*r`.
#[inline(always)]
unsafe fn unescape_one(plain: &[u8], r: &mut usize, dst: *mut u8, w: &mut usize) -> Option<()> {
    let c = match *plain.get(*r + 1)? {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'b' => 0x08,
        b'f' => 0x0C,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'u' => {
            let mut cp = hex4(plain.get(*r + 2..)?)?;
            let mut used = 6;
            if (0xDC00..=0xDFFF).contains(&cp) {
                return None; // lone trailing surrogate
            }
            if (0xD800..=0xDBFF).contains(&cp) {
                if plain.get(*r + 6..*r + 8)? != b"\\u" {
                    return None; // lone leading surrogate
                }
                let lo = hex4(plain.get(*r + 8..)?)?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return None;
                }
                used = 12;
                cp = 0x10000 + (((cp - 0xD800) << 10) | (lo - 0xDC00));
            }
            let ch = char::from_u32(cp)?;
            let mut buf = [0u8; 4];
            let enc = ch.encode_utf8(&mut buf).as_bytes();
            std::ptr::copy_nonoverlapping(enc.as_ptr(), dst.add(*w), enc.len());
            *w += enc.len();
            *r += used;
            return Some(());
        }
        _ => return None, // invalid escape
    };
    *dst.add(*w) = c;
    *w += 1;
    *r += 2;
    Some(())
}

/// The body of an envelope of exactly the shape the reference writes,
/// `{"body":"…","timestamp":<integer>}` with nothing around it, unescaped.
///
/// None means "not sure": any other shape (whitespace, other key order, extra
/// keys, a non-integer timestamp) and anything a JSON parser would refuse
/// (control characters, bad escapes, lone surrogates, invalid UTF-8, an
/// unterminated string). The caller then runs serde_json, which decides and
/// words the error exactly as before. Whatever this returns as Some is what
/// serde_json returns for the same bytes.
pub(crate) fn fast_envelope_body(plain: &[u8]) -> Option<Vec<u8>> {
    if !plain.starts_with(ENVELOPE_HEAD) {
        return None;
    }
    let n = plain.len();
    // Unescaping never makes the text longer; +16 for the whole-chunk copies.
    let mut out: Vec<u8> = Vec::with_capacity(n + 16);
    let src = plain.as_ptr();
    let dst = out.as_mut_ptr();
    let mut r = ENVELOPE_HEAD.len();
    let mut w = 0usize;
    // Invariant: w + ENVELOPE_HEAD.len() <= r, so w + 16 <= n + 16 whenever r + 16 <= n.
    'string: loop {
        if r + 16 <= n {
            // SAFETY: 16 bytes readable at src+r, writable at dst+w (see invariant).
            let mut mask = unsafe { copy16_string_stop_mask(src.add(r), dst.add(w)) };
            if mask == 0 {
                r += 16;
                w += 16;
                continue;
            }
            let base = r;
            loop {
                // bytes r..next are plain and already copied to dst+w
                let next = base + mask.trailing_zeros() as usize;
                w += next - r;
                r = next;
                match plain[r] {
                    b'"' => break 'string,
                    // SAFETY: plain[r] is a backslash; the invariant holds.
                    b'\\' => unsafe { unescape_one(plain, &mut r, dst, &mut w)? },
                    _ => return None, // control character
                }
                let done = r - base;
                if done >= 16 {
                    break;
                }
                mask &= u32::MAX << done;
                if mask == 0 || r + 16 > n {
                    break; // the outer loop takes it from r
                }
                // SAFETY: 16 bytes readable at src+r (checked), writable at dst+w (invariant).
                unsafe { std::ptr::copy_nonoverlapping(src.add(r), dst.add(w), 16) };
            }
        } else {
            let b = *plain.get(r)?; // end of input inside the string: let serde say so
            match b {
                b'"' => break,
                // SAFETY: plain[r] is a backslash; the invariant holds.
                b'\\' => unsafe { unescape_one(plain, &mut r, dst, &mut w)? },
                0x00..=0x1F => return None, // control character
                _ => {
                    // SAFETY: w < r <= n < capacity.
                    unsafe { *dst.add(w) = b };
                    r += 1;
                    w += 1;
                }
            }
        }
    }
    // plain[r] is the closing quote; then `,"timestamp":<integer>}` and the end.
    let rest = plain[r..].strip_prefix(ENVELOPE_MID)?;
    let (last, number) = rest.split_last()?;
    if *last != b'}' {
        return None;
    }
    let digits = number.strip_prefix(b"-").unwrap_or(number);
    match digits {
        [b'0'] => {}
        [b'1'..=b'9', tail @ ..] if tail.iter().all(u8::is_ascii_digit) => {}
        _ => return None,
    }
    // SAFETY: the first `w` bytes have been written.
    unsafe { out.set_len(w) };
    std::str::from_utf8(&out).ok()?;
    Some(out)
}

// ---------------------------------------------------------------------------
// The transport Message, as much of it as the core needs

/// The string fields of a transport Message, borrowed from its JSON where
/// possible; `payload` and unknown keys are skipped without being built.
#[derive(Debug, Default, Deserialize)]
pub struct MessageHead<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "type")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub from: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub to: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub ts: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "replyTo")]
    pub reply_to: Option<Cow<'a, str>>,
}

fn starts_with_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

/// Parse the head of a transport Message; the JSON must be one object.
pub fn parse_message_head(body: &[u8]) -> Result<MessageHead<'_>, CoreError> {
    if let Some(head) = fast_message_head(body) {
        return Ok(head);
    }
    parse_message_head_serde(body)
}

/// The general Message parser, and the one that words every error.
pub(crate) fn parse_message_head_serde(body: &[u8]) -> Result<MessageHead<'_>, CoreError> {
    if !starts_with_object(body) {
        return Err(CoreError::MessageInvalid("not a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| CoreError::MessageInvalid(e.to_string()))
}

/// Bit mask of the `"`, `\` and control bytes among the 16 bytes at `src`.
///
/// # Safety
/// `src` must be readable for 16 bytes.
#[inline(always)]
unsafe fn string_stop_mask(src: *const u8) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let v = _mm_loadu_si128(src.cast::<__m128i>());
        let ctrl = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1F)), _mm_set1_epi8(0x1F));
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(ctrl, _mm_or_si128(quote, backslash))) as u32
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut mask = 0u32;
        for i in 0..16 {
            mask |= (STRING_STOP[*src.add(i) as usize] as u32) << i;
        }
        mask
    }
}

/// Deepest nesting the fast Message parser follows before it leaves the
/// decision to serde_json.
const FAST_JSON_DEPTH: u32 = 64;

/// A JSON checker over bytes that answers None ("not sure") for anything it
/// does not accept, never for less than serde_json accepts in the same place.
struct JsonScan<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> JsonScan<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// Move to the next `"`, `\` or control byte at or after `i`.
    #[inline(always)]
    fn skip_to_string_stop(&mut self) -> Option<u8> {
        let n = self.s.len();
        while self.i + 16 <= n {
            // SAFETY: 16 bytes readable at i.
            let mask = unsafe { string_stop_mask(self.s.as_ptr().add(self.i)) };
            if mask != 0 {
                self.i += mask.trailing_zeros() as usize;
                return Some(self.s[self.i]);
            }
            self.i += 16;
        }
        loop {
            let b = self.peek()?;
            if b == b'"' || b == b'\\' || b < 0x20 {
                return Some(b);
            }
            self.i += 1;
        }
    }

    /// The rest of a string without escapes (the opening quote is consumed),
    /// as raw bytes; None on an escape, a control byte or the end of input.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        if self.skip_to_string_stop()? != b'"' {
            return None;
        }
        let text = &self.s[start..self.i];
        self.i += 1;
        Some(text)
    }

    /// Skip the rest of a string (the opening quote is consumed), checking
    /// escapes the way serde_json does for a value it ignores: the escape
    /// letters and four hex digits after `\u`, nothing about surrogates or UTF-8.
    fn skip_string(&mut self) -> Option<()> {
        loop {
            match self.skip_to_string_stop()? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => match self.s.get(self.i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    b'u' => {
                        hex4(self.s.get(self.i + 2..)?)?;
                        self.i += 6;
                    }
                    _ => return None,
                },
                _ => return None, // control character
            }
        }
    }

    /// Skip one number the way serde_json's `ignore_integer` reads it.
    fn skip_number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => {
                self.i += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        Some(())
    }

    #[inline(always)]
    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// Skip one value (whitespace before it already skipped).
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.skip_string()
            }
            b'-' | b'0'..=b'9' => self.skip_number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'[' => {
                if depth >= FAST_JSON_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.ws();
                        }
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                if depth >= FAST_JSON_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.eat(b'"')?;
                    self.skip_string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.ws();
                        }
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
}

/// The head of a Message, or None ("not sure") for anything serde_json might
/// see differently: escapes in the top-level keys or in the six fields,
/// repeated fields, unusual nesting depth, and everything invalid. Whatever
/// this returns as Some, serde_json returns for the same bytes.
pub(crate) fn fast_message_head(body: &[u8]) -> Option<MessageHead<'_>> {
    let mut p = JsonScan { s: body, i: 0 };
    let mut head = MessageHead::default();
    let mut seen = 0u8;
    p.ws();
    p.eat(b'{')?;
    p.ws();
    if p.peek()? == b'}' {
        p.i += 1;
    } else {
        loop {
            p.eat(b'"')?;
            let key = p.plain_string()?;
            p.ws();
            p.eat(b':')?;
            p.ws();
            let (bit, field) = match key {
                b"id" => (1, &mut head.id),
                b"type" => (2, &mut head.kind),
                b"from" => (4, &mut head.from),
                b"to" => (8, &mut head.to),
                b"ts" => (16, &mut head.ts),
                b"replyTo" => (32, &mut head.reply_to),
                _ => {
                    // serde_json checks the UTF-8 of every key it reads
                    std::str::from_utf8(key).ok()?;
                    p.skip_value(1)?;
                    (0, &mut None)
                }
            };
            if bit != 0 {
                if seen & bit != 0 {
                    return None; // duplicate field
                }
                seen |= bit;
                match p.peek()? {
                    b'"' => {
                        p.i += 1;
                        let text = std::str::from_utf8(p.plain_string()?).ok()?;
                        *field = Some(Cow::Borrowed(text));
                    }
                    b'n' => p.literal(b"null")?,
                    _ => return None,
                }
            }
            p.ws();
            match p.peek()? {
                b',' => {
                    p.i += 1;
                    p.ws();
                }
                b'}' => {
                    p.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    p.ws();
    if p.i != body.len() {
        return None;
    }
    Some(head)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    body: Option<Cow<'a, str>>,
}

/// The envelope's body: the fast path for the reference's shape, serde_json
/// for everything else.
pub(crate) fn body_of_envelope(plain: &[u8]) -> Result<Vec<u8>, CoreError> {
    match fast_envelope_body(plain) {
        Some(body) => Ok(body),
        None => body_of_envelope_serde(plain),
    }
}

/// The general envelope parser (any key order, whitespace, extra keys), and
/// the one that words every error.
pub(crate) fn body_of_envelope_serde(plain: &[u8]) -> Result<Vec<u8>, CoreError> {
    if !starts_with_object(plain) {
        return Err(CoreError::EnvelopeInvalid("not a JSON object".into()));
    }
    let env: Envelope<'_> =
        serde_json::from_slice(plain).map_err(|e| CoreError::EnvelopeInvalid(e.to_string()))?;
    match env.body {
        Some(body) => Ok(body.into_owned().into_bytes()),
        None => Err(CoreError::EnvelopeInvalid("no body".into())),
    }
}

// ---------------------------------------------------------------------------
// Container

/// What the container header says about the payload, once checked.
fn check_header(header: &[u8], payload: &[u8]) -> Result<(), CoreError> {
    if header == HEADER {
        return Ok(()); // what every reference node writes: nothing to look at
    }
    let value: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| CoreError::HeaderInvalid(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| CoreError::HeaderInvalid("not a JSON object".into()))?;
    let text = |key: &str| -> Option<&str> { obj.get(key).and_then(|v| v.as_str()) };
    if let Some(c) = obj.get("compression") {
        match c.as_str() {
            None if c.is_null() => {}
            Some("") | Some("none") => {}
            Some(other) => return Err(CoreError::UnsupportedCompression(other.to_string())),
            None => return Err(CoreError::UnsupportedCompression(c.to_string())),
        }
    }
    if let Some(f) = obj.get("format") {
        match f.as_str() {
            None if f.is_null() => {}
            Some("") | Some("v1") => {}
            Some(other) => return Err(CoreError::UnsupportedFormat(other.to_string())),
            None => return Err(CoreError::UnsupportedFormat(f.to_string())),
        }
    }
    if let Some(expected) = text("checksum").filter(|s| !s.is_empty()) {
        match text("checksum_algo").unwrap_or("sha256") {
            "sha256" | "" => {
                let actual = crate::keys::hex(&Sha256::digest(payload));
                if !actual.eq_ignore_ascii_case(expected) {
                    return Err(CoreError::HeaderInvalid("checksum mismatch".into()));
                }
            }
            other => {
                return Err(CoreError::HeaderInvalid(format!(
                    "unsupported checksum algorithm {other:?}"
                )))
            }
        }
    }
    Ok(())
}

/// Split a frame into (header, payload) after checking magic, version and the
/// declared header length. Nothing is allocated: a frame that declares a
/// header longer than what follows is refused before any buffer exists.
pub fn split_container(frame: &[u8]) -> Result<(&[u8], &[u8]), CoreError> {
    if frame.len() < 4 {
        return Err(CoreError::Truncated(if frame.is_empty() { "empty frame" } else { "inside the magic" }));
    }
    if &frame[..4] != MAGIC {
        return Err(CoreError::BadMagic);
    }
    if frame.len() < 5 {
        return Err(CoreError::Truncated("before the version byte"));
    }
    if frame[4] != CONTAINER_VERSION {
        return Err(CoreError::UnsupportedContainerVersion(frame[4]));
    }
    if frame.len() < PREFIX_LEN {
        return Err(CoreError::Truncated("inside the header length"));
    }
    let n = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
    if n > MAX_HEADER_LEN {
        return Err(CoreError::HeaderTooLarge(n));
    }
    let n = n as usize;
    if frame.len() - PREFIX_LEN < n {
        return Err(CoreError::Truncated("header longer than the frame"));
    }
    Ok((&frame[PREFIX_LEN..PREFIX_LEN + n], &frame[PREFIX_LEN + n..]))
}

/// Seals and opens frames for one pair of nodes. Holds the XChaCha20-Poly1305
/// key (SHA-256 of the base64 password), zeroed on drop.
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl Cipher {
    /// Derive the SMSG password (base64 of the shared secret) and key once.
    pub fn new(shared_secret: &[u8]) -> Result<Cipher, CoreError> {
        if shared_secret.len() != 32 {
            return Err(CoreError::KeyLength { what: "shared secret", got: shared_secret.len() });
        }
        let password = Zeroizing::new(password(shared_secret));
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&Sha256::digest(password.as_bytes()));
        Ok(Cipher { aead: XChaCha20Poly1305::new(&key) })
    }

    /// Seal one transport Message JSON into a frame.
    pub fn seal(&self, message_json: &[u8], nonce: &[u8; NONCE_LEN], timestamp: i64) -> Result<Vec<u8>, CoreError> {
        if std::str::from_utf8(message_json).is_err() {
            return Err(CoreError::InvalidInput("message JSON is not valid UTF-8"));
        }
        let start = PREFIX_LEN + HEADER.len() + NONCE_LEN;
        // Room for the escapes of a typical Message (every JSON key and string
        // value costs two escaped quotes) so that the frame is rarely regrown.
        let n = message_json.len();
        let slack = if n <= LARGE_FRAME { n / 2 } else { n / 8 };
        let mut frame = Vec::with_capacity(start + n + slack + 64 + TAG_LEN);
        frame.extend_from_slice(MAGIC);
        frame.push(CONTAINER_VERSION);
        frame.extend_from_slice(&(HEADER.len() as u32).to_be_bytes());
        frame.extend_from_slice(HEADER);
        frame.extend_from_slice(nonce);
        write_envelope(&mut frame, message_json, timestamp);
        xor_keystream(nonce, &mut frame[start..]);
        let tag = self
            .aead
            .seal_in_place(nonce, &mut frame[start..])
            .map_err(|_| CoreError::InvalidInput("message too large to seal"))?;
        frame.extend_from_slice(&tag);
        Ok(frame)
    }

    /// A frame around any plaintext, envelope or not (fuzz and tests only: it
    /// reaches the parsers behind the AEAD with bytes `seal` never writes).
    #[cfg(test)]
    pub(crate) fn seal_plaintext(&self, plain: &[u8], nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(PREFIX_LEN + HEADER.len() + NONCE_LEN + plain.len() + TAG_LEN);
        frame.extend_from_slice(MAGIC);
        frame.push(CONTAINER_VERSION);
        frame.extend_from_slice(&(HEADER.len() as u32).to_be_bytes());
        frame.extend_from_slice(HEADER);
        frame.extend_from_slice(nonce);
        let start = frame.len();
        frame.extend_from_slice(plain);
        xor_keystream(nonce, &mut frame[start..]);
        let tag = self.aead.seal_in_place(nonce, &mut frame[start..]).expect("fuzz plaintexts are small");
        frame.extend_from_slice(&tag);
        frame
    }

    /// Open a frame and return the envelope's body (the transport Message JSON).
    pub fn open_body(&self, frame: &[u8]) -> Result<Vec<u8>, CoreError> {
        let (header, payload) = split_container(frame)?;
        check_header(header, payload)?;
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(CoreError::AuthenticationFailed);
        }
        let (nonce, rest) = payload.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let (nonce, tag): (&[u8; NONCE_LEN], &[u8; TAG_LEN]) = match (nonce.try_into(), tag.try_into()) {
            (Ok(n), Ok(t)) => (n, t),
            _ => return Err(CoreError::AuthenticationFailed),
        };
        let mut plain = ciphertext.to_vec();
        self.aead.open_in_place(nonce, &mut plain, tag).map_err(|_| CoreError::AuthenticationFailed)?;
        xor_keystream(nonce, &mut plain);
        body_of_envelope(&plain)
    }

    /// Open a frame, check that the body is a transport Message, return the body.
    pub fn open(&self, frame: &[u8]) -> Result<Vec<u8>, CoreError> {
        let body = self.open_body(frame)?;
        parse_message_head(&body)?;
        Ok(body)
    }
}

/// SMSG password: standard base64 (with padding) of the shared secret.
pub fn password(shared_secret: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(shared_secret)
}

/// A fresh random nonce (see `nonce.rs`: OS randomness, pooled per thread, fork-safe).
pub use crate::nonce::random_nonce;

/// Current UNIX time in whole seconds (the envelope timestamp).
pub fn unix_seconds() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Vec<u8> {
        crate::keys::derive_shared_secret(
            &[0x42; 32],
            &crate::keys::public_key(&[7u8; 32]).unwrap(),
        )
        .unwrap()
        .to_vec()
    }

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let c = Cipher::new(&secret()).unwrap();
        let msg = br#"{"id":"x","type":"t","payload":{"a":"<&>\"\u2028"}}"#;
        let frame = c.seal(msg, &[9u8; 24], 1735689600).unwrap();
        assert_eq!(c.open(&frame).unwrap(), msg.to_vec());
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            // flipping a header byte may still parse (the header is not authenticated)
            // but never yields a different message
            if let Ok(body) = c.open(&bad) {
                assert_eq!(body, msg.to_vec());
            }
        }
    }

    #[test]
    fn container_checks_come_before_allocation() {
        let mut frame = Vec::from(&b"SMSG\x02"[..]);
        frame.extend_from_slice(&(16u32 << 20).to_be_bytes());
        frame.extend_from_slice(&[0u8; 48]);
        assert!(matches!(split_container(&frame), Err(CoreError::Truncated(_))));
        frame[5..9].copy_from_slice(&((16u32 << 20) + 1).to_be_bytes());
        assert!(matches!(split_container(&frame), Err(CoreError::HeaderTooLarge(_))));
        assert_eq!(split_container(b"SMSX\x02"), Err(CoreError::BadMagic));
        assert_eq!(split_container(b"SMSG\x01"), Err(CoreError::UnsupportedContainerVersion(1)));
    }

    #[test]
    fn go_escaping() {
        let mut out = Vec::new();
        escape_go_json_into(&mut out, "a\"\\\n\r\t\u{1}<>&\u{2028}\u{2029}é🚀".as_bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\\"\\\\\\n\\r\\t\\u0001\\u003c\\u003e\\u0026\\u2028\\u2029é🚀"
        );
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn vectors(file: &str) -> serde_json::Value {
        // the reference vectors are copied into tests/vectors (README there);
        // SMSGNET_VECTORS overrides the directory
        let dir = std::env::var_os("SMSGNET_VECTORS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors"));
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reference vectors {}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Every frame of smsg_frames.json is sealed byte for byte and opens back;
    /// `ping` and `unicode_html_emoji` must be among them.
    #[test]
    fn reference_frames() {
        let v = vectors("smsg_frames.json");
        let cases = v["cases"].as_array().unwrap();
        let mut seen = Vec::new();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let c = Cipher::new(&unhex(case["shared_secret_hex"].as_str().unwrap())).unwrap();
            let msg = unhex(case["message_json_hex"].as_str().unwrap());
            let nonce: [u8; NONCE_LEN] = unhex(case["nonce_hex"].as_str().unwrap()).try_into().unwrap();
            let ts = case["smsg_timestamp"].as_i64().unwrap();
            let expected = unhex(case["frame_hex"].as_str().unwrap());
            assert_eq!(envelope(&msg, ts), unhex(case["smsg_plaintext_hex"].as_str().unwrap()), "{name}");
            let frame = c.seal(&msg, &nonce, ts).unwrap();
            assert!(frame == expected, "{name}: sealed frame differs");
            assert_eq!(c.open(&frame).unwrap(), msg, "{name}");
            assert_eq!(c.open_body(&expected).unwrap(), msg, "{name}");
            seen.push(name.to_string());
        }
        assert!(seen.iter().any(|n| n == "ping"));
        assert!(seen.iter().any(|n| n == "unicode_html_emoji"));
    }

    #[test]
    fn reference_keystream() {
        let v = vectors("xor_keystream.json");
        for case in v["cases"].as_array().unwrap() {
            let nonce: [u8; NONCE_LEN] = unhex(case["nonce_hex"].as_str().unwrap()).try_into().unwrap();
            let expected = unhex(case["keystream_100_hex"].as_str().unwrap());
            assert_eq!(keystream(&nonce, 100), expected);
        }
        // every length against the streaming hasher
        let nonce = [0xA5u8; NONCE_LEN];
        let mut reference = Vec::new();
        for i in 0u64..40 {
            let mut h = Sha256::new();
            h.update(nonce);
            h.update(i.to_be_bytes());
            reference.extend_from_slice(&h.finalize());
        }
        for len in 0..reference.len() {
            assert_eq!(keystream(&nonce, len), reference[..len]);
        }
    }

    /// The byte-at-a-time escaper this module used before the 16-byte one.
    fn escape_reference(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            let b = s[i];
            if b == 0xE2 && i + 2 < s.len() && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9) {
                out.extend_from_slice(if s[i + 2] == 0xA8 { b"\\u2028" } else { b"\\u2029" });
                i += 3;
                continue;
            }
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0..=0x1F | b'<' | b'>' | b'&' => out.extend_from_slice(format!("\\u{:04x}", b).as_bytes()),
                _ => out.push(b),
            }
            i += 1;
        }
        out
    }

    /// A small xorshift generator: the tests need no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const FRAGMENTS: &[&[u8]] = &[
        b"a", b"xyz", b"0123456789abcdef", b"\"", b"\\", b"\n", b"\r", b"\t", b"\x01", b"\x1f", b"<", b">",
        b"&", b"/", b"\xE2\x80\xA8", b"\xE2\x80\xA9", b"\xE2\x80\xA6", b"\xE2\x80", b"\xE2", "é".as_bytes(),
        "世界".as_bytes(), "🚀".as_bytes(), b"\x7f", b" ", b"{\"k\":\"v\"}",
    ];

    #[test]
    fn escape_matches_reference() {
        let mut rng = Rng(0x9E3779B97F4A7C15);
        for round in 0..4000 {
            let mut s = Vec::new();
            let parts = rng.below(if round % 10 == 0 { 200 } else { 24 });
            for _ in 0..parts {
                s.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            }
            let mut out = b"prefix".to_vec();
            escape_go_json_into(&mut out, &s);
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(out[6..], escape_reference(&s)[..], "input {s:?}");
            // and every escaped text is a JSON string whose value is the input
            if std::str::from_utf8(&s).is_ok() {
                let mut env = envelope(&s, -round);
                assert_eq!(fast_envelope_body(&env).as_deref(), Some(&s[..]));
                assert_eq!(body_of_envelope_serde(&env).unwrap(), s);
                env.truncate(env.len() - 1);
                assert_eq!(body_of_envelope(&env), body_of_envelope_serde(&env));
            }
        }
        // a U+2028 split over the end of the input or a 16-byte chunk
        for pad in 0..40 {
            let mut s = vec![b'x'; pad];
            s.extend_from_slice("\u{2028}\u{2029}\u{2026}".as_bytes());
            s.truncate(s.len() - 1);
            let mut out = Vec::new();
            escape_go_json_into(&mut out, &s);
            assert_eq!(out, escape_reference(&s));
        }
    }

    /// The fast envelope parser never disagrees with serde_json: what it
    /// accepts serde_json accepts with the same body, and everything else
    /// goes to serde_json (same result, same error text).
    #[test]
    fn fast_envelope_parser_agrees_with_serde() {
        let tricky: &[&[u8]] = &[
            br#"{"body":"plain","timestamp":1735689600}"#,
            br#"{"body":"","timestamp":0}"#,
            br#"{"body":"x","timestamp":-12}"#,
            br#"{"body":"esc \" \\ \/ \b \f \n \r \t","timestamp":1}"#,
            br#"{"body":"\u0041\u00e9\u4e16\uD83D\uDE80\ud83d\ude80 \u2028\u2029 \u0000","timestamp":1}"#,
            br#"{"body":"\u003cb\u003e \u0026","timestamp":1}"#,
            br#"{"body":"\uDE80 lone trailing","timestamp":1}"#,
            br#"{"body":"\uD83D lone leading","timestamp":1}"#,
            br#"{"body":"\uD83D\n","timestamp":1}"#,
            br#"{"body":"\uD83D\u0041","timestamp":1}"#,
            br#"{"body":"\uD83D\uD83D","timestamp":1}"#,
            br#"{"body":"\uD83D\uDG00","timestamp":1}"#,
            br#"{"body":"\uD83D\u","timestamp":1}"#,
            br#"{"body":"\uD83D"#,
            br#"{"body":"\u12","timestamp":1}"#,
            br#"{"body":"\u12G4","timestamp":1}"#,
            br#"{"body":"\x","timestamp":1}"#,
            br#"{"body":"\'","timestamp":1}"#,
            br#"{"body":"\"#,
            br#"{"body":"unterminated"#,
            br#"{"body":"unterminated, long enough for a chunk or two"#,
            br#"{"body":""#,
            br#"{"body":"#,
            br#"{"body":"a","timestamp":1"#,
            br#"{"body":"a","timestamp":1} "#,
            br#"{"body":"a","timestamp":1}x"#,
            br#"{"body":"a","timestamp":1}}"#,
            br#"{"body":"a","timestamp":01}"#,
            br#"{"body":"a","timestamp":-0}"#,
            br#"{"body":"a","timestamp":-}"#,
            br#"{"body":"a","timestamp":1.5}"#,
            br#"{"body":"a","timestamp":1e3}"#,
            br#"{"body":"a","timestamp":"1"}"#,
            br#"{"body":"a","timestamp":}"#,
            br#"{"body":"a","timestamp":1,"extra":true}"#,
            br#"{"body":"a","body":"b","timestamp":1}"#,
            br#"{"timestamp":1735689600,"body":"first"}"#,
            br#" {"body":"a","timestamp":1}"#,
            br#"{ "body":"a","timestamp":1}"#,
            br#"{"body" : "a", "timestamp" : 1}"#,
            br#"{"body":null,"timestamp":1}"#,
            br#"{"body":1,"timestamp":1}"#,
            br#"{"timestamp":1}"#,
            br#"{}"#,
            br#"["a",1]"#,
            br#"{"body":"tab	inside","timestamp":1}"#,
            b"{\"body\":\"nl\ninside\",\"timestamp\":1}",
            b"{\"body\":\"nul\x00inside a longer string\",\"timestamp\":1}",
            b"{\"body\":\"bad utf8 \xff here\",\"timestamp\":1}",
            b"{\"body\":\"cut utf8 \xE2\x80\",\"timestamp\":1}",
            b"{\"body\":\"cut utf8 \xE2\x80\\n\",\"timestamp\":1}",
            b"{\"body\":\"raw \xE2\x80\xA8 separator\",\"timestamp\":1}",
            b"{\"body\":\"\xC3\",\"timestamp\":1}",
            b"{\"body\":\"\\u00e9\xA9\",\"timestamp\":1}",
            b"{\"body\":\"\xF0\x9F\x9A\x80 ok\",\"timestamp\":1}",
            b"{\"body\":\"surrogate in utf8 \xED\xA0\x80\",\"timestamp\":1}",
        ];
        let mut accepted = 0;
        for input in tricky {
            let serde = body_of_envelope_serde(input);
            if let Some(fast) = fast_envelope_body(input) {
                accepted += 1;
                assert_eq!(Ok(fast), serde.clone(), "{}", String::from_utf8_lossy(input));
            }
            assert_eq!(body_of_envelope(input), serde, "{}", String::from_utf8_lossy(input));
        }
        assert!(accepted >= 8, "the fast path took only {accepted} of the well-formed envelopes");
        assert_eq!(
            fast_envelope_body(br#"{"body":"\uD83D\uDE80\u00e9\/","timestamp":1}"#).unwrap(),
            "🚀é/".as_bytes()
        );

        // random strings of escapes and raw bytes, placed at every offset
        // against the 16-byte chunks
        const PIECES: &[&[u8]] = &[
            b"a", b"0123456789", b"\\\"", b"\\\\", b"\\/", b"\\b", b"\\f", b"\\n", b"\\r", b"\\t", b"\\u0041",
            b"\\u00E9", b"\\u2028", b"\\uD83D\\uDE80", b"\\uD83D", b"\\uDE80", b"\\uD83Dx", b"\\u12", b"\\x",
            b"\\", b"\"", b"\x01", b"\t", "é".as_bytes(), b"\xE2\x80", b"\xFF", "🚀".as_bytes(), b"<>&",
        ];
        let mut rng = Rng(0xD1B54A32D192ED03);
        for _ in 0..20000 {
            let mut input = ENVELOPE_HEAD.to_vec();
            for _ in 0..rng.below(12) {
                input.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            }
            match rng.below(4) {
                0 => {}
                1 => input.extend_from_slice(b"\",\"timestamp\":1735689600}"),
                _ => {
                    let pad = rng.below(20);
                    let tail = input.split_off(ENVELOPE_HEAD.len());
                    input.extend(std::iter::repeat_n(b'p', pad));
                    input.extend_from_slice(&tail);
                    input.extend_from_slice(b"\",\"timestamp\":-7}");
                }
            }
            let serde = body_of_envelope_serde(&input);
            if let Some(fast) = fast_envelope_body(&input) {
                assert_eq!(Ok(fast), serde.clone(), "{}", String::from_utf8_lossy(&input));
            }
            assert_eq!(body_of_envelope(&input), serde, "{}", String::from_utf8_lossy(&input));
        }
    }

    #[test]
    fn timestamps() {
        for ts in [0i64, 1, -1, 9, 10, 1735689600, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            push_i64(&mut out, ts);
            assert_eq!(out, ts.to_string().into_bytes());
        }
    }

    fn head_text(r: &Result<MessageHead<'_>, CoreError>) -> String {
        match r {
            Ok(h) => format!(
                "ok {:?} {:?} {:?} {:?} {:?} {:?}",
                h.id.as_deref(),
                h.kind.as_deref(),
                h.from.as_deref(),
                h.to.as_deref(),
                h.ts.as_deref(),
                h.reply_to.as_deref()
            ),
            Err(e) => format!("err {e}"),
        }
    }

    fn check_head(input: &[u8]) -> bool {
        let serde = parse_message_head_serde(input);
        let fast = fast_message_head(input);
        if let Some(h) = &fast {
            assert_eq!(
                head_text(&Ok(MessageHead { ..clone_head(h) })),
                head_text(&serde),
                "fast path accepted {}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(head_text(&parse_message_head(input)), head_text(&serde), "{}", String::from_utf8_lossy(input));
        fast.is_some()
    }

    fn clone_head<'a>(h: &MessageHead<'a>) -> MessageHead<'a> {
        MessageHead {
            id: h.id.clone(),
            kind: h.kind.clone(),
            from: h.from.clone(),
            to: h.to.clone(),
            ts: h.ts.clone(),
            reply_to: h.reply_to.clone(),
        }
    }

    /// The fast Message parser never disagrees with serde_json.
    #[test]
    fn fast_message_head_agrees_with_serde() {
        let tricky: &[&[u8]] = &[
            br#"{"id":"a","type":"ping","from":"f","to":"t","ts":"2025-01-01T00:00:00Z","replyTo":"r","payload":{"sentAt":1}}"#,
            br#"{}"#,
            br#" { } "#,
            br#"{"id":null,"type":null}"#,
            br#"{"id":"x","id":"y"}"#,
            br#"{"id":null,"id":"y"}"#,
            br#"{"id":1}"#,
            br#"{"id":true}"#,
            br#"{"id":{}}"#,
            br#"{"id":"a\"b"}"#,
            br#"{"id":"a\u0041"}"#,
            br#"{"\u0069d":"x"}"#,
            br#"{"i\d":"x"}"#,
            br#"{"other":"a\"b\\c\/\b\f\n\r\t\u00e9\uD800"}"#,
            br#"{"other":"\x"}"#,
            br#"{"other":"\u12"}"#,
            br#"{"other":"\u12x4"}"#,
            br#"{"other":[1,-2,3.5,-0.0e+10,1E5,0,true,false,null,[],{},[[]],{"a":{"b":[]}}]}"#,
            br#"{"other":01}"#,
            br#"{"other":-}"#,
            br#"{"other":1.}"#,
            br#"{"other":1.e5}"#,
            br#"{"other":1e}"#,
            br#"{"other":1e+}"#,
            br#"{"other":.5}"#,
            br#"{"other":+1}"#,
            br#"{"other":1x}"#,
            br#"{"other":tru}"#,
            br#"{"other":nul}"#,
            br#"{"other":True}"#,
            br#"{"other":[1,]}"#,
            br#"{"other":[,1]}"#,
            br#"{"other":[1 2]}"#,
            br#"{"other":{"a":1,}}"#,
            br#"{"other":{"a" 1}}"#,
            br#"{"other":{a:1}}"#,
            br#"{"other":{"a":}}"#,
            br#"{"id":"a",}"#,
            br#"{"id":"a" "type":"b"}"#,
            br#"{"id":"a"}x"#,
            br#"{"id":"a"} {}"#,
            br#"{"id":"a""#,
            br#"{"id":"a"#,
            br#"{"id":"#,
            br#"{"#,
            br#"{"id""a"}"#,
            br#"["a"]"#,
            br#""id""#,
            br#"null"#,
            b"",
            b"{\"id\":\"tab\tin value\"}",
            b"{\"other\":\"tab\tin ignored value\"}",
            b"{\"id\":\"\xff\"}",
            b"{\"other\":\"\xff not checked by serde\"}",
            b"{\"\xff\":1}",
            b"{\"k\xc3\xa9\":1}",
            b"{\"id\":\"\xc3\xa9t\xc3\xa9\"}",
            b"{\t\"id\"\r:\n\"a\" }",
            b"{\"id\":\"a\"}\x0c",
            b"{\"other\":\"a\x00b\"}",
        ];
        let mut accepted = 0;
        for input in tricky {
            accepted += check_head(input) as usize;
        }
        assert!(accepted >= 8, "the fast path took only {accepted}");
        // deep nesting: the fast path stops following, serde_json decides
        for depth in [10usize, 63, 64, 65, 200, 1000] {
            let mut s = Vec::from(&br#"{"id":"d","payload":"#[..]);
            s.extend(std::iter::repeat_n(b'[', depth));
            s.extend(std::iter::repeat_n(b']', depth));
            s.push(b'}');
            check_head(&s);
        }

        // random documents, and random damage to them
        let mut rng = Rng(0x2545F4914F6CDD1D);
        const ATOMS: &[&[u8]] = &[
            b"0", b"-1", b"12.5e-3", b"1E9", b"true", b"false", b"null", br#""s""#, br#""\u00e9\n""#, br#""a\"b""#,
            b"[]", b"{}", br#""x\ud800""#, "\"é🚀\"".as_bytes(), b"\"<&>\"",
        ];
        fn value(rng: &mut Rng, depth: u32, out: &mut Vec<u8>) {
            match if depth > 4 { 0 } else { rng.below(4) } {
                0 | 1 => out.extend_from_slice(ATOMS[rng.below(ATOMS.len())]),
                2 => {
                    out.push(b'[');
                    for k in 0..rng.below(4) {
                        if k > 0 {
                            out.push(b',');
                        }
                        value(rng, depth + 1, out);
                    }
                    out.push(b']');
                }
                _ => {
                    out.push(b'{');
                    for k in 0..rng.below(4) {
                        if k > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(format!("\"k{k}\": ").as_bytes());
                        value(rng, depth + 1, out);
                    }
                    out.push(b'}');
                }
            }
        }
        const KEYS: &[&str] = &["id", "type", "from", "to", "ts", "replyTo", "payload", "x", "i\\u0064"];
        const DAMAGE: &[u8] = b"\"\\{}[],: \x01\xffa0-.eu";
        let mut accepted = 0;
        for round in 0..30000 {
            let mut doc = vec![b'{'];
            for k in 0..rng.below(7) {
                if k > 0 {
                    doc.push(b',');
                }
                doc.extend_from_slice(format!("\"{}\":", KEYS[rng.below(KEYS.len())]).as_bytes());
                if rng.below(3) == 0 {
                    doc.extend_from_slice(format!("\"v{round}\"").as_bytes());
                } else {
                    value(&mut rng, 1, &mut doc);
                }
            }
            doc.push(b'}');
            if rng.below(2) == 0 {
                for _ in 0..1 + rng.below(2) {
                    let at = rng.below(doc.len() + 1);
                    match rng.below(3) {
                        0 if at < doc.len() => {
                            doc.remove(at);
                        }
                        1 if at < doc.len() => doc[at] = DAMAGE[rng.below(DAMAGE.len())],
                        _ => doc.insert(at, DAMAGE[rng.below(DAMAGE.len())]),
                    }
                }
            }
            accepted += check_head(&doc) as usize;
        }
        assert!(accepted > 5000, "the fast path took only {accepted} of 30000");
    }
}
