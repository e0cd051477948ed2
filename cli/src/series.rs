//! Recurring bookings from the shell: `reserve --every/--cron/--rrule`, `occurrences`,
//! and `series show|commit|cancel|export`.

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sluice_model::{Error, RecurrenceRule};
use sluice_proto::v1;
use sluice_scheduler::recurrence::{Until, parse_weekly_slot, weekly};

use crate::output::{reservation_json, states};
use crate::time::{from_timestamp, timestamp};

/// How a booking repeats (any of --every, --cron, --rrule makes it a series).
#[derive(Args, Default)]
pub struct RecurrenceArgs {
    /// Repeat weekly: days and a local time range, e.g. `--every tue 14:00-18:00` or
    /// `--every mon,thu 09:30-11:00`, from --start on (default: now).
    #[arg(long, num_args = 2, value_names = ["DAYS", "FROM-TO"], conflicts_with_all = ["cron", "rrule"])]
    every: Vec<String>,
    /// Repeat on a five-field cron schedule (minute hour day month weekday; Sunday 0 or
    /// 7), e.g. '0 14 * * TUE'; needs --for.
    #[arg(long, conflicts_with = "rrule", requires = "length")]
    cron: Option<String>,
    /// An RFC 5545 rule: DTSTART;TZID=...:..., RRULE with COUNT or UNTIL, EXDATE lines
    /// (newlines or `\n`); needs --for.
    #[arg(long, requires = "length")]
    rrule: Option<String>,
    /// Each occurrence's length for --cron and --rrule, e.g. 4h or 90m.
    #[arg(long = "for", id = "length", value_parser = crate::parse_duration_arg)]
    length: Option<TimeDelta>,
    /// The time zone --every and --cron count in (IANA, e.g. Europe/Rome).
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// How many occurrences (--every, --cron).
    #[arg(long, conflicts_with = "until")]
    count: Option<u32>,
    /// The last local date an occurrence may start on, YYYY-MM-DD (--every, --cron).
    #[arg(long)]
    until: Option<String>,
    /// Leave out this local date, YYYY-MM-DD (repeat; --every, --cron).
    #[arg(long = "skip")]
    skip: Vec<String>,
    /// Put each occurrence on its own best path, instead of one path for all.
    #[arg(long)]
    allow_path_change: bool,
    /// Book the occurrences that fit and record the others, instead of booking none.
    #[arg(long)]
    skip_conflicts: bool,
}

fn date(text: &str, field: &str) -> Result<NaiveDate, Error> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| Error::invalid(field, format!("{text:?} is not a date (YYYY-MM-DD)")))
}

impl RecurrenceArgs {
    pub fn is_series(&self) -> bool {
        !self.every.is_empty() || self.cron.is_some() || self.rrule.is_some()
    }

    /// The recurrence on the wire; `from` is when counting starts (--start, or now).
    pub fn recurrence(&self, from: DateTime<Utc>) -> Result<v1::Recurrence, Error> {
        let skip = self
            .skip
            .iter()
            .map(|d| date(d, "skip"))
            .collect::<Result<Vec<_>, _>>()?;
        let ends = || -> Result<(), Error> {
            if self.count.is_none() && self.until.is_none() {
                return Err(Error::field(
                    sluice_model::ErrorCode::MissingParameter,
                    "count",
                    "a series must end: give --count N or --until YYYY-MM-DD",
                ));
            }
            Ok(())
        };
        if !self.every.is_empty() {
            ends()?;
            let (days, start, length) = parse_weekly_slot(&self.every.join(" "))?;
            let until = match (self.count, &self.until) {
                (Some(n), _) => Until::Count(n),
                (None, Some(d)) => Until::Date(date(d, "until")?),
                (None, None) => unreachable!("checked above"),
            };
            let RecurrenceRule::ICalendar(text) =
                weekly(&days, start, &self.tz, from, until, &skip)?
            else {
                unreachable!("weekly writes an RFC 5545 rule")
            };
            return Ok(v1::Recurrence {
                rule: Some(v1::recurrence::Rule::Ical(text)),
                duration_seconds: length.num_seconds(),
            });
        }
        let length = self.length.ok_or_else(|| Error::missing("for"))?;
        let rule = if let Some(expr) = &self.cron {
            ends()?;
            let until = match &self.until {
                Some(d) => {
                    let tz: Tz = self.tz.parse().map_err(|_| {
                        Error::invalid("tz", format!("{:?} is not an IANA time zone", self.tz))
                    })?;
                    let last = date(d, "until")?
                        .and_hms_opt(23, 59, 59)
                        .expect("valid time");
                    tz.from_local_datetime(&last)
                        .earliest()
                        .map(|t| timestamp(t.with_timezone(&Utc)))
                }
                None => None,
            };
            v1::recurrence::Rule::Cron(v1::CronRule {
                expression: expr.clone(),
                time_zone: self.tz.clone(),
                from: Some(timestamp(from)),
                count: self.count,
                until,
                skip_dates: skip.iter().map(|d| d.to_string()).collect(),
            })
        } else {
            let text = self.rrule.clone().ok_or_else(|| Error::missing("rrule"))?;
            v1::recurrence::Rule::Ical(text.replace("\\n", "\n"))
        };
        Ok(v1::Recurrence {
            rule: Some(rule),
            duration_seconds: length.num_seconds(),
        })
    }

