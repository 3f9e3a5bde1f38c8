//! The receive fast path of the WebSocket layer (RFC 6455 §5.2): whole,
//! final, unfragmented BINARY frames cut out of a read, unmasked.
//!
//! # Theory of operation
//!
//! After the handshake every frame smsgnet exchanges is one binary message in
//! one frame. `take_binary_frames` walks a chunk of the byte stream from its
//! start and takes frames for as long as each one is exactly that: first byte
//! `0x82` (FIN, no reserved bits, opcode BINARY), the mask bit the side
//! requires (a server reads masked frames, a client unmasked ones) and a
//! length of at most `max_size`. It stops at
//!
//! * the end of the data, or a frame not all there yet: `Stop::NeedMore`,
//!   the caller keeps the bytes from `consumed` on and reads more;
//! * any other frame (control, text, fragment, reserved bits, the wrong mask
//!   bit, too long): `Stop::Other`, the caller hands the bytes from
//!   `consumed` on to the general parser (websockets' protocol), which
//!   answers, fails or closes as the RFC says.
//!
//! Nothing here allocates per frame: the caller gets each payload's span and
//! key and copies it where it goes, unmasking on the way (`unmask_into`).
//! Lengths are checked against the data before any slice is taken, so no
//! input can panic (`fuzz_binary_frames` in `rust/fuzz.rs`).

/// The first byte of every frame the fast path takes: FIN, RSV1-3 clear, opcode 2.
pub const FINAL_BINARY: u8 = 0x82;

/// One frame the fast path took: where its payload lies in the chunk, and
/// the masking key (None for an unmasked frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub start: usize,
    pub end: usize,
    pub key: Option<[u8; 4]>,
}

/// Why the walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The data ends inside a frame header or payload, or right after a frame.
    NeedMore,
    /// A frame the fast path does not take starts at `consumed`.
    Other,
}

/// Walk `data` from its start: the frames taken (in order), how many bytes
/// they cover, and why the walk ended.
pub fn take_binary_frames(data: &[u8], masked: bool, max_size: u64) -> (Vec<Payload>, usize, Stop) {
    let mut taken = Vec::new();
    let mut pos = 0usize;
    let n = data.len();
    loop {
        if n - pos < 2 {
            return (taken, pos, Stop::NeedMore);
        }
        let b1 = data[pos + 1];
        if data[pos] != FINAL_BINARY || (b1 & 0x80 != 0) != masked {
            return (taken, pos, Stop::Other);
        }
        let mut head = pos + 2;
        let length: u64 = match b1 & 0x7F {
            126 => {
                if n - pos < 4 {
                    return (taken, pos, Stop::NeedMore);
                }
                head += 2;
                u64::from(u16::from_be_bytes([data[pos + 2], data[pos + 3]]))
            }
            127 => {
                if n - pos < 10 {
                    return (taken, pos, Stop::NeedMore);
                }
                head += 8;
                let mut be = [0u8; 8];
                be.copy_from_slice(&data[pos + 2..pos + 10]);
                u64::from_be_bytes(be)
            }
            short => u64::from(short),
        };
        if length > max_size {
            return (taken, pos, Stop::Other);
        }
        let key_len = if masked { 4 } else { 0 };
        // the frame's end, in u64 and saturating: a huge declared length cannot wrap
        let end = (head as u64 + key_len as u64).saturating_add(length);
        if end > n as u64 {
            return (taken, pos, Stop::NeedMore);
        }
        let start = head + key_len;
        let end = end as usize;
        let key = if masked { Some([data[head], data[head + 1], data[head + 2], data[head + 3]]) } else { None };
        taken.push(Payload { start, end, key });
        pos = end;
    }
}

