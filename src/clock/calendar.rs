//! Wall-clock dates, always in UTC: RFC 3339 text for the audit log and the CLI, RFC 3339
//! input for `--since`, and the day and month boundaries budgets reset on.
//!
//! The calendar itself (month lengths, leap years, offsets) is jiff's; this module only fixes
//! the project's choices: UTC everywhere, whole seconds in text we write, milliseconds in
//! budgets and the ledger, and RFC 3339 as the only timestamp syntax we read.

use jiff::civil::Date;
use jiff::tz::Offset;
use jiff::Timestamp;

/// Unix seconds as RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SSZ`. Seconds outside jiff's range
/// (years -9999 to 9999) are shown as the nearest end of it: no caller stores such a time,
/// but a formatter should not fail.
pub fn rfc3339(unix_seconds: i64) -> String {
    let at = Timestamp::from_second(unix_seconds).unwrap_or(if unix_seconds < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses an RFC 3339 §5.6 `date-time` (`2026-11-30T09:30:00.250+05:30`; `t`, `z` and a
/// space for `T` allowed, as the RFC's notes allow) or a bare `full-date` (`2026-11-30`, taken
/// as midnight UTC) into unix milliseconds. Digits past milliseconds are cut off.
///
/// jiff's parser takes a wider grammar (ISO 8601 offsets like `+0100`, times without
/// seconds, `[zone]` annotations), so the RFC 3339 shape is checked first and jiff then checks
/// the values (month lengths, leap days, hour and offset ranges) and does the arithmetic.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    if text.len() == "YYYY-MM-DD".len() {
        if !matches_shape(text.as_bytes(), b"dddd-dd-dd") {
            return None;
        }
        let date: Date = text.parse().ok()?;
        return start_of_day_ms(date);
    }
    if !is_rfc3339_date_time(text.as_bytes()) {
        return None;
    }
    let at: Timestamp = text.parse().ok()?;
    Some(at.as_millisecond())
}

/// Start (unix ms) of the UTC day containing `now_ms`.
pub fn day_start_ms(now_ms: i64) -> i64 {
    const MS_PER_DAY: i64 = 86_400_000;
    now_ms.div_euclid(MS_PER_DAY) * MS_PER_DAY
}

/// Start (unix ms) of the UTC calendar month containing `now_ms`. Times outside jiff's range
/// (years -9999 to 9999) fall back to the start of their day.
pub fn month_start_ms(now_ms: i64) -> i64 {
    Timestamp::from_millisecond(now_ms)
        .ok()
        .map(|at| Offset::UTC.to_datetime(at).date().first_of_month())
        .and_then(start_of_day_ms)
        .unwrap_or_else(|| day_start_ms(now_ms))
}

/// Midnight UTC at the start of `date`, in unix ms.
fn start_of_day_ms(date: Date) -> Option<i64> {
    let midnight = Offset::UTC.to_timestamp(date.at(0, 0, 0, 0)).ok()?;
    Some(midnight.as_millisecond())
}

/// Whether `text` has the shape `dddd-dd-ddTdd:dd:dd[.d+](Z|+dd:dd|-dd:dd)`, where `T` may
/// be `t` or a space and `Z` may be `z` (RFC 3339 §5.6 and its notes).
fn is_rfc3339_date_time(text: &[u8]) -> bool {
    let Some((date, rest)) = text.split_at_checked(10) else {
        return false;
    };
    let Some((&separator, rest)) = rest.split_first() else {
        return false;
    };
    let Some((time, mut rest)) = rest.split_at_checked(8) else {
        return false;
    };
    if !matches_shape(date, b"dddd-dd-dd")
        || !matches!(separator, b'T' | b't' | b' ')
        || !matches_shape(time, b"dd:dd:dd")
    {
        return false;
    }
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &fraction[digits..];
    }
    match rest {
        b"Z" | b"z" => true,
        // RFC 3339's offset hours are a `time-hour` (00-23) and its minutes a `time-minute`;
        // jiff alone would take offsets up to 25:59:59.
        [b'+' | b'-', offset @ ..] => {
            matches_shape(offset, b"dd:dd")
                && two_digits(&offset[..2]) <= 23
                && two_digits(&offset[3..]) <= 59
        }
        _ => false,
    }
}

/// The value of two ASCII digits.
fn two_digits(digits: &[u8]) -> u8 {
    (digits[0] - b'0') * 10 + (digits[1] - b'0')
}

