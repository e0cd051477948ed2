//! Recurring bookings: how a series repeats, as asked. Expanding a rule into occurrences
//! is the scheduler's (`sluice_scheduler::recurrence`), which knows calendars and time
//! zones; this is the plain data the layers pass around.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};

use crate::units::TimeWindow;

/// At most this many occurrences in one series (ten years of a weekly slot).
pub const MAX_OCCURRENCES: usize = 520;

/// How a series repeats, and how long each occurrence lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    pub rule: RecurrenceRule,
    /// Each occurrence's length, on the wall clock of the rule's time zone: 14:00–18:00
    /// stays 14:00–18:00 on the day a daylight-saving change falls inside it.
    pub duration: TimeDelta,
}

/// The rule itself, in one of the two forms people write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecurrenceRule {
    /// RFC 5545 content lines: `DTSTART` (with `TZID=`, or in UTC with `Z`), one `RRULE`
    /// that ends (`COUNT` or `UNTIL`), and any `EXDATE` lines for skipped occurrences.
    ICalendar(String),
    /// A five-field cron expression (minute, hour, day of month, month, day of week;
    /// Sunday is 0 or 7) in the IANA time zone `tz`, counted from `from` on and ending
    /// after `count` occurrences or at `until`; `exdates` are local dates left out.
    Cron {
        expr: String,
        tz: String,
        from: DateTime<Utc>,
        count: Option<u32>,
        until: Option<DateTime<Utc>>,
        exdates: Vec<NaiveDate>,
    },
}

impl RecurrenceRule {
    /// The IANA time zone the rule counts in (`UTC` when it is written in UTC).
    pub fn time_zone(&self) -> String {
        match self {
            RecurrenceRule::Cron { tz, .. } => tz.clone(),
            RecurrenceRule::ICalendar(text) => text
                .lines()
                .find_map(|l| {
                    let l = l.trim();
                    let rest = l.strip_prefix("DTSTART;TZID=")?;
                    Some(rest.split(':').next()?.to_string())
                })
                .unwrap_or_else(|| "UTC".to_string()),
        }
    }
}

/// One occurrence of a series: its number (from 1), its window, and its start on the
/// wall clock of the series' time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub number: u32,
    pub window: TimeWindow,
    pub local_start: NaiveDateTime,
}

/// A recurring booking: its rule and what was decided when it was admitted. Its
/// occurrences are reservations of their own (`Reservation::series`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub id: String,
    pub owner: String,
    pub description: String,
    pub recurrence: Recurrence,
    /// Every occurrence on one and the same path, or each on its own best path.
    pub same_path: bool,
    /// Occurrences left out at admission because they did not fit (`--skip-conflicts`).
    pub skipped: Vec<SkippedOccurrence>,
    pub created_at: DateTime<Utc>,
}

/// An occurrence left out of a series at admission, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedOccurrence {
    pub number: u32,
    pub window: TimeWindow,
    /// The stable code of the reason (00705, 00704, 00403).
    pub code: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_zone_is_read_from_dtstart() {
        let rule = RecurrenceRule::ICalendar(
            "DTSTART;TZID=Europe/Rome:20261201T140000\nRRULE:FREQ=WEEKLY;COUNT=3".into(),
        );
        assert_eq!(rule.time_zone(), "Europe/Rome");
        let utc =
            RecurrenceRule::ICalendar("DTSTART:20261201T140000Z\nRRULE:FREQ=DAILY;COUNT=2".into());
        assert_eq!(utc.time_zone(), "UTC");
    }
}
