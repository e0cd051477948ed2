//! Expanding a recurrence into its occurrences, on the wall clock of the series' time
//! zone: "every Tuesday 14:00–18:00 Europe/Rome" is 13:00–17:00 UTC in winter and
//! 12:00–16:00 UTC in summer. RFC 5545 rules go through the `rrule` crate, cron
//! expressions through `cron`; both are bounded (a rule must end, and at most
//! `MAX_OCCURRENCES` occurrences are admitted), and every refusal names the field.

use std::str::FromStr;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use sluice_model::{Error, MAX_OCCURRENCES, Occurrence, Recurrence, RecurrenceRule, TimeWindow};

const FIELD: &str = "recurrence";

/// The occurrences of `rec`, in order, each numbered from 1. Refused when the rule does
/// not parse, does not end, yields nothing or more than `MAX_OCCURRENCES`, or when one
/// occurrence would still run when the next begins.
pub fn occurrences(rec: &Recurrence) -> Result<Vec<Occurrence>, Error> {
    if rec.duration <= TimeDelta::zero() {
        return Err(Error::invalid(
            format!("{FIELD}.duration"),
            "each occurrence must last a positive time",
        ));
    }
    let (tz, starts) = match &rec.rule {
        RecurrenceRule::ICalendar(text) => ical_starts(text)?,
        RecurrenceRule::Cron {
            expr,
            tz,
            from,
            count,
            until,
            exdates,
        } => {
            let tz = time_zone(tz, &format!("{FIELD}.tz"))?;
            (tz, cron_starts(expr, tz, *from, *count, *until, exdates)?)
        }
    };
    if starts.is_empty() {
        return Err(Error::invalid(FIELD, "the rule yields no occurrence"));
    }
    let mut out: Vec<Occurrence> = Vec::with_capacity(starts.len());
    for (i, local_start) in starts.into_iter().enumerate() {
        let start = utc_of(tz, local_start).ok_or_else(|| {
            Error::invalid(FIELD, format!("{local_start} does not exist in {tz}"))
        })?;
        // The end on the wall clock; where that instant does not exist (a spring-forward
        // gap), the same length in absolute time.
        let end = utc_of(tz, local_start + rec.duration)
            .filter(|&e| e > start)
            .unwrap_or(start + rec.duration);
        let number = i as u32 + 1;
        if let Some(prev) = out.last()
            && start < prev.window.end
        {
            return Err(Error::invalid(
                format!("{FIELD}.duration"),
                format!(
                    "occurrence {number} ({local_start}) begins before occurrence {} ends: \
                     each lasts longer than the gap between them",
                    prev.number
                ),
            ));
        }
        let window = TimeWindow::new(start, end).map_err(|e| e.within(FIELD))?;
        out.push(Occurrence {
            number,
            window,
            local_start,
        });
    }
    Ok(out)
}

fn time_zone(name: &str, field: &str) -> Result<Tz, Error> {
    Tz::from_str(name).map_err(|_| {
        Error::invalid(
            field,
            format!("{name:?} is not an IANA time zone (such as Europe/Rome or UTC)"),
        )
    })
}

