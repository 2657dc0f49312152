//! The `--since` / `?since=` argument: how far back a usage report goes.
//!
//! Either a duration back from now, a number with a unit (`90s`, `30m`, `24h`, `7d`, `2w`),
//! or an RFC 3339 timestamp (`2026-11-30T00:00:00Z`, `2026-11-30T09:30:00.250+05:30`), or an
//! RFC 3339 full date (`2026-11-30`, midnight UTC). When the argument is absent, callers
//! report all time (`since_ms = 0`).

use crate::store::ids::parse_duration;

/// What a bad argument is told to look like.
const EXPECTED: &str = "use a duration like 24h, 30m, 7d or an RFC 3339 time like \
    2026-11-30T00:00:00Z";

/// Parses `text` into unix milliseconds, durations counting back from `now_ms`.
///
/// # Errors
/// One line saying what is wrong and what is expected.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let bad = || format!("bad since {text:?}: {EXPECTED}");
    if looks_like_date(text) {
        return parse_rfc3339_ms(text).ok_or_else(bad);
    }
    // A bare number is refused: seconds, or a unix timestamp? The unit says which.
    if !text.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(bad());
    }
    let back = parse_duration(text).map_err(|_| bad())?;
    let back_ms = i64::try_from(back.as_millis()).map_err(|_| bad())?;
    Ok(now_ms.saturating_sub(back_ms).max(0))
}

/// Whether `text` starts like `YYYY-`.
fn looks_like_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 5 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// An RFC 3339 §5.6 `date-time` (or a bare `full-date`, taken as midnight UTC) as unix ms.
/// Fractions of a second beyond milliseconds are cut off.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let mut cursor = Cursor(text.as_bytes());
    let year = cursor.digits(4)?;
    cursor.expect(b'-')?;
    let month = cursor.digits(2)?;
    cursor.expect(b'-')?;
    let day = cursor.digits(2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if cursor.0.is_empty() {
        return Some(days * 86_400_000);
    }
    // RFC 3339 §5.6: "T" (either case); its note allows a space instead.
    cursor.expect_any(b"Tt ")?;
    let hour = cursor.digits(2)?;
    cursor.expect(b':')?;
    let minute = cursor.digits(2)?;
    cursor.expect(b':')?;
    // 60 is a leap second (§5.7); it counts as the next minute's first second.
    let second = cursor.digits(2)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut millis = 0;
    if cursor.peek() == Some(b'.') {
        cursor.expect(b'.')?;
        let fraction = cursor.take_while(|b| b.is_ascii_digit());
        if fraction.is_empty() {
            return None;
        }
        for (i, digit) in fraction.iter().take(3).enumerate() {
            millis += i64::from(digit - b'0') * [100, 10, 1][i];
        }
    }
    let offset_minutes = match cursor.peek()? {
        b'Z' | b'z' => {
            cursor.expect_any(b"Zz")?;
            0
        }
        sign @ (b'+' | b'-') => {
            cursor.expect(sign)?;
            let hours = cursor.digits(2)?;
            cursor.expect(b':')?;
            let minutes = cursor.digits(2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            if sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    if !cursor.0.is_empty() {
        return None;
    }
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// A tiny reader over the bytes of a timestamp.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.expect_any(&[byte])
    }

    fn expect_any(&mut self, bytes: &[u8]) -> Option<()> {
        let (&first, rest) = self.0.split_first()?;
        bytes.contains(&first).then(|| self.0 = rest)
    }

    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let digits = self.0.get(..n)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[n..];
        Some(
            digits
                .iter()
                .fold(0, |acc, d| acc * 10 + i64::from(d - b'0')),
        )
    }

    fn take_while(&mut self, keep: impl Fn(&u8) -> bool) -> &'a [u8] {
        let end = self.0.iter().position(|b| !keep(b)).unwrap_or(self.0.len());
        let (taken, rest) = self.0.split_at(end);
        self.0 = rest;
        taken
    }
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`,
/// howardhinnant.github.io/date_algorithms.html; the inverse of the audit log's formatter).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_460_800_000; // 2025-11-30T00:00:00Z

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse_since("90s", NOW), Ok(NOW - 90_000));
        assert_eq!(parse_since("30m", NOW), Ok(NOW - 1_800_000));
        assert_eq!(parse_since("24h", NOW), Ok(NOW - 86_400_000));
        assert_eq!(parse_since("7d", NOW), Ok(NOW - 7 * 86_400_000));
        assert_eq!(parse_since(" 1h ", NOW), Ok(NOW - 3_600_000));
    }

    #[test]
    fn duration_longer_than_the_epoch_means_all_time() {
        assert_eq!(parse_since("36500d", 1_000), Ok(0));
    }

    #[test]
    fn rfc3339_utc_timestamps_are_exact() {
        assert_eq!(parse_since("2025-11-30T00:00:00Z", 0), Ok(NOW));
        assert_eq!(parse_since("1970-01-01T00:00:00Z", NOW), Ok(0));
        assert_eq!(parse_since("2000-02-29t12:30:15z", 0), Ok(951_827_415_000));
        assert_eq!(parse_since("2025-11-30 00:00:01Z", 0), Ok(NOW + 1000));
    }

    #[test]
    fn rfc3339_offsets_are_applied() {
        assert_eq!(parse_since("2025-11-30T01:00:00+01:00", 0), Ok(NOW));
        assert_eq!(parse_since("2025-11-29T18:30:00-05:30", 0), Ok(NOW));
        assert_eq!(parse_since("2025-11-30T00:00:00+00:00", 0), Ok(NOW));
    }

    #[test]
    fn rfc3339_fractions_keep_milliseconds() {
        assert_eq!(parse_since("2025-11-30T00:00:00.25Z", 0), Ok(NOW + 250));
        assert_eq!(
            parse_since("2025-11-30T00:00:00.123456789Z", 0),
            Ok(NOW + 123)
        );
    }

    #[test]
    fn full_date_is_midnight_utc() {
        assert_eq!(parse_since("2025-11-30", 0), Ok(NOW));
    }

    #[test]
    fn garbage_is_refused_with_one_line() {
        for bad in [
            "",
            "yesterday",
            "24",
            "24x",
            "h",
            "-5m",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-11-30T24:00:00Z",
            "2025-11-30T00:00:00",
            "2025-11-30T00:00:00+0100",
            "2025-11-30T00:00:00.Z",
            "2025-11-30T00:00:00Zjunk",
            "2025-11-30X00:00:00Z",
            "2025-1-30",
        ] {
            let error = parse_since(bad, NOW).unwrap_err();
            assert!(
                error.contains("24h") && !error.contains('\n'),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
