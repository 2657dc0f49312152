//! The `--since` / `?since=` argument: how far back a usage report goes.
//!
//! Either a duration back from now in the project's one grammar ([`crate::clock::duration`]:
//! `90s`, `30m`, `24h`, `7d`, `1h30m`), or an RFC 3339 timestamp (`2026-11-30T00:00:00Z`,
//! `2026-11-30T09:30:00.250+05:30`), or an RFC 3339 full date (`2026-11-30`, midnight UTC).
//! When the argument is absent, callers report all time (`since_ms = 0`).

use crate::clock::calendar::parse_rfc3339_ms;
use crate::clock::parse_duration;

/// What a bad argument is told to look like.
const EXPECTED: &str = "use a duration like 24h, 30m, 7d or an RFC 3339 time like \
    2026-11-30T00:00:00Z";

/// Parses `text` into unix milliseconds, durations counting back from `now_ms`.
///
/// # Errors
/// One line saying what is wrong and what is expected.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if looks_like_date(text) {
        return parse_rfc3339_ms(text).ok_or_else(|| format!("bad since {text:?}: {EXPECTED}"));
    }
    // The grammar's own error names the units; the timestamp form is added here. A bare
    // number is refused there too: seconds, or a unix timestamp? The unit says which.
    let back = parse_duration(text)
        .map_err(|e| format!("{e}; or an RFC 3339 time like 2026-11-30T00:00:00Z"))?;
    let back_ms = i64::try_from(back.as_millis()).expect("durations are at most 36600 days");
    Ok(now_ms.saturating_sub(back_ms).max(0))
}

/// Whether `text` starts like `YYYY-`.
fn looks_like_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 5 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
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
}