    pub fn request(
        &self,
        criteria: v1::Criteria,
        from: DateTime<Utc>,
    ) -> Result<v1::ReserveSeriesRequest, Error> {
        Ok(v1::ReserveSeriesRequest {
            verify_each: None,
            criteria: Some(criteria),
            recurrence: Some(self.recurrence(from)?),
            allow_path_change: self.allow_path_change,
            skip_conflicts: self.skip_conflicts,
        })
    }
}

#[derive(Subcommand)]
pub enum SeriesCmd {
    /// The series and each occurrence with its own state.
    Show { id: String },
    /// Commit every held occurrence.
    Commit { id: String },
    /// Cancel the whole series, one occurrence (--occurrence N), or every occurrence
    /// from a date on (--from).
    Cancel {
        id: String,
        #[arg(long, conflicts_with = "from")]
        occurrence: Option<u32>,
        /// A time (RFC 3339, +1d, ...) or a date (YYYY-MM-DD, midnight UTC).
        #[arg(long)]
        from: Option<String>,
    },
    /// New capacity for the committed occurrences ahead (all, --occurrence N, or --from
    /// a date on): all of them or none.
    Modify {
        id: String,
        #[arg(long, allow_negative_numbers = true)]
        bw: Option<i64>,
        #[arg(long, allow_negative_numbers = true)]
        bw_reverse: Option<i64>,
        /// Move each occurrence later (e.g. 1h) or, with a leading minus, earlier (-30m).
        #[arg(long, allow_hyphen_values = true)]
        shift: Option<String>,
        /// Each occurrence's new length (e.g. 5h).
        #[arg(long = "for", value_parser = crate::parse_duration_arg)]
        length: Option<TimeDelta>,
        #[arg(long, conflicts_with = "from")]
        occurrence: Option<u32>,
        #[arg(long)]
        from: Option<String>,
    },
    /// Write the series as an iCalendar file (to stdout), for people's calendars.
    Export { id: String },
}

fn tz_of(s: &v1::Series) -> Tz {
    s.time_zone.parse().unwrap_or(Tz::UTC)
}

fn local(t: &Option<prost_types::Timestamp>, tz: Tz) -> String {
    from_timestamp(t).map_or("-".into(), |t| {
        t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M").to_string()
    })
}

pub fn series_json(s: &v1::Series) -> Value {
    json!({
        "id": s.id,
        "owner": s.owner,
        "description": s.description,
        "time_zone": s.time_zone,
        "same_path": s.same_path,
        "occurrences": s.occurrences.iter().map(|r| {
            let mut j = reservation_json(r);
            j["occurrence"] = json!(r.occurrence);
            j
        }).collect::<Vec<_>>(),
        "skipped": s.skipped.iter().map(|k| json!({
            "occurrence": k.number,
            "start": crate::time::show(&k.start),
            "end": crate::time::show(&k.end),
            "code": k.code,
            "reason": k.reason,
        })).collect::<Vec<_>>(),
    })
}

/// A table of the occurrences, times on the series' own wall clock.
pub fn series_human(s: &v1::Series) -> String {
    let tz = tz_of(s);
    let mut out = format!(
        "series {}  {} occurrences booked{}, times in {}\n",
        s.id,
        s.occurrences.len(),
        if s.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} skipped", s.skipped.len())
        },
        s.time_zone
    );
    if !s.description.is_empty() {
        out += &format!("  {}\n", s.description);
    }
    if let Some(first) = s.occurrences.first() {
        out += &format!(
            "  {} → {}  {} Mb/s{}\n",
            first.src,
            first.dst,
            first.capacity_mbps,
            if s.same_path {
                ", one path for all"
            } else {
                ", best path each"
            }
        );
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["#", "start", "end", "state", "id", "path"]);
    let mut rows: Vec<(u32, Vec<String>)> = s
        .occurrences
        .iter()
        .map(|r| {
            let end = local(&r.end, tz);
            (
                r.occurrence,
                vec![
                    r.occurrence.to_string(),
                    local(&r.start, tz),
                    end.rsplit(' ').next().unwrap_or("").to_string(),
                    states(r).summary.clone(),
                    r.id.clone(),
                    via(r),
                ],
            )
        })
        .collect();
    rows.extend(s.skipped.iter().map(|k| {
        (
            k.number,
            vec![
                k.number.to_string(),
                local(&k.start, tz),
                local(&k.end, tz)
                    .rsplit(' ')
                    .next()
                    .unwrap_or("")
                    .to_string(),
                "skipped".into(),
                format!("({}, see below)", k.code),
                String::new(),
            ],
        )
    }));
    rows.sort_by_key(|r| r.0);
    for (_, row) in rows {
        table.add_row(row);
    }
    out += &table.to_string();
    for k in &s.skipped {
        out += &format!("\n  skipped #{}: {} {}", k.number, k.code, k.reason);
    }
    out
}

