//! Byte scanning 16 bytes at a time, and the one wide store the keystream
//! needs: the only architecture-specific code of the SMSG path.
//!
//! # Theory of operation
//!
//! The escaper and both JSON scanners look at 16 bytes per step: each helper
//! loads (and where asked copies) one 16-byte chunk and returns a bit mask of
//! the bytes that need a closer look (bit i = byte i), so the caller can skip
//! the clean prefix with `trailing_zeros`. On x86-64 that is SSE2 (part of the
//! baseline, so no run-time detection); elsewhere the same masks come from a
//! 256-entry table, byte by byte. Every helper is `unsafe` only because it
//! reads and writes through raw pointers: the callers state in a `SAFETY`
//! comment why 16 bytes are there.

/// 0 = copy as is; 1 = needs the escape routine (Go's encoding/json with HTML escaping).
pub(super) static ESCAPE: [u8; 256] = {
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
pub(super) unsafe fn copy16_escape_mask(src: *const u8, dst: *mut u8) -> u32 {
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
pub(super) unsafe fn copy16_string_stop_mask(src: *const u8, dst: *mut u8) -> u32 {
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

/// Bit mask of the `"`, `\` and control bytes among the 16 bytes at `src`.
///
/// # Safety
/// `src` must be readable for 16 bytes.
#[inline(always)]
pub(super) unsafe fn string_stop_mask(src: *const u8) -> u32 {
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

/// Write two u64 words, `lo` then `hi` (native byte order), to the 16 bytes
/// at `dst`: one 16-byte store on x86-64 (why it matters: `keystream`).
///
/// # Safety
/// `dst` must be writable for 16 bytes.
#[inline(always)]
pub(super) unsafe fn store16(dst: *mut u8, lo: u64, hi: u64) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_set_epi64x, _mm_storeu_si128};
        _mm_storeu_si128(dst.cast::<__m128i>(), _mm_set_epi64x(hi as i64, lo as i64));
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::ptr::copy_nonoverlapping(lo.to_ne_bytes().as_ptr(), dst, 8);
        std::ptr::copy_nonoverlapping(hi.to_ne_bytes().as_ptr(), dst.add(8), 8);
    }
}