/// The instant of a wall-clock time; of the two on a fall-back day, the first.
fn utc_of(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

/// The instant rrule gives a start at `time` on `date` in `zone`: the wall-clock time
/// where it exists once (of two on a fall-back day, the first), else midnight plus
/// `time` (in a spring-forward gap, later by the gap); `None` where midnight itself
/// repeats or is skipped, where rrule drops the day.
fn rrule_instant(zone: Tz, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    if let LocalResult::Single(t) = zone.from_local_datetime(&date.and_time(time)) {
        return Some(t.with_timezone(&Utc));
    }
    let midnight = zone
        .from_local_datetime(&date.and_time(NaiveTime::MIN))
        .single()?;
    Some((midnight + (time - NaiveTime::MIN)).with_timezone(&Utc))
}

fn too_many() -> Error {
    Error::invalid(
        FIELD,
        format!("the rule yields more than {MAX_OCCURRENCES} occurrences; book a shorter series"),
    )
}

/// Local start times of an RFC 5545 rule, and its time zone.
fn ical_starts(text: &str) -> Result<(Tz, Vec<NaiveDateTime>), Error> {
    let text = text.trim().replace("\r\n", "\n");
    let set = rrule::RRuleSet::from_str(&text)
        .map_err(|e| Error::invalid(format!("{FIELD}.rrule"), e.to_string()))?;
    if set.get_rrule().is_empty() {
        return Err(Error::invalid(
            format!("{FIELD}.rrule"),
            "an RRULE line is required",
        ));
    }
    if set
        .get_rrule()
        .iter()
        .any(|r| r.get_count().is_none() && r.get_until().is_none())
    {
        return Err(Error::invalid(
            format!("{FIELD}.rrule"),
            "the RRULE never ends: give COUNT or UNTIL",
        ));
    }
    let tz = match set.get_dt_start().timezone() {
        rrule::Tz::Tz(tz) => tz,
        rrule::Tz::Local(_) => {
            return Err(Error::invalid(
                format!("{FIELD}.rrule"),
                "DTSTART needs a time zone (DTSTART;TZID=Europe/Rome:...) or UTC (a final Z)",
            ));
        }
    };
    let result = set.all(MAX_OCCURRENCES as u16 + 1);
    if result.dates.len() > MAX_OCCURRENCES {
        return Err(too_many());
    }
    Ok((tz, result.dates.iter().map(|d| d.naive_local()).collect()))
}

/// Local start times of a five-field cron expression in `tz`.
fn cron_starts(
    expr: &str,
    tz: Tz,
    from: DateTime<Utc>,
    count: Option<u32>,
    until: Option<DateTime<Utc>>,
    exdates: &[NaiveDate],
) -> Result<Vec<NaiveDateTime>, Error> {
    let field = format!("{FIELD}.cron");
    if count.is_none() && until.is_none() {
        return Err(Error::invalid(
            field,
            "a cron series must end: give a count or an until date",
        ));
    }
    let schedule = cron::Schedule::from_str(&to_cron_crate(expr)?)
        .map_err(|e| Error::invalid(&field, format!("{expr:?}: {e}")))?;
    let limit = count.map_or(MAX_OCCURRENCES + 1, |c| c as usize);
    let mut out = Vec::new();
    // `after` is exclusive: start a millisecond early so that `from` itself counts.
    let first = (from - TimeDelta::milliseconds(1)).with_timezone(&tz);
    for t in schedule.after(&first) {
        if until.is_some_and(|u| t.with_timezone(&Utc) > u) || out.len() >= limit {
            break;
        }
        if exdates.contains(&t.date_naive()) {
            continue;
        }
        out.push(t.naive_local());
        if out.len() > MAX_OCCURRENCES {
            return Err(too_many());
        }
    }
    Ok(out)
}

/// Standard cron (five fields, Sunday 0 or 7) in the `cron` crate's form: a seconds
/// field first, and days of the week by name (the crate counts Sunday as 1).
fn to_cron_crate(expr: &str) -> Result<String, Error> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(Error::invalid(
            format!("{FIELD}.cron"),
            format!(
                "{expr:?} has {} fields; cron takes five: minute hour day-of-month month day-of-week",
                fields.len()
            ),
        ));
    }
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let day = |d: &str| -> Result<String, Error> {
        match d.parse::<usize>() {
            Ok(n) if n < NAMES.len() => Ok(NAMES[n].to_string()),
            Ok(_) => Err(Error::invalid(
                format!("{FIELD}.cron"),
                format!("day of week {d} is out of range 0-7"),
            )),
            Err(_) => Ok(d.to_string()),
        }
    };
    let mut days = Vec::new();
    for part in fields[4].split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let range = match range.split_once('-') {
            Some((a, b)) => format!("{}-{}", day(a)?, day(b)?),
            None => day(range)?,
        };
        days.push(match step {
            Some(s) => format!("{range}/{s}"),
            None => range,
        });
    }
    Ok(format!(
        "0 {} {} {} {} {}",
        fields[0],
        fields[1],
        fields[2],
        fields[3],
        days.join(",")
    ))
}