/// The series as iCalendar: one event per booked occurrence, in UTC, so that what people
/// see is exactly what is booked (skipped and cancelled ones left out).
pub fn ics(s: &v1::Series, now: DateTime<Utc>) -> String {
    let stamp = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    let text = |t: &str| {
        t.replace('\\', "\\\\")
            .replace(';', "\\;")
            .replace(',', "\\,")
            .replace('\n', "\\n")
    };
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//Sluice//circuit reservations//EN".into(),
        "CALSCALE:GREGORIAN".into(),
        format!("X-WR-CALNAME:{}", text(&format!("Sluice series {}", s.id))),
        format!("X-WR-TIMEZONE:{}", s.time_zone),
    ];
    for r in &s.occurrences {
        let (Some(start), Some(end)) = (from_timestamp(&r.start), from_timestamp(&r.end)) else {
            continue;
        };
        let summary = states(r).summary.clone();
        if summary == "terminated" || summary == "aborted" || summary == "timed out" {
            continue;
        }
        let title = if s.description.is_empty() {
            format!("{} Mb/s {} → {}", r.capacity_mbps, r.src, r.dst)
        } else {
            s.description.clone()
        };
        lines.extend([
            "BEGIN:VEVENT".to_string(),
            format!("UID:{}@sluice", r.id),
            format!("DTSTAMP:{}", stamp(now)),
            format!("DTSTART:{}", stamp(start)),
            format!("DTEND:{}", stamp(end)),
            format!("SUMMARY:{}", text(&title)),
            format!(
                "DESCRIPTION:{}",
                text(&format!(
                    "Sluice circuit {} (occurrence {} of series {}): {} Mb/s {} → {}, via {}",
                    r.id,
                    r.occurrence,
                    s.id,
                    r.capacity_mbps,
                    r.src,
                    r.dst,
                    via(r)
                ))
            ),
            "END:VEVENT".into(),
        ]);
    }
    lines.push("END:VCALENDAR".into());
    // RFC 5545: lines end in CRLF and fold at 75 octets.
    lines
        .iter()
        .map(|l| fold(l))
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

fn fold(line: &str) -> String {
    let mut out = String::new();
    let mut width = 0;
    for ch in line.chars() {
        let n = ch.len_utf8();
        if width + n > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(ch);
        width += n;
    }
    out
}

/// `--from` of `series cancel`: a date is its midnight in UTC.
pub fn from_arg(text: &str) -> Result<DateTime<Utc>, Error> {
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    crate::time_arg(text, "from")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ics_lines_fold_at_75_octets() {
        let line = format!("DESCRIPTION:{}", "é".repeat(60));
        let folded = fold(&line);
        for part in folded.split("\r\n") {
            assert!(part.len() <= 75, "{} octets", part.len());
        }
        assert_eq!(folded.replace("\r\n ", ""), line);
    }
}

/// `sluice calendar`: one week of a port or a link.
#[derive(Args)]
pub struct CalendarArgs {
    /// A port: node:port or domain:node:port.
    #[arg(long, conflicts_with = "link", required_unless_present = "link")]
    pub port: Option<String>,
    /// A link id.
    #[arg(long)]
    pub link: Option<String>,
    /// The ISO week, e.g. 2026-W49 (default: this week).
    #[arg(long)]
    pub week: Option<String>,
    /// The time zone the days and hours are shown in (IANA, e.g. Europe/Rome).
    #[arg(long, default_value = "UTC")]
    pub tz: String,
}

