//! Parse the `ts` of a transport Message: RFC 3339 with 0–9 (or more)
//! fractional digits and `Z` or `±hh:mm`, into UNIX seconds.

/// UNIX time in seconds (with fraction) of an RFC 3339 timestamp, or None.
pub fn parse_unix_seconds(s: &str) -> Option<f64> {
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
            v = v * 10 + (c - b'0') as i64;
        }
        Some(v)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac = 0.0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        let mut scale = 0.1;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            frac += (c - b'0') as f64 * scale;
            scale /= 10.0;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86400 + hour * 3600 + minute * 60 + second - offset;
    Some(secs as f64 + frac)
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
}