/// Copy `payload` into `out` (the same length), unmasking it with `key`
/// (RFC 6455 §5.3: byte i is XORed with key[i % 4]).
pub fn unmask_into(payload: &[u8], key: Option<[u8; 4]>, out: &mut [u8]) {
    let key = match key {
        None => {
            out.copy_from_slice(payload);
            return;
        }
        Some(key) => key,
    };
    // eight bytes at a time: the key twice over (8 is a multiple of 4, so the
    // phase never shifts), then the tail byte by byte
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks_in = payload.chunks_exact(8);
    let mut chunks_out = out.chunks_exact_mut(8);
    for (src, dst) in (&mut chunks_in).zip(&mut chunks_out) {
        let mut word = [0u8; 8];
        word.copy_from_slice(src);
        dst.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    let done = payload.len() - chunks_in.remainder().len();
    for (i, (src, dst)) in chunks_in.remainder().iter().zip(chunks_out.into_remainder()).enumerate() {
        *dst = src ^ key[(done + i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as RFC 6455 writes it (the shortest length encoding).
    pub(crate) fn frame(first: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![first];
        let mask_bit = if key.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n < 65536 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match key {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    fn unmasked(data: &[u8], p: &Payload) -> Vec<u8> {
        let mut out = vec![0u8; p.end - p.start];
        unmask_into(&data[p.start..p.end], p.key, &mut out);
        out
    }

    #[test]
    fn takes_every_length_encoding_masked_and_unmasked() {
        let payloads: Vec<Vec<u8>> =
            [0usize, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 70000].iter().map(|&n| (0..n).map(|i| i as u8).collect()).collect();
        for masked in [true, false] {
            let key = if masked { Some([0x12, 0x34, 0x56, 0x78]) } else { None };
            let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(FINAL_BINARY, p, key)).collect();
            let (taken, consumed, stop) = take_binary_frames(&stream, masked, 1 << 20);
            assert_eq!((consumed, stop), (stream.len(), Stop::NeedMore));
            let got: Vec<Vec<u8>> = taken.iter().map(|p| unmasked(&stream, p)).collect();
            assert_eq!(got, payloads);
        }
    }

    #[test]
    fn a_cut_frame_waits_for_more_at_every_cut() {
        let key = Some([1, 2, 3, 4]);
        let whole = [frame(FINAL_BINARY, b"first", key), frame(FINAL_BINARY, &[9u8; 300], key)].concat();
        let first_len = 5 + 2 + 4;
        for cut in 0..whole.len() {
            let (taken, consumed, stop) = take_binary_frames(&whole[..cut], true, 1 << 20);
            assert_eq!(stop, Stop::NeedMore, "cut at {cut}");
            let expect = if cut >= first_len { 1 } else { 0 };
            assert_eq!((taken.len(), consumed), (expect, if expect == 1 { first_len } else { 0 }), "cut at {cut}");
        }
    }

    #[test]
    fn anything_else_stops_the_walk_where_it_starts() {
        let ok = frame(FINAL_BINARY, b"ok", Some([5, 6, 7, 8]));
        for other in [
            frame(0x81, b"text", Some([5, 6, 7, 8])),     // text
            frame(0x89, b"ping", Some([5, 6, 7, 8])),     // control
            frame(0x02, b"frag", Some([5, 6, 7, 8])),     // not final
            frame(0x80, b"cont", Some([5, 6, 7, 8])),     // continuation
            frame(0xC2, b"rsv1", Some([5, 6, 7, 8])),     // reserved bit
            frame(FINAL_BINARY, b"unmasked", None),       // the wrong mask bit for a server
            frame(FINAL_BINARY, &[0u8; 101], Some([0; 4])), // over max_size
        ] {
            let stream = [ok.clone(), other, ok.clone()].concat();
            let (taken, consumed, stop) = take_binary_frames(&stream, true, 100);
            assert_eq!((taken.len(), consumed, stop), (1, ok.len(), Stop::Other));
        }
    }

    #[test]
    fn a_declared_length_near_u64_max_is_too_long_not_a_wrap() {
        let mut f = vec![FINAL_BINARY, 0x80 | 127];
        f.extend_from_slice(&u64::MAX.to_be_bytes());
        f.extend_from_slice(&[0; 8]);
        assert_eq!(take_binary_frames(&f, true, u64::MAX), (vec![], 0, Stop::NeedMore));
        assert_eq!(take_binary_frames(&f, true, 1 << 20), (vec![], 0, Stop::Other));
    }

    #[test]
    fn unmasking_matches_the_byte_by_byte_rule_at_every_length() {
        let key = [0xA1, 0xB2, 0xC3, 0xD4];
        for n in 0..40 {
            let payload: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let mut out = vec![0u8; n];
            unmask_into(&payload, Some(key), &mut out);
            let expect: Vec<u8> = payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            assert_eq!(out, expect, "length {n}");
        }
    }
}

#[cfg(test)]
pub(crate) use tests::frame as test_frame;