/// Monday 00:00 of an ISO week (`2026-W49`) in `tz`, and the week after it.
pub fn week_bounds(
    week: Option<&str>,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Error> {
    use chrono::Datelike;
    let monday = match week {
        None => {
            let today = now.with_timezone(&tz).date_naive();
            today - TimeDelta::days(today.weekday().num_days_from_monday() as i64)
        }
        Some(w) => {
            let bad =
                || Error::invalid("week", format!("{w:?} is not an ISO week such as 2026-W49"));
            let (y, n) = w.split_once("-W").ok_or_else(bad)?;
            let (y, n): (i32, u32) = (y.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
            NaiveDate::from_isoywd_opt(y, n, chrono::Weekday::Mon).ok_or_else(bad)?
        }
    };
    let at = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| Error::invalid("week", "midnight does not exist there"))
    };
    Ok((at(monday)?, at(monday + TimeDelta::days(7))?))
}

/// The week as a grid: a row per day and direction, a column per hour, each cell how
/// full the resource is at its busiest in that hour (` ░▒▓█`, quarter steps), then the
/// circuits booked on it that week, in `tz`.
pub fn calendar_human(
    a: &v1::AvailabilityReply,
    circuits: &[v1::Reservation],
    tz: Tz,
    week_start: DateTime<Utc>,
) -> String {
    const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
    let mut out = format!(
        "{}  week of {}  (times in {})\n",
        a.resource,
        week_start.with_timezone(&tz).format("%a %Y-%m-%d"),
        tz
    );
    out += "        ";
    for h in 0..24 {
        out += &format!(
            "{:<2}",
            if h % 3 == 0 {
                format!("{h:02}")
            } else {
                String::new()
            }
        );
    }
    out += "\n";
    for d in &a.directions {
        let cap = d.capacity_mbps.max(1);
        out += &format!("{} (capacity {} Mb/s)\n", d.direction, d.capacity_mbps);
        for day in 0..7 {
            let day_start = week_start.with_timezone(&tz) + TimeDelta::days(day);
            out += &format!("  {}  ", day_start.format("%a %d"));
            for h in 0..24 {
                let a0 = (day_start + TimeDelta::hours(h)).with_timezone(&Utc);
                let a1 = a0 + TimeDelta::hours(1);
                let peak = crate::output::peak_in(d, a0, a1);
                let shade = if peak == 0 {
                    0
                } else {
                    ((peak * 4).div_ceil(cap)).clamp(1, 4) as usize
                };
                out.push(SHADES[shade]);
                out.push(SHADES[shade]);
            }
            out += "|\n";
        }
    }
    out += "  ░ up to 25 %  ▒ 50 %  ▓ 75 %  █ full\n";
    if circuits.is_empty() {
        out += "\nno circuits booked that week\n";
        return out;
    }
    out += "\n";
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["start", "end", "Mb/s", "state", "id", "series"]);
    for r in circuits {
        table.add_row(vec![
            local(&r.start, tz),
            local(&r.end, tz),
            r.capacity_mbps.to_string(),
            states(r).summary.clone(),
            r.id.clone(),
            if r.series_id.is_empty() {
                String::new()
            } else {
                format!("{} #{}", r.series_id, r.occurrence)
            },
        ]);
    }
    out + &table.to_string()
}

#[cfg(test)]
mod calendar_tests {
    use super::*;

    #[test]
    fn an_iso_week_starts_on_its_monday_in_the_zone() {
        let now = Utc::now();
        let (a, b) = week_bounds(Some("2026-W49"), Tz::Europe__Rome, now).unwrap();
        assert_eq!(
            a.to_rfc3339(),
            "2026-11-29T23:00:00+00:00",
            "Mon 30 Nov, 00:00 in Rome"
        );
        assert_eq!(b - a, TimeDelta::days(7));
        // The week the clocks go back has an hour more.
        let (a, b) = week_bounds(Some("2026-W43"), Tz::Europe__Rome, now).unwrap();
        assert_eq!(b - a, TimeDelta::days(7) + TimeDelta::hours(1));
        assert!(week_bounds(Some("2026-49"), Tz::UTC, now).is_err());
        assert!(week_bounds(Some("2026-W54"), Tz::UTC, now).is_err());
    }
}

/// `--shift 1h` or `--shift -30m`.
pub fn shift_arg(text: &str) -> Result<TimeDelta, Error> {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    crate::time::parse_duration(rest)
        .map(|d| d * sign)
        .ok_or_else(|| {
            Error::invalid(
                "shift",
                format!("{text:?} is not a duration such as 1h or -30m"),
            )
        })
}

/// Where an occurrence goes: its nodes, or for a circuit across domains its domains.
fn via(r: &v1::Reservation) -> String {
    if r.segments.is_empty() {
        r.path
            .iter()
            .map(|h| h.to.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        r.segments
            .iter()
            .map(|s| s.domain.as_str())
            .collect::<Vec<_>>()
            .join(" → ")
    }
}
