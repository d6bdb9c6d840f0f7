//! A schedule's time: a cron expression read in an IANA time zone, and the
//! pure decision of which ticks a due schedule fires (its catch-up policy),
//! tested against fixed instants.

use std::str::FromStr as _;
use std::time::Duration;

use chrono::DateTime;
use chrono_tz::Tz;
use croner::Cron;

use crate::journal::{CatchUp, Firing, Timestamp};

/// Most missed ticks fired in one round (`catch-up all`); the rest follow in the next rounds.
pub const MAX_CATCH_UP: usize = 1000;

/// Under `catch-up skip`, a tick later than this is missed, not fired.
pub const SKIP_AFTER: Duration = Duration::from_secs(60);

/// A cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

impl CronSchedule {
    /// Reads `expression` (5 fields, or 6 with seconds first) in `timezone` (an IANA name).
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, String> {
        let zone: Tz = timezone.parse().map_err(|_| {
            format!("unknown time zone {timezone:?}: use an IANA name such as UTC, Europe/Paris or America/New_York")
        })?;
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "the cron expression {expression:?} has {fields} field(s): write 5 (minute hour day-of-month month \
                 day-of-week, e.g. \"0 3 * * *\" for 03:00 every day) or 6 with seconds first (\"*/10 * * * * *\")"
            ));
        }
        let cron = Cron::from_str(expression).map_err(|error| {
            format!(
                "invalid cron expression {expression:?}: {error}. Write 5 fields (minute hour day-of-month month \
                 day-of-week, e.g. \"0 3 * * *\") or 6 with seconds first (\"*/10 * * * * *\")"
            )
        })?;
        let schedule = Self { cron, zone };
        // An expression that matches nothing (30 February) would never fire: refuse it now.
        if schedule.next_after(Timestamp::now()).is_none() {
            return Err(format!("the cron expression {expression:?} never matches a time"));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let local = DateTime::from_timestamp_millis(after.millis())?.with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(Timestamp::from_millis(next.timestamp_millis()))
    }

    /// Which ticks a schedule whose next tick is `next_tick_at` fires at
    /// `now` under `catch_up`, and its next tick after them.
    pub fn plan(&self, next_tick_at: Timestamp, now: Timestamp, catch_up: CatchUp) -> Firing {
        let mut due = Vec::new();
        let mut tick = Some(next_tick_at);
        while let Some(at) = tick.filter(|at| *at <= now) {
            if due.len() == MAX_CATCH_UP {
                break;
            }
            due.push(at);
            tick = self.next_after(at);
        }
        // With more missed ticks than one round fires, `all` goes on from the first not fired.
        let next_tick_at = match tick {
            Some(at) if at <= now && catch_up == CatchUp::All => at,
            _ => self.next_after(now).unwrap_or(Timestamp::from_millis(i64::MAX)),
        };
        let latest = due.last().copied();
        let ticks = match catch_up {
            CatchUp::All => due,
            CatchUp::Latest => latest.into_iter().collect(),
            CatchUp::Skip => latest.filter(|at| now.since(*at) <= SKIP_AFTER).into_iter().collect(),
        };
        Firing { ticks, next_tick_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn ticks_follow_the_expression_in_its_time_zone() {
        let nightly = CronSchedule::parse("0 3 * * *", "Europe/Paris").unwrap();
        // 03:00 in Paris is 02:00 UTC in winter.
        assert_eq!(nightly.next_after(at("2026-12-04T12:00:00Z")), Some(at("2026-12-05T02:00:00Z")));
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(every_second.next_after(at("2026-12-04T12:00:00.400Z")), Some(at("2026-12-04T12:00:01Z")));
        assert_eq!(every_second.next_after(at("2026-12-04T12:00:01Z")), Some(at("2026-12-04T12:00:02Z")));
    }

    #[test]
    fn bad_expressions_and_zones_say_what_to_write() {
        let error = CronSchedule::parse("0 3 * *", "UTC").unwrap_err();
        assert!(error.contains("4 field(s)") && error.contains("\"0 3 * * *\""), "{error}");
        let error = CronSchedule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(error.starts_with("invalid cron expression \"61 * * * *\""), "{error}");
        let error = CronSchedule::parse("0 3 * * *", "Mars/Olympus").unwrap_err();
        assert!(error.contains("unknown time zone \"Mars/Olympus\""), "{error}");
        assert!(CronSchedule::parse("0 0 30 2 *", "UTC").unwrap_err().contains("never matches"));
    }

    #[test]
    fn a_tick_on_time_fires_once_and_the_next_follows() {
        let every_minute = CronSchedule::parse("* * * * *", "UTC").unwrap();
        let now = at("2026-12-04T12:00:00.020Z");
        for catch_up in [CatchUp::Skip, CatchUp::Latest, CatchUp::All] {
            let firing = every_minute.plan(at("2026-12-04T12:00:00Z"), now, catch_up);
            assert_eq!(firing.ticks, [at("2026-12-04T12:00:00Z")], "{catch_up}");
            assert_eq!(firing.next_tick_at, at("2026-12-04T12:01:00Z"));
        }
    }

    #[test]
    fn missed_ticks_are_fired_as_the_catch_up_policy_says() {
        let every_minute = CronSchedule::parse("* * * * *", "UTC").unwrap();
        // No worker ran from 12:00 to 12:05:30.
        let (next, now) = (at("2026-12-04T12:00:00Z"), at("2026-12-04T12:05:30Z"));
        let all = every_minute.plan(next, now, CatchUp::All);
        assert_eq!(all.ticks.len(), 6);
        assert_eq!((all.ticks[0], all.ticks[5]), (next, at("2026-12-04T12:05:00Z")));
        assert_eq!(all.next_tick_at, at("2026-12-04T12:06:00Z"));
        assert_eq!(every_minute.plan(next, now, CatchUp::Latest).ticks, [at("2026-12-04T12:05:00Z")]);
        // Skip: the latest tick is 30 s late, within a minute: it fires; the others are missed.
        assert_eq!(every_minute.plan(next, now, CatchUp::Skip).ticks, [at("2026-12-04T12:05:00Z")]);
        // Skip, two minutes past the latest tick: nothing fires, it goes on from the next.
        let hourly = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        let late = hourly.plan(next, at("2026-12-04T12:02:00Z"), CatchUp::Skip);
        assert_eq!((late.ticks.len(), late.next_tick_at), (0, at("2026-12-04T13:00:00Z")));
    }

    #[test]
    fn a_long_outage_catches_up_in_rounds() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let (next, now) = (at("2026-12-04T12:00:00Z"), at("2026-12-04T13:00:00Z"));
        let first = every_second.plan(next, now, CatchUp::All);
        assert_eq!(first.ticks.len(), MAX_CATCH_UP);
        assert_eq!(first.next_tick_at, next.plus(Duration::from_secs(MAX_CATCH_UP as u64)));
        assert!(first.next_tick_at <= now, "the next round fires the rest");
    }
}