/// How a weekly series ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    Count(u32),
    /// The last local date an occurrence may start on.
    Date(NaiveDate),
}

/// The RFC 5545 rule for "every `days` from `start` for `length`, in `tz`", the first
/// occurrence being the first such day at or after `from` (local) whose start is not
/// yet past. What `sluice reserve --every tue 14:00-18:00 --tz Europe/Rome` sends.
pub fn weekly(
    days: &[Weekday],
    start: NaiveTime,
    tz: &str,
    from: DateTime<Utc>,
    until: Until,
    skip: &[NaiveDate],
) -> Result<RecurrenceRule, Error> {
    if days.is_empty() {
        return Err(Error::missing(format!("{FIELD}.days")));
    }
    let zone = time_zone(tz, &format!("{FIELD}.tz"))?;
    if let Until::Count(n) = until {
        if n == 0 {
            return Err(Error::invalid(
                format!("{FIELD}.count"),
                "count must be at least 1",
            ));
        }
        if n as usize > MAX_OCCURRENCES {
            return Err(too_many());
        }
    }
    // The requested days from `from`'s local date on, each with the instant rrule will
    // give its start; the first is the first not yet past.
    let mut date = from.with_timezone(&zone).date_naive();
    let mut series: Vec<(NaiveDate, Option<DateTime<Utc>>)> = Vec::new();
    // Ten years of days bound the walk (MAX_OCCURRENCES weekly is ten years).
    for _ in 0..(MAX_OCCURRENCES * 7 + 7) {
        if days.contains(&date.weekday()) {
            let at = rrule_instant(zone, date, start);
            if !series.is_empty() || at.is_none_or(|t| t >= from) {
                series.push((date, at));
            }
        }
        let enough = match until {
            Until::Count(n) => series.len() >= n as usize,
            Until::Date(last) => date >= last,
        };
        if enough {
            break;
        }
        date = date
            .succ_opt()
            .ok_or_else(|| Error::invalid(FIELD, "date out of range"))?;
    }
    let Some(&(first_date, _)) = series.first() else {
        return Err(Error::invalid(FIELD, "the rule yields no occurrence"));
    };
    // On a day whose midnight repeats or is skipped (a few zones change their clocks at
    // midnight), rrule cannot place a start it finds ambiguous or missing, and drops
    // the day without a word: refuse rather than book fewer occurrences than asked.
    if let Some((d, _)) = series.iter().find(|(_, at)| at.is_none()) {
        return Err(Error::invalid(
            format!("{FIELD}.tz"),
            format!(
                "{d} {start} cannot be placed in {tz}: its clocks change at midnight that \
                 day; choose another start time"
            ),
        ));
    }
    let first = first_date.and_time(start);
    let byday: Vec<&str> = days.iter().map(|d| ical_day(*d)).collect();
    // A DTSTART on a fall-back day's repeated hour is ambiguous, and one in a
    // spring-forward gap does not exist: rrule refuses both (later occurrences there
    // take the first of the two, or move forward by the gap, as RFC 5545 says). Such a
    // rule starts at the requested day before (a plain time: clock changes are months
    // apart), with that start excluded.
    let moved = !matches!(zone.from_local_datetime(&first), LocalResult::Single(_));
    let mut dtstart = first;
    if moved {
        dtstart -= TimeDelta::days(1);
        while !days.contains(&dtstart.weekday()) {
            dtstart -= TimeDelta::days(1);
        }
    }
    let end = match until {
        // The excluded earlier start counts.
        Until::Count(n) => format!("COUNT={}", n + u32::from(moved)),
        // UNTIL in the rule's time zone is a local date-time (RFC 5545 allows it with
        // TZID on DTSTART only in UTC; the end of the local day, in UTC, is exact).
        Until::Date(d) => {
            let last = d
                .and_hms_opt(23, 59, 59)
                .and_then(|t| utc_of(zone, t))
                .ok_or_else(|| Error::invalid(format!("{FIELD}.until"), "date out of range"))?;
            format!("UNTIL={}", last.format("%Y%m%dT%H%M%SZ"))
        }
    };
    let mut text = format!(
        "DTSTART;TZID={tz}:{}\nRRULE:FREQ=WEEKLY;BYDAY={};{end}",
        dtstart.format("%Y%m%dT%H%M%S"),
        byday.join(",")
    );
    // Exclusions as instants (UTC): a local time on a fall-back day's repeated hour
    // would be ambiguous, and rrule refuses it.
    let mut excluded: Vec<DateTime<Utc>> = skip
        .iter()
        .filter_map(|d| rrule_instant(zone, *d, start))
        .collect();
    if moved {
        excluded.extend(utc_of(zone, dtstart));
    }
    for t in excluded {
        text.push_str(&format!("\nEXDATE:{}", t.format("%Y%m%dT%H%M%SZ")));
    }
    Ok(RecurrenceRule::ICalendar(text))
}

