//! Times: the canonical rendering (`2023-04-14T05:39:08.406Z`), a fast exact
//! parser for it, and the bounds the query commands accept.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const MS_PER_DAY: i64 = 86_400_000;

/// Formats ms since the epoch as RFC 3339 UTC with milliseconds
/// (`2023-04-14T05:39:08.406Z`). Years outside 0..=9999 are rendered as
/// the number of ms.
pub fn format_ms(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return ms.to_string();
    }
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Parses exactly the rendering of [`format_ms`]; `None` for anything else
/// (including impossible dates), so that `format_ms(parse) == text`.
pub(crate) fn parse_canonical_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, m, s, milli) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * MS_PER_DAY + ((h * 60 + m) * 60 + s) * 1000 + milli)
}

/// The event time of a `timestamp` text: the canonical form fast, any other
/// RFC 3339 text through the `time` crate.
pub(crate) fn timestamp_ms(text: &str) -> Option<i64> {
    parse_canonical_ms(text).or_else(|| {
        let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
    })
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses a `--since`/`--until` bound into ms since the epoch:
///
/// - RFC 3339: `2025-11-25T19:46:40Z`, `2025-11-25T19:46:40.5+01:00`;
/// - a UTC date: `2025-11-25` (its midnight);
/// - an age relative to `now_ms`: `90s`, `15m`, `24h`, `7d`, `2w`;
/// - ms since the epoch: `1764100000018`.
pub fn parse_time_bound(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Some(ms) = timestamp_ms(text) {
        return Ok(ms);
    }
    if text.len() == 10 {
        if let Some(ms) = parse_canonical_ms(&format!("{text}T00:00:00.000Z")) {
            return Ok(ms);
        }
    }
    if let Some(unit) = text.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        let unit_ms: i64 = match unit {
            's' => 1000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => MS_PER_DAY,
            'w' => 7 * MS_PER_DAY,
            _ => 0,
        };
        if let Ok(n) = text[..text.len() - 1].parse::<i64>() {
            if unit_ms > 0 && n >= 0 {
                return n
                    .checked_mul(unit_ms)
                    .map(|age| now_ms.saturating_sub(age))
                    .ok_or_else(|| format!("{text:?}: too far back"));
            }
        }
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(ms) = text.parse::<i64>() {
            return Ok(ms);
        }
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 (2025-11-25T19:46:40Z), a date (2025-11-25), \
         an age (90s, 15m, 24h, 7d, 2w) or ms since the epoch"
    ))
}

/// Now, in milliseconds since the Unix epoch (0 before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_round_trip() {
        for ms in [
            0,
            1_681_450_748_406,
            -1,
            -86_400_001,
            951_782_400_000, // 2000-02-29
            253_402_300_799_999,
        ] {
            let text = format_ms(ms);
            assert_eq!(parse_canonical_ms(&text), Some(ms), "{text}");
        }
        assert_eq!(format_ms(1_681_450_748_406), "2023-04-14T05:39:08.406Z");
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        for bad in [
            "2023-02-29T00:00:00.000Z",
            "2023-13-01T00:00:00.000Z",
            "2023-04-14T24:00:00.000Z",
            "2023-04-14T05:39:08.406+00:00",
            "2023-04-14T05:39:08Z",
            "2023-04-14 05:39:08.406Z",
        ] {
            assert_eq!(parse_canonical_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn agrees_with_the_time_crate() {
        let mut ms = -5_000_000_000_000i64;
        while ms < 5_000_000_000_000 {
            let ours = format_ms(ms);
            let theirs = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap()
                .format(&time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                ))
                .unwrap();
            assert_eq!(ours, theirs);
            ms += 7_777_777_777;
        }
    }

    #[test]
    fn bounds() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time_bound("24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_time_bound("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time_bound("15m", now), Ok(now - 900_000));
        assert_eq!(
            parse_time_bound("2023-04-14T05:39:08.406Z", now),
            Ok(1_681_450_748_406)
        );
        assert_eq!(
            parse_time_bound("2023-04-14T07:39:08+02:00", now),
            Ok(1_681_450_748_000)
        );
        assert_eq!(parse_time_bound("2023-04-14", now), Ok(1_681_430_400_000));
        assert_eq!(
            parse_time_bound("1681450748406", now),
            Ok(1_681_450_748_406)
        );
        assert!(parse_time_bound("yesterday", now).is_err());
        assert!(parse_time_bound("-3h", now).is_err());
    }
}
