//! Times on the command line: RFC 3339 (`2026-12-01T14:00:00Z`, `2026-12-01T15:00+01:00`),
//! a UTC date-time without zone (`2026-12-01T14:00`, `2026-12-01 14:00`), a date
//! (`2026-12-01`, midnight UTC), `now`, or relative to now (`+10m`, `+2h`, `+1d`, `+1w`,
//! `+30s`). Durations (`120s`, `2m`, `1h`) use the same units.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};

pub fn parse_duration(text: &str) -> Option<TimeDelta> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    let n: i64 = num.parse().ok()?;
    Some(match unit {
        "ms" => TimeDelta::milliseconds(n),
        "s" => TimeDelta::seconds(n),
        "m" | "min" => TimeDelta::minutes(n),
        "h" => TimeDelta::hours(n),
        "d" => TimeDelta::days(n),
        "w" => TimeDelta::weeks(n),
        _ => return None,
    })
}

pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if t == "now" {
        return Ok(now);
    }
    if let Some(rel) = t.strip_prefix('+') {
        return parse_duration(rel).map(|d| now + d).ok_or_else(|| {
            format!("{text:?}: a relative time is +N followed by s, m, h, d or w (e.g. +10m)")
        });
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(n.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 (2026-12-01T14:00:00Z), a UTC date-time (2026-12-01T14:00), now, or +10m / +2h / +1d"
    ))
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    sluice_proto::convert::timestamp(t)
}

pub fn from_timestamp(ts: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

/// `2026-12-01T14:00:00Z`, or `-` for none.
pub fn show(ts: &Option<prost_types::Timestamp>) -> String {
    from_timestamp(ts).map_or_else(
        || "-".to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// `4h`, `1d 2h`, `30m`, `45s`.
pub fn human_duration(d: TimeDelta) -> String {
    let s = d.num_seconds();
    let (days, h, m, sec) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60, s % 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if sec > 0 || parts.is_empty() {
        parts.push(format!("{sec}s"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn parses_every_form() {
        let at = |s: &str| parse_time(s, now()).unwrap().to_rfc3339();
        assert_eq!(at("now"), "2026-11-27T10:00:00+00:00");
        assert_eq!(at("+10m"), "2026-11-27T10:10:00+00:00");
        assert_eq!(at("+2h"), "2026-11-27T12:00:00+00:00");
        assert_eq!(at("+1d"), "2026-11-28T10:00:00+00:00");
        assert_eq!(at("2026-12-01T15:00:00+01:00"), "2026-12-01T14:00:00+00:00");
        assert_eq!(at("2026-12-01T14:00"), "2026-12-01T14:00:00+00:00");
        assert_eq!(at("2026-12-01 14:00"), "2026-12-01T14:00:00+00:00");
        assert_eq!(at("2026-12-01"), "2026-12-01T00:00:00+00:00");
        for bad in ["tomorrow", "+10x", "+", "2026-13-01", "12:00"] {
            assert!(parse_time(bad, now()).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s"), Some(TimeDelta::seconds(120)));
        assert_eq!(parse_duration("2m"), Some(TimeDelta::minutes(2)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(human_duration(TimeDelta::hours(4)), "4h");
        assert_eq!(human_duration(TimeDelta::seconds(93_784)), "1d 2h 3m 4s");
    }
}
