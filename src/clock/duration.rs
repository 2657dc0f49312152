//! The one duration grammar: `500ms`, `30s`, `15m`, `8h`, `30d`, `2w`, and compounds of them
//! in descending order (`1h30m`, `1s500ms`).
//!
//! Every duration the operator or an admin client writes goes through [`parse_duration`]:
//! `keys create --expires`, `keys rotate --grace`, the admin API's `expires_in` and rotate
//! `grace`, `usage --since` and `?since=`, `bench -d`, `--warmup` and `--timeout`.
//!
//! The grammar is deliberately narrow. A bare number is refused because nothing says whether
//! `60` is seconds, minutes or a unix time. Fractions are refused (`1h30m`, `1s500ms` say the
//! same exactly). No spaces, signs or long unit names, so each value has one spelling. jiff's
//! own "friendly" duration format accepts all of those, which is why the grammar is parsed
//! here and jiff is used for the calendar ([`super::calendar`]).

use std::time::Duration;

/// The longest duration accepted: 36 600 days (about 100 years), so `now + duration` stays a
/// sane unix time in every caller.
pub const MAX_DURATION: Duration = Duration::from_secs(36_600 * 86_400);

/// The longest text looked at. The longest useful spelling (`36600d23h59m59s999ms`) has 20
/// characters; anything longer is refused before parsing and is not echoed back.
const MAX_TEXT_LEN: usize = 32;

/// Units from largest to smallest, with their length in milliseconds.
const UNITS: &[(&str, u64)] = &[
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// What every refusal tells the reader to write instead.
pub const GRAMMAR: &str = "a whole number with a unit (ms, s, m, h, d or w), like 500ms, 30s, \
    15m, 24h or 30d; units combine largest first, like 1h30m";

/// Parses `text` (surrounding whitespace ignored) in the grammar above.
///
/// # Errors
/// One line naming the grammar: for a bare number, a missing or unknown unit, a unit given
/// twice or out of order, or a duration longer than [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.len() > MAX_TEXT_LEN {
        return Err(format!(
            "bad duration ({} characters, at most {MAX_TEXT_LEN}): use {GRAMMAR}",
            text.len()
        ));
    }
    let bad = || format!("bad duration {text:?}: use {GRAMMAR}");
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad duration {text:?}: a number needs a unit; use {GRAMMAR}"
        ));
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    // Index into UNITS of the last unit read: the next one must come later in the list.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let (number, tail) = rest.split_at(digits);
        // The longest matching suffix wins, so `ms` is not read as `m` and then junk.
        let (index, (unit, unit_ms)) = UNITS
            .iter()
            .enumerate()
            .filter(|(_, (unit, _))| tail.starts_with(unit))
            .max_by_key(|(_, (unit, _))| unit.len())
            .ok_or_else(bad)?;
        if last_unit.is_some_and(|last| index <= last) {
            return Err(bad());
        }
        last_unit = Some(index);
        rest = &tail[unit.len()..];
        // Too many digits to fit u64 is "too long" as surely as an overflowing product.
        let too_long = || format!("duration {text:?} is too long: at most 36600d");
        let number: u64 = number.parse().map_err(|_| too_long())?;
        total_ms = number
            .checked_mul(*unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .filter(|&ms| u128::from(ms) <= MAX_DURATION.as_millis())
            .ok_or_else(too_long)?;
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn each_unit_parses() {
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("15m"), Duration::from_secs(15 * 60));
        assert_eq!(ok("8h"), Duration::from_secs(8 * 3600));
        assert_eq!(ok("30d"), Duration::from_secs(30 * 86_400));
        assert_eq!(ok("2w"), Duration::from_secs(14 * 86_400));
        assert_eq!(ok("12h"), Duration::from_secs(12 * 3600));
        assert_eq!(ok("90m"), Duration::from_secs(90 * 60));
        assert_eq!(ok("3600s"), Duration::from_secs(3600));
        assert_eq!(ok("10s"), Duration::from_secs(10));
    }

    #[test]
    fn zero_needs_a_unit_too() {
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("0ms"), Duration::ZERO);
        assert!(parse_duration("0").is_err());
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(ok(" 1h "), Duration::from_secs(3600));
    }

    #[test]
    fn compounds_add_up_largest_unit_first() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1s500ms"), Duration::from_millis(1500));
        assert_eq!(ok("1d12h"), Duration::from_secs(36 * 3600));
        assert_eq!(
            ok("1w2d3h4m5s6ms"),
            Duration::from_millis(((9 * 24 + 3) * 3600 + 4 * 60 + 5) * 1000 + 6)
        );
    }

    #[test]
    fn compounds_out_of_order_or_repeated_are_refused() {
        for bad in ["30m1h", "1h1h", "500ms1s", "1m1w", "1s1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bare_numbers_are_refused_naming_the_grammar() {
        for bare in ["1", "3", "60", "86400"] {
            let error = parse_duration(bare).unwrap_err();
            assert!(error.contains("needs a unit"), "{bare:?}: {error}");
            assert!(error.contains("500ms") && error.contains("30d"), "{error}");
        }
    }

    #[test]
    fn junk_is_refused_on_one_line() {
        for bad in [
            "", "s", "ms", "d", "30x", "-5m", "+5m", "1.5h", "1.5s", "30 d", "1h 30m", "1 hour",
            "1hour", "h1", "PT1H", "10S", "1H", "1m30", "30s.", "1e3s", "٣s",
        ] {
            let error = parse_duration(bad).unwrap_err();
            assert!(!error.contains('\n'), "{bad:?}: {error}");
            assert!(error.contains("30d"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn the_bound_is_36600_days() {
        assert_eq!(ok("36600d"), MAX_DURATION);
        assert_eq!(ok("36500d"), Duration::from_secs(36_500 * 86_400));
        for long in ["36600d1ms", "36601d", "5229w", "878401h"] {
            let error = parse_duration(long).unwrap_err();
            assert!(error.contains("too long"), "{long:?}: {error}");
        }
    }

    #[test]
    fn overflow_is_too_long_not_a_panic() {
        for huge in [
            "99999999999999999d",
            "18446744073709551615ms",
            "18446744073709551616ms",
            "99999999999999999999999w",
        ] {
            let error = parse_duration(huge).unwrap_err();
            assert!(error.contains("too long"), "{huge:?}: {error}");
        }
    }

    #[test]
    fn long_input_is_refused_without_echoing_it() {
        let long = format!("{}s", "1".repeat(10_000));
        let error = parse_duration(&long).unwrap_err();
        assert!(error.len() < 200, "{error}");
        assert!(error.contains("at most 32"), "{error}");
    }
}
