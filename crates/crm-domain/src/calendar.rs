//! Working days and the time-based rules read models need: stage time limits (working days),
//! unclaimed-lead alerts (hours), follow-up reminders (days). Pure functions of a `now`
//! passed in; public holidays and make-up working days (调休) are not modelled yet.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};

use crate::customer::Customer;
use crate::lead::{Lead, LeadStatus};
use crate::opportunity::Opportunity;
use crate::rules::Rules;

/// Working days (Monday to Friday) `d` with `from < d <= to`: how many working days have
/// passed from `from` to `to`. Zero when `to <= from`.
///
/// ```
/// use chrono::NaiveDate;
/// let friday = NaiveDate::from_ymd_opt(2026, 3, 6).unwrap();
/// let monday = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
/// assert_eq!(crm_domain::working_days_between(friday, monday), 1);
/// ```
pub fn working_days_between(from: NaiveDate, to: NaiveDate) -> u32 {
    if to <= from {
        return 0;
    }
    let days = (to - from).num_days();
    let (weeks, rest) = (days / 7, days % 7);
    let mut count = weeks * 5;
    let mut day = from;
    for _ in 0..rest {
        day = day.succ_opt().unwrap_or(day);
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            count += 1;
        }
    }
    count as u32
}

impl Lead {
    /// Assigned, still unclaimed, for longer than `unclaimed_alert_hours`.
    pub fn unclaimed_alert_due(&self, now: DateTime<Utc>, rules: &Rules) -> bool {
        self.status == LeadStatus::Assigned
            && self
                .assigned_at
                .is_some_and(|at| now - at > Duration::hours(i64::from(rules.assignment.unclaimed_alert_hours)))
    }
}

impl Customer {
    /// The last activity is older than `follow_up_reminder_days`, or there is none yet.
    /// A customer merged into another is never due (the survivor is).
    pub fn follow_up_due(&self, now: DateTime<Utc>, rules: &Rules) -> bool {
        if self.id.is_none() || self.absorbed_into.is_some() {
            return false;
        }
        match &self.last_activity {
            None => true,
            Some(last) => now - last.occurred_at > Duration::days(i64::from(rules.follow_up_reminder_days)),
        }
    }
}

impl Opportunity {
    /// Working days spent in the current stage, if open.
    pub fn working_days_in_stage(&self, now: DateTime<Utc>) -> Option<u32> {
        let entered = self.stage_entered_at?;
        self.is_open().then(|| working_days_between(entered.date_naive(), now.date_naive()))
    }

    /// Open and longer in its stage than the stage's limit.
    pub fn stage_overdue(&self, now: DateTime<Utc>, rules: &Rules) -> bool {
        let limit = rules.stage_time_limits.get(&self.stage);
        matches!((self.working_days_in_stage(now), limit), (Some(days), Some(limit)) if days > *limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(d: u32) -> NaiveDate {
        // March 2026: the 2nd is a Monday.
        NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
    }

    fn check(from: u32, to: u32, expected: u32) {
        assert_eq!(working_days_between(date(from), date(to)), expected, "{from} -> {to}");
    }

    #[test]
    fn working_days() {
        for (from, to, expected) in [
            (2, 2, 0),   // same day
            (2, 3, 1),   // Mon -> Tue
            (2, 6, 4),   // Mon -> Fri
            (6, 7, 0),   // Fri -> Sat
            (6, 8, 0),   // Fri -> Sun
            (6, 9, 1),   // Fri -> Mon
            (7, 9, 1),   // Sat -> Mon
            (2, 9, 5),   // one week
            (2, 16, 10), // two weeks
            (4, 20, 12), // Wed -> Fri two weeks later
            (9, 2, 0),   // backwards
        ] {
            check(from, to, expected);
        }
        // Against a day-by-day count over a long range.
        for from in 1..=28 {
            for to in from..=31 {
                let naive = (from + 1..=to)
                    .filter(|d| !matches!(date(*d).weekday(), Weekday::Sat | Weekday::Sun))
                    .count() as u32;
                check(from, to, naive);
            }
        }
    }
}
