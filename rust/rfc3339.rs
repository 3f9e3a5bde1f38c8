//! The one RFC 3339 parser and formatter of smsgnet: the `ts` of a transport
//! Message. Python's `smsgnet.message.parse_timestamp` and `format_timestamp`
//! call them (through `_core.parse_timestamp_fields` and
//! `_core.format_timestamp`), so both sides accept exactly the same texts, and
//! every `ts` smsgnet writes is what Go's `time.RFC3339Nano` prints.
//!
//! Accepted: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm)`, which is every form
//! Go's `time.RFC3339Nano` prints and what Go's parser accepts, with these
//! rules:
//!
//! * year 0001–9999 (Go also takes 0000; Python's datetime cannot hold it, and
//!   no real frame is dated year 0, so it is refused on both sides);
//! * month, day (by month and leap year), hour 00–23, minute 00–59,
//!   second 00–59 (no leap second: Go refuses `:60` and never writes it);
//! * a fraction of one or more digits, any length; digits past the ninth are
//!   ignored (truncated, as Go does);
//! * the zone `Z` or `±hh:mm` with hh 00–23 and mm 00–59;
//! * `T` may also be `t` or a space and `Z` may be `z` (RFC 3339 §5.6 allows
//!   them; Go does not, so smsgnet only ever reads them, never writes them).

/// The fields of a parsed timestamp, as written (local time plus its offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    /// 0–999 999 999.
    pub nanosecond: i64,
    /// Seconds east of UTC (`+01:00` is 3600).
    pub offset_seconds: i64,
}

impl Timestamp {
    /// Whole UNIX seconds (the fraction is in `nanosecond`).
    pub fn unix_seconds(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86400 + self.hour * 3600 + self.minute * 60 + self.second
            - self.offset_seconds
    }
}

/// Parse an RFC 3339 timestamp (rules in the module header), or None.
pub fn parse(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v: i64 = 0;
        for &c in b.get(r)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if year < 1
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut nanosecond = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanosecond = nanosecond * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanosecond *= 10;
        }
    }
    let offset_seconds = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    Some(Timestamp { year, month, day, hour, minute, second, nanosecond, offset_seconds })
}

/// UNIX time in seconds (with fraction) of an RFC 3339 timestamp, or None.
pub fn parse_unix_seconds(s: &str) -> Option<f64> {
    let t = parse(s)?;
    Some(t.unix_seconds() as f64 + t.nanosecond as f64 / 1e9)
}

/// Go's `time.RFC3339Nano` text of an instant: `unix_ns` nanoseconds since
/// the epoch, written in the zone `offset_minutes` east of UTC (`Z` when 0,
/// else `±hh:mm`). The fraction loses its trailing zeros and is left out when
/// zero. Years before 1 are written with a sign and those past 9999 with
/// every digit, as Go does. None when the instant's seconds do not fit in
/// an i64 (hundreds of billions of years away).
pub fn format_nano(unix_ns: i128, offset_minutes: i32) -> Option<String> {
    let local = unix_ns.checked_add(i128::from(offset_minutes) * 60_000_000_000)?;
    // 64-bit division whenever the instant fits (years 1678-2261): a 128-bit
    // one is a library call costing more than the rest of the formatting
    let (secs, nanos) = match i64::try_from(local) {
        Ok(v) => (v.div_euclid(1_000_000_000), v.rem_euclid(1_000_000_000) as u32),
        Err(_) => (i64::try_from(local.div_euclid(1_000_000_000)).ok()?, local.rem_euclid(1_000_000_000) as u32),
    };
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(36);
    if year < 0 {
        out.push('-');
    }
    push_padded(&mut out, year.unsigned_abs(), 4);
    for (sep, v) in [('-', month), ('-', day), ('T', sod / 3600), (':', sod / 60 % 60), (':', sod % 60)] {
        out.push(sep);
        push_padded(&mut out, u64::from(v), 2);
    }
    if nanos != 0 {
        let mut digits = *b"000000000";
        let mut n = nanos;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let end = 9 - digits.iter().rev().take_while(|&&d| d == b'0').count();
        out.push('.');
        out.extend(digits[..end].iter().map(|&d| char::from(d)));
    }
    if offset_minutes == 0 {
        out.push('Z');
    } else {
        out.push(if offset_minutes > 0 { '+' } else { '-' });
        let m = offset_minutes.unsigned_abs();
        push_padded(&mut out, u64::from(m / 60), 2);
        out.push(':');
        push_padded(&mut out, u64::from(m % 60), 2);
    }
    Some(out)
}

/// `v` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, mut v: u64, width: usize) {
    let mut digits = [b'0'; 20]; // u64::MAX has 20 digits
    let mut start = digits.len();
    while v > 0 {
        start -= 1;
        digits[start] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    start = start.min(digits.len() - width.min(digits.len()));
    out.extend(digits[start..].iter().map(|&d| char::from(d)));
}