fn ical_day(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

/// Parses `tue 14:00-18:00` or `mon,wed,fri 09:30-11:00`: the days, the start, and the
/// length (an end at or before the start runs past midnight).
pub fn parse_weekly_slot(spec: &str) -> Result<(Vec<Weekday>, NaiveTime, TimeDelta), Error> {
    let field = format!("{FIELD}.every");
    let bad = |why: String| Error::invalid(&field, format!("{spec:?}: {why}"));
    let mut words = spec.split_whitespace();
    let (Some(days), Some(times), None) = (words.next(), words.next(), words.next()) else {
        return Err(bad(
            "expected days and a time range, such as \"tue 14:00-18:00\"".into(),
        ));
    };
    let days = days
        .split(',')
        .map(|d| Weekday::from_str(d).map_err(|_| bad(format!("{d:?} is not a day of the week"))))
        .collect::<Result<Vec<_>, _>>()?;
    let (a, b) = times.split_once('-').ok_or_else(|| {
        bad("the time range needs a start and an end, such as 14:00-18:00".into())
    })?;
    let time = |s: &str| {
        NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| bad(format!("{s:?} is not HH:MM")))
    };
    let (start, end) = (time(a)?, time(b)?);
    let mut length = end - start;
    if length <= TimeDelta::zero() {
        length += TimeDelta::days(1);
    }
    Ok((days, start, length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ical(text: &str, hours: i64) -> Result<Vec<Occurrence>, Error> {
        occurrences(&Recurrence {
            rule: RecurrenceRule::ICalendar(text.into()),
            duration: TimeDelta::hours(hours),
        })
    }

    fn starts(occ: &[Occurrence]) -> Vec<String> {
        occ.iter()
            .map(|o| o.window.start.format("%Y-%m-%dT%H:%MZ").to_string())
            .collect()
    }

    #[test]
    fn fourteen_hundred_stays_fourteen_hundred_across_both_changes() {
        // Rome leaves summer time on 2026-10-25 and enters it on 2027-03-28.
        let occ = ical(
            "DTSTART;TZID=Europe/Rome:20261020T140000\nRRULE:FREQ=WEEKLY;COUNT=2",
            4,
        )
        .unwrap();
        assert_eq!(starts(&occ), ["2026-10-20T12:00Z", "2026-10-27T13:00Z"]);
        assert!(
            occ.iter()
                .all(|o| o.local_start.time() == NaiveTime::from_hms_opt(14, 0, 0).unwrap())
        );
        assert!(
            occ.iter()
                .all(|o| o.window.end - o.window.start == TimeDelta::hours(4))
        );
        let occ = ical(
            "DTSTART;TZID=Europe/Rome:20270323T140000\nRRULE:FREQ=WEEKLY;COUNT=2",
            4,
        )
        .unwrap();
        assert_eq!(starts(&occ), ["2027-03-23T13:00Z", "2027-03-30T12:00Z"]);
    }

    #[test]
    fn an_occurrence_spanning_the_change_keeps_its_wall_clock_end() {
        // 00:00–06:00 on the night Rome falls back (03:00 → 02:00): seven real hours.
        let occ = ical(
            "DTSTART;TZID=Europe/Rome:20261025T000000\nRRULE:FREQ=DAILY;COUNT=1",
            6,
        )
        .unwrap();
        assert_eq!(occ[0].window.end - occ[0].window.start, TimeDelta::hours(7));
        // ...and five on the night it springs forward.
        let occ = ical(
            "DTSTART;TZID=Europe/Rome:20270328T000000\nRRULE:FREQ=DAILY;COUNT=1",
            6,
        )
        .unwrap();
        assert_eq!(occ[0].window.end - occ[0].window.start, TimeDelta::hours(5));
    }

    #[test]
    fn count_until_and_exdate() {
        let occ = ical(
            "DTSTART;TZID=Europe/Rome:20261201T140000\nRRULE:FREQ=WEEKLY;UNTIL=20261222T230000Z",
            4,
        )
        .unwrap();
        assert_eq!(occ.len(), 4, "Dec 1, 8, 15, 22");
        let occ = ical(
            "DTSTART;TZID=Europe/Rome:20261201T140000\nRRULE:FREQ=WEEKLY;COUNT=4\n\
             EXDATE;TZID=Europe/Rome:20261208T140000",
            4,
        )
        .unwrap();
        assert_eq!(
            starts(&occ),
            [
                "2026-12-01T13:00Z",
                "2026-12-15T13:00Z",
                "2026-12-22T13:00Z"
            ],
            "COUNT counts the skipped date too, as RFC 5545 says"
        );
        assert_eq!(occ.iter().map(|o| o.number).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn unbounded_oversized_overlapping_and_malformed_rules_are_refused() {
        let e = ical(
            "DTSTART;TZID=Europe/Rome:20261201T140000\nRRULE:FREQ=WEEKLY",
            4,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("recurrence.rrule"));
        assert!(e.message.contains("COUNT or UNTIL"), "{e}");
        let e = ical("DTSTART:20261201T140000Z\nRRULE:FREQ=DAILY;COUNT=521", 1).unwrap_err();
        assert!(e.message.contains("more than 520"), "{e}");
        assert!(ical("DTSTART:20261201T140000Z\nRRULE:FREQ=DAILY;COUNT=520", 1).is_ok());
        let e = ical("DTSTART:20261201T140000Z\nRRULE:FREQ=DAILY;COUNT=3", 25).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("recurrence.duration"));
        assert!(e.message.contains("occurrence 2"), "{e}");
        let e = ical("DTSTART:20261201T140000Z\nRRULE:FREQ=SOMETIMES;COUNT=3", 1).unwrap_err();
        assert_eq!(e.code, sluice_model::ErrorCode::InvalidParameter);
        assert_eq!(e.field.as_deref(), Some("recurrence.rrule"));
        let e = ical("DTSTART:20261201T140000Z\nRRULE:FREQ=DAILY;COUNT=3", 0).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("recurrence.duration"));
    }

    fn cron(
        expr: &str,
        from: &str,
        count: Option<u32>,
        until: Option<&str>,
    ) -> Result<Vec<Occurrence>, Error> {
        occurrences(&Recurrence {
            rule: RecurrenceRule::Cron {
                expr: expr.into(),
                tz: "Europe/Rome".into(),
                from: utc(from),
                count,
                until: until.map(utc),
                exdates: vec![NaiveDate::from_ymd_opt(2026, 12, 8).unwrap()],
            },
            duration: TimeDelta::hours(4),
        })
    }

    #[test]
    fn cron_counts_sunday_as_zero_and_skips_exdates() {
        // 2026-12-01 is a Tuesday: day 2 in cron.
        let by_number = cron("0 14 * * 2", "2026-12-01T00:00:00Z", Some(3), None).unwrap();
        let by_name = cron("0 14 * * TUE", "2026-12-01T00:00:00Z", Some(3), None).unwrap();
        assert_eq!(by_number, by_name);
        assert_eq!(
            starts(&by_name),
            [
                "2026-12-01T13:00Z",
                "2026-12-15T13:00Z",
                "2026-12-22T13:00Z"
            ]
        );
        let sundays = cron("30 9 * * 0", "2026-12-01T00:00:00Z", Some(1), None).unwrap();
        assert_eq!(sundays[0].local_start.weekday(), Weekday::Sun);
        let weekdays = cron(
            "0 8 * * 1-5",
            "2026-12-07T00:00:00Z",
            None,
            Some("2026-12-11T23:00:00Z"),
        )
        .unwrap();
        assert_eq!(weekdays.len(), 4, "Mon 7 to Fri 11 less the 8th");
        let e = cron("0 14 * * TUE", "2026-12-01T00:00:00Z", None, None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("recurrence.cron"));
        let e = cron("0 14 * TUE", "2026-12-01T00:00:00Z", Some(2), None).unwrap_err();
        assert!(e.message.contains("five"), "{e}");
        let e = cron("0 14 * * 9", "2026-12-01T00:00:00Z", Some(2), None).unwrap_err();
        assert!(e.message.contains("0-7"), "{e}");
    }

    #[test]
    fn weekly_sugar_starts_at_the_first_matching_day_still_ahead() {
        let (days, start, length) = parse_weekly_slot("tue 14:00-18:00").unwrap();
        assert_eq!(
            (days.as_slice(), length),
            (&[Weekday::Tue][..], TimeDelta::hours(4))
        );
        // Tuesday 2026-12-01 at 15:00 Rome: today's slot has begun, so the 8th is first.
        let rule = weekly(
            &days,
            start,
            "Europe/Rome",
            utc("2026-12-01T14:00:00Z"),
            Until::Count(10),
            &[],
        )
        .unwrap();
        let occ = occurrences(&Recurrence {
            rule,
            duration: length,
        })
        .unwrap();
        assert_eq!(occ.len(), 10);
        assert_eq!(occ[0].local_start.to_string(), "2026-12-08 14:00:00");
        // Until a date: that date's occurrence is included.
        let rule = weekly(
            &days,
            start,
            "Europe/Rome",
            utc("2026-12-01T00:00:00Z"),
            Until::Date(NaiveDate::from_ymd_opt(2026, 12, 15).unwrap()),
            &[NaiveDate::from_ymd_opt(2026, 12, 8).unwrap()],
        )
        .unwrap();
        let occ = occurrences(&Recurrence {
            rule,
            duration: length,
        })
        .unwrap();
        assert_eq!(starts(&occ), ["2026-12-01T13:00Z", "2026-12-15T13:00Z"]);
        let (_, _, overnight) = parse_weekly_slot("fri 22:00-02:00").unwrap();
        assert_eq!(overnight, TimeDelta::hours(4));
        assert!(parse_weekly_slot("someday 14:00-18:00").is_err());
        assert!(parse_weekly_slot("tue 14:00").is_err());
        let e = weekly(
            &days,
            start,
            "Mars/Olympus",
            utc("2026-12-01T00:00:00Z"),
            Until::Count(1),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("recurrence.tz"));
        // Starting on a fall-back day's repeated hour: the first of the two, and the
        // same wall-clock time a week later.
        let rule = weekly(
            &[Weekday::Sun],
            NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
            "Europe/Rome",
            utc("2027-10-30T00:00:00Z"),
            Until::Count(2),
            &[],
        )
        .unwrap();
        let occ = occurrences(&Recurrence {
            rule,
            duration: TimeDelta::hours(1),
        })
        .unwrap();
        assert_eq!(starts(&occ), ["2027-10-31T00:30Z", "2027-11-07T01:30Z"]);
        let sun_0230 = |from: &str, skip: &[NaiveDate]| {
            weekly(
                &[Weekday::Sun],
                NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
                "Europe/Rome",
                utc(from),
                Until::Count(2),
                skip,
            )
            .and_then(|rule| {
                occurrences(&Recurrence {
                    rule,
                    duration: TimeDelta::hours(1),
                })
            })
        };
        // Asked during the second pass of the repeated hour, after the first 02:30: the
        // first start is a week later, never before the request.
        let occ = sun_0230("2027-10-31T01:10:00Z", &[]).unwrap();
        assert_eq!(starts(&occ), ["2027-11-07T01:30Z", "2027-11-14T01:30Z"]);
        // Skipping that ambiguous day works (as an instant) and still counts two.
        let day = NaiveDate::from_ymd_opt(2027, 10, 31).unwrap();
        let occ = sun_0230("2027-10-30T00:00:00Z", &[day]).unwrap();
        assert_eq!(starts(&occ), ["2027-11-07T01:30Z"]);
        // Starting in a spring-forward gap (Sydney, 2027-10-03 02:00 → 03:00): moved
        // forward by the gap, and the same wall-clock time a week later.
        let occ = weekly(
            &[Weekday::Sun],
            NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
            "Australia/Sydney",
            utc("2027-10-01T00:00:00Z"),
            Until::Count(2),
            &[],
        )
        .and_then(|rule| {
            occurrences(&Recurrence {
                rule,
                duration: TimeDelta::hours(1),
            })
        })
        .unwrap();
        assert_eq!(starts(&occ), ["2027-10-02T16:30Z", "2027-10-09T15:30Z"]);
        // Where midnight itself repeats (the Azores fall back at 01:00 to 00:00), rrule
        // would drop the day: refused, naming it, instead of booking fewer.
        let e = weekly(
            &[Weekday::Sun],
            NaiveTime::from_hms_opt(0, 30, 0).unwrap(),
            "Atlantic/Azores",
            utc("2027-10-20T00:00:00Z"),
            Until::Count(3),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("recurrence.tz"));
        assert!(e.message.contains("2027-10-31"), "{e}");
        assert!(
            weekly(
                &[Weekday::Sun],
                start,
                "UTC",
                utc("2027-10-20T00:00:00Z"),
                Until::Count(u32::MAX),
                &[],
            )
            .is_err()
        );
    }

    proptest! {
        /// Whatever the weekly slot and zone, every occurrence starts at the same wall-
        /// clock time on a requested day, they are in order and never overlap, and
        /// there are as many as asked.
        #[test]
        fn weekly_occurrences_keep_their_wall_clock_time(
            day_mask in 1u8..128,
            hour in 0u32..24, minute in prop::sample::select(vec![0u32, 15, 30, 45]),
            hours in 1i64..48,
            count in 1u32..60,
            zone in prop::sample::select(vec!["Europe/Rome", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "UTC", "America/Havana", "Atlantic/Azores"]),
            from_days in 0i64..400,
        ) {
            let days: Vec<Weekday> = (0..7).filter(|i| day_mask & (1 << i) != 0)
                .map(|i| Weekday::try_from(i as u8).unwrap()).collect();
            let start = NaiveTime::from_hms_opt(hour, minute, 0).unwrap();
            let from = utc("2026-11-27T00:00:00Z") + TimeDelta::days(from_days);
            let expanded = weekly(&days, start, zone, from, Until::Count(count), &[])
                .and_then(|rule| occurrences(&Recurrence { rule, duration: TimeDelta::hours(hours) }));
            match expanded {
                Ok(occ) => {
                    prop_assert_eq!(occ.len(), count as usize);
                    for w in occ.windows(2) {
                        prop_assert!(w[0].window.end <= w[1].window.start);
                    }
                    for o in &occ {
                        prop_assert!(days.contains(&o.local_start.weekday()));
                        let tz = time_zone(zone, "tz").unwrap();
                        let asked = o.local_start.date().and_time(start);
                        if tz.from_local_datetime(&asked) == LocalResult::None {
                            // In a spring-forward gap RFC 5545 reads the time with the
                            // offset before the gap: it moves forward by the gap.
                            prop_assert!(o.local_start > asked);
                            prop_assert!(o.local_start - asked <= TimeDelta::hours(1));
                        } else {
                            prop_assert_eq!(o.local_start.time(), start);
                        }
                        prop_assert_eq!(o.window.start.with_timezone(&tz).naive_local(), o.local_start);
                        prop_assert!(o.window.start >= from);
                    }
                }
                Err(e) => {
                    // Refused only because consecutive occurrences would overlap, or a
                    // start falls into a spring-forward gap, or on a day whose midnight
                    // repeats or is skipped.
                    prop_assert!(e.message.contains("begins before") || e.message.contains("does not exist") || e.message.contains("cannot be placed"), "{}", e);
                }
            }
        }
    }
}
