//! The refresh-interval grammar: `0`, or one or more `<digits><unit>` parts with units
//! `h`, `m`, `s` in that order, each at most once (`30s`, `15m`, `1h`, `1h30m`, `2h5m10s`).

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_rank = 0u8;
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let (rank, seconds) = match c {
            'h' => (1, 3600),
            'm' => (2, 60),
            's' => (3, 1),
            other => return Err(format!("unknown unit {other:?}; use h, m or s")),
        };
        if digits.is_empty() {
            return Err(format!("unit {c:?} has no number before it"));
        }
        if rank <= last_rank {
            return Err("units must appear once each, in the order h, m, s".into());
        }
        last_rank = rank;
        let n: u64 = digits.parse().map_err(|_| "number too large".to_string())?;
        total = n
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or("duration too large")?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!("{digits:?} has no unit; use h, m or s"));
    }
    if total > 366 * 24 * 3600 {
        return Err("longer than a year".into());
    }
    Ok(Duration::from_secs(total))
}

/// The canonical form (`1h30m`, `45s`, `0`), the inverse of [`parse_duration`].
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return "0".into();
    }
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        for (text, secs) in [
            ("0", 0),
            ("30s", 30),
            ("15m", 900),
            ("1h", 3600),
            ("1h30m", 5400),
            ("2h5m10s", 7510),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
            assert_eq!(
                parse_duration(&format_duration(Duration::from_secs(secs))),
                Ok(Duration::from_secs(secs))
            );
        }
    }

    #[test]
    fn rejects_everything_else() {
        for text in [
            "",
            "1",
            "1d",
            "h",
            "1.5h",
            "-1h",
            "30m1h",
            "1h1h",
            "1 h",
            "10ms",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(text).is_err(), "{text} should be rejected");
        }
    }
}