/// (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's
/// algorithm; any day an i64 count of seconds reaches).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_rfc3339nano_forms() {
        assert_eq!(parse_unix_seconds("2025-01-01T00:00:00Z"), Some(1735689600.0));
        assert_eq!(parse_unix_seconds("2025-01-01T00:00:00.5Z"), Some(1735689600.5));
        let t = parse_unix_seconds("2025-06-30T23:59:59.5+02:00").unwrap();
        assert_eq!(t, 1751327999.5 - 7200.0);
        assert!((parse_unix_seconds("2025-01-01T00:00:00.123456789Z").unwrap() - 1735689600.123456789).abs() < 1e-6);
        assert_eq!(parse_unix_seconds("2025-01-01T00:00:00-01:30"), Some(1735689600.0 + 5400.0));
        assert_eq!(parse_unix_seconds("2025-02-30T00:00:00Z"), None);
        assert_eq!(parse_unix_seconds("2025-01-01T00:00:00"), None);
        assert_eq!(parse_unix_seconds("2025-01-01T00:00:00.Z"), None);
        assert_eq!(parse_unix_seconds(""), None);
    }

    #[test]
    fn the_edges_python_and_rust_disagreed_on() {
        assert_eq!(parse("2025-01-01T00:00:00+01:75"), None); // minutes of the offset
        assert_eq!(parse("0000-01-01T00:00:00Z"), None); // year 0
        assert_eq!(parse("2016-12-31T23:59:60Z"), None); // leap second
        assert_eq!(parse("9999-12-31T23:59:59.999999999-23:59").map(|t| t.nanosecond), Some(999_999_999));
        assert_eq!(parse("0001-01-01T00:00:00+23:59").map(|t| t.unix_seconds()), Some(-62135596800 - 86340));
    }

    #[test]
    fn fractions_are_exact_and_truncated_after_nine_digits() {
        let t = parse("2025-01-01T00:00:00.999999999999999999Z").unwrap();
        assert_eq!((t.second, t.nanosecond), (0, 999_999_999));
        assert_eq!(parse("2025-01-01T00:00:00.1Z").unwrap().nanosecond, 100_000_000);
        assert_eq!(parse("2025-01-01T00:00:00.000000001Z").unwrap().nanosecond, 1);
        let long = format!("2025-01-01T00:00:00.{}Z", "7".repeat(100_000));
        assert_eq!(parse(&long).unwrap().nanosecond, 777_777_777);
    }

    #[test]
    fn formats_as_go_rfc3339nano() {
        assert_eq!(format_nano(1_735_689_600_123_456_789, 0).as_deref(), Some("2025-01-01T00:00:00.123456789Z"));
        assert_eq!(format_nano(1_735_689_600_500_000_000, 0).as_deref(), Some("2025-01-01T00:00:00.5Z"));
        assert_eq!(format_nano(1_735_689_600_000_000_000, 0).as_deref(), Some("2025-01-01T00:00:00Z"));
        assert_eq!(format_nano(1_751_320_799_500_000_000, 120).as_deref(), Some("2025-06-30T23:59:59.5+02:00"));
        assert_eq!(format_nano(1_735_689_600_123_456_789, -330).as_deref(), Some("2024-12-31T18:30:00.123456789-05:30"));
        assert_eq!(format_nano(-1, 0).as_deref(), Some("1969-12-31T23:59:59.999999999Z"));
        assert_eq!(format_nano(-62_135_596_800_000_000_000, 0).as_deref(), Some("0001-01-01T00:00:00Z"));
        assert_eq!(format_nano(253_402_300_799_999_999_999, 0).as_deref(), Some("9999-12-31T23:59:59.999999999Z"));
        assert_eq!(format_nano(253_402_300_800_000_000_000, 0).as_deref(), Some("10000-01-01T00:00:00Z"));
        assert_eq!(format_nano(-62_135_596_800_000_000_001, 0).as_deref(), Some("0000-12-31T23:59:59.999999999Z"));
        assert_eq!(format_nano(-62_167_219_200_000_000_001, 0).as_deref(), Some("-0001-12-31T23:59:59.999999999Z"));
        assert_eq!(format_nano(i128::MAX, 0), None);
        assert_eq!(format_nano(i128::from(i64::MAX) * 1_000_000_000 + 1_000_000_000, 0), None);
        assert!(format_nano(i128::from(i64::MAX) * 1_000_000_000, 0).is_some());
    }

    #[test]
    fn every_formatted_text_parses_back_to_its_instant() {
        let mut ns: i128 = -62_135_596_800_000_000_000 + 86_400_000_000_000;
        while ns < 253_402_300_799_000_000_000 - 86_400_000_000_000 {
            for offset in [0, 1, -1, 59, -90, 23 * 60 + 59, -(23 * 60 + 59)] {
                let text = format_nano(ns, offset).unwrap();
                let t = parse(&text).unwrap_or_else(|| panic!("{text}"));
                assert_eq!(i128::from(t.unix_seconds()) * 1_000_000_000 + i128::from(t.nanosecond), ns, "{text}");
            }
            ns += 7_919_000_000_123_457; // about 92 days and an odd fraction
        }
    }

    #[test]
    fn non_ascii_never_panics() {
        for s in ["2025-01-01T00:00:00é", "２０２５-01-01T00:00:00Z", "2025-01-01T00:00:00+01:0é", "2025-01-01T00:00:00.\u{0663}Z"] {
            assert_eq!(parse(s), None, "{s}");
        }
    }
}