/// Whether `text` matches `shape`, where `d` stands for an ASCII digit and any other byte for
/// itself.
fn matches_shape(text: &[u8], shape: &[u8]) -> bool {
    text.len() == shape.len()
        && text.iter().zip(shape).all(|(&byte, &want)| match want {
            b'd' => byte.is_ascii_digit(),
            _ => byte == want,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_460_800_000; // 2025-11-30T00:00:00Z
    const MS_PER_DAY: i64 = 86_400_000;

    /// Unix ms of midnight UTC on a date, computed without this module.
    fn midnight(year: i16, month: i8, day: i8) -> i64 {
        jiff::civil::date(year, month, day)
            .at(0, 0, 0, 0)
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    #[test]
    fn rfc3339_formats_whole_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_out_of_range_shows_the_end_of_the_range() {
        assert!(rfc3339(i64::MAX).starts_with("9999-12-"));
        assert!(rfc3339(i64::MIN).contains("9999-"));
    }

    #[test]
    fn rfc3339_round_trips_through_the_parser() {
        for seconds in [0, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse_rfc3339_ms(&rfc3339(seconds)), Some(seconds * 1000));
        }
    }

    #[test]
    fn date_times_parse_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_ms("2025-11-30T00:00:00Z"), Some(NOW));
        assert_eq!(parse_rfc3339_ms("2025-11-30T01:00:00+01:00"), Some(NOW));
        assert_eq!(parse_rfc3339_ms("2025-11-29T18:30:00-05:30"), Some(NOW));
        assert_eq!(parse_rfc3339_ms("2025-11-30T23:59:00+23:59"), Some(NOW));
        assert_eq!(parse_rfc3339_ms("2025-11-30t00:00:00z"), Some(NOW));
        assert_eq!(parse_rfc3339_ms("2025-11-30 00:00:00Z"), Some(NOW));
        assert_eq!(parse_rfc3339_ms("2025-11-30T00:00:00.25Z"), Some(NOW + 250));
        assert_eq!(
            parse_rfc3339_ms("2025-11-30T00:00:00.123456789Z"),
            Some(NOW + 123)
        );
    }

    #[test]
    fn a_full_date_is_midnight_utc() {
        assert_eq!(parse_rfc3339_ms("2025-11-30"), Some(NOW));
        assert_eq!(parse_rfc3339_ms("1970-01-01"), Some(0));
    }

    #[test]
    fn leap_days_exist_only_in_leap_years() {
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T12:30:15Z"),
            Some(951_827_415_000)
        );
        assert!(parse_rfc3339_ms("2024-02-29").is_some());
        assert!(parse_rfc3339_ms("2025-02-29").is_none());
        assert!(parse_rfc3339_ms("1900-02-29").is_none()); // divisible by 100
        assert!(parse_rfc3339_ms("2000-02-29").is_some()); // but by 400
    }

    #[test]
    fn month_ends_are_checked() {
        assert!(parse_rfc3339_ms("2025-04-30").is_some());
        assert!(parse_rfc3339_ms("2025-04-31").is_none());
        assert!(parse_rfc3339_ms("2025-12-31T23:59:59Z").is_some());
        assert!(parse_rfc3339_ms("2025-13-01").is_none());
        assert!(parse_rfc3339_ms("2025-00-10").is_none());
    }

    #[test]
    fn other_timestamp_syntaxes_are_refused() {
        for bad in [
            "",
            "2025-11-30T00:00:00",
            "2025-11-30T00:00:00+0100",
            "2025-11-30T00:00Z",
            "2025-11-30T00:00:00.Z",
            "2025-11-30T00:00:00Zjunk",
            "2025-11-30T00:00:00Z[UTC]",
            "2025-11-30X00:00:00Z",
            "2025-11-30T24:00:00Z",
            "2025-11-30T00:00:00+24:00",
            "2025-11-30T00:00:00+23:60",
            "2025-11-30T00:00:00-00:5",
            "2025-1-30",
            "20251130",
            "+002025-11-30",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn day_starts_at_utc_midnight() {
        assert_eq!(day_start_ms(NOW), NOW);
        assert_eq!(day_start_ms(NOW + MS_PER_DAY - 1), NOW);
        assert_eq!(day_start_ms(NOW - 1), NOW - MS_PER_DAY);
        assert_eq!(day_start_ms(-1), -MS_PER_DAY);
    }

    #[test]
    fn month_starts_on_the_first_at_utc_midnight() {
        assert_eq!(month_start_ms(NOW), midnight(2025, 11, 1));
        assert_eq!(
            month_start_ms(midnight(2025, 12, 1) - 1),
            midnight(2025, 11, 1)
        );
        assert_eq!(month_start_ms(midnight(2025, 12, 1)), midnight(2025, 12, 1));
        assert_eq!(month_start_ms(0), 0);
        assert_eq!(month_start_ms(-1), midnight(1969, 12, 1));
    }

    #[test]
    fn month_ends_follow_month_lengths_and_leap_years() {
        // The last millisecond of February belongs to February; the next to March.
        for (year, last_day) in [(2024, 29), (2025, 28), (2000, 29), (2100, 28)] {
            let march = midnight(year, 3, 1);
            assert_eq!(month_start_ms(march - 1), midnight(year, 2, 1), "{year}");
            assert_eq!(
                march - midnight(year, 2, 1),
                last_day * MS_PER_DAY,
                "{year}"
            );
            assert_eq!(month_start_ms(march), march);
        }
        // Year end: December 31st 23:59:59.999 is still December.
        assert_eq!(
            month_start_ms(midnight(2026, 1, 1) - 1),
            midnight(2025, 12, 1)
        );
    }

    #[test]
    fn out_of_range_times_fall_back_to_their_day() {
        assert_eq!(month_start_ms(i64::MAX), day_start_ms(i64::MAX));
    }
}
