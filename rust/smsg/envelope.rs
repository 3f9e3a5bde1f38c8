//! The SMSG envelope, `{"body":"<Message JSON as a JSON string>","timestamp":N}`:
//! written exactly as the reference's Go code writes it, read back from any
//! shape a JSON parser accepts.
//!
//! # Theory of operation
//!
//! **Writing.** The body is escaped the way Go's `json.Marshal` does it
//! (`<`, `>`, `&`, U+2028, U+2029 and control bytes as `\uXXXX`, HTML escaping
//! on): 16 input bytes are copied whole to the output and one mask
//! (`simd::copy16_escape_mask`) says which need an escape; the output position
//! then advances only over the clean prefix, and an escape overwrites the rest.
//! Byte-for-byte equality with the reference frames is tested.
//!
//! **Reading.** `fast_envelope_body` takes only the exact shape `seal` and the
//! reference write, unescaping 16 bytes at a time. Anything else, and anything
//! a JSON parser might refuse, is "not sure" (None) and goes to serde_json,
//! which decides and words every error. So the fast path can change speed,
//! never results; tests and the fuzz targets compare it with serde_json.

use std::borrow::Cow;

use serde::Deserialize;

use super::simd::{copy16_escape_mask, copy16_string_stop_mask, ESCAPE};
use crate::error::CoreError;

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

pub(super) fn write_envelope(out: &mut Vec<u8>, message_json: &[u8], timestamp: i64) {
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
pub(super) fn hex4(h: &[u8]) -> Option<u32> {
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

pub(super) fn starts_with_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smsg::test_util::Rng;

    #[test]
    fn go_escaping() {
        let mut out = Vec::new();
        escape_go_json_into(&mut out, "a\"\\\n\r\t\u{1}<>&\u{2028}\u{2029}é🚀".as_bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\\"\\\\\\n\\r\\t\\u0001\\u003c\\u003e\\u0026\\u2028\\u2029é🚀"
        );
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
}
