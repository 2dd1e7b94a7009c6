//! Working days: weekends, public holidays, and the adjusted working days that China moves
//! onto weekends around long holidays.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// A working-day calendar. A day is a working day when it is listed in `working_days`, or
/// when it is not a weekend day and not listed in `holidays`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Calendar {
    /// Weekend days, Monday = 0 .. Sunday = 6.
    pub weekend: BTreeSet<u8>,
    pub holidays: BTreeSet<NaiveDate>,
    /// Weekend days that are working days (调休).
    pub working_days: BTreeSet<NaiveDate>,
}

impl Default for Calendar {
    /// Saturday and Sunday off, no holidays.
    fn default() -> Self {
        Calendar { weekend: [5, 6].into(), holidays: BTreeSet::new(), working_days: BTreeSet::new() }
    }
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid calendar date")
}

fn span(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |x| *x <= to)
}

impl Calendar {
    /// The mainland China calendar for 2026 as announced by the State Council General Office
    /// (国办发明电〔2025〕7号): holidays and the adjusted weekend working days. Check it against
    /// the official notice before relying on it; operators replace it through configuration.
    pub fn china_2026() -> Self {
        let mut c = Calendar::default();
        let holidays = [
            (d(2026, 1, 1), d(2026, 1, 3)),
            (d(2026, 2, 15), d(2026, 2, 23)),
            (d(2026, 4, 4), d(2026, 4, 6)),
            (d(2026, 5, 1), d(2026, 5, 5)),
            (d(2026, 6, 19), d(2026, 6, 21)),
            (d(2026, 9, 25), d(2026, 9, 27)),
            (d(2026, 10, 1), d(2026, 10, 7)),
        ];
        for (from, to) in holidays {
            c.holidays.extend(span(from, to));
        }
        c.working_days =
            [d(2026, 1, 4), d(2026, 2, 14), d(2026, 2, 28), d(2026, 5, 9), d(2026, 9, 20), d(2026, 10, 10)].into();
        c
    }

    fn is_weekend(&self, day: NaiveDate) -> bool {
        self.weekend.contains(&(day.weekday().num_days_from_monday() as u8))
    }

    pub fn is_working_day(&self, day: NaiveDate) -> bool {
        self.working_days.contains(&day) || (!self.is_weekend(day) && !self.holidays.contains(&day))
    }

    /// Working days in `(from, to]`: 0 when `to <= from`. A move on the day of entry dwelt 0
    /// working days; a move the next working day, 1.
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> u32 {
        if to <= from {
            return 0;
        }
        let days = (to - from).num_days();
        let weeks = days / 7;
        let workdays_per_week = 7 - self.weekend.len() as i64;
        let mut count = weeks * workdays_per_week;
        let mut day = from + chrono::Duration::days(weeks * 7);
        while day < to {
            day = day.succ_opt().expect("date in range");
            if !self.is_weekend(day) {
                count += 1;
            }
        }
        let after = from.succ_opt().expect("date in range");
        count -= self.holidays.range(after..=to).filter(|h| !self.is_weekend(**h)).count() as i64;
        count += self.working_days.range(after..=to).filter(|w| self.is_weekend(**w)).count() as i64;
        count.max(0) as u32
    }

    /// The day `n` working days after `from` (`from` itself when `n == 0`).
    pub fn add_working_days(&self, from: NaiveDate, n: u32) -> NaiveDate {
        let mut day = from;
        let mut left = n;
        while left > 0 {
            day = day.succ_opt().expect("date in range");
            if self.is_working_day(day) {
                left -= 1;
            }
        }
        day
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_weeks_count_weekdays() {
        let c = Calendar::default();
        // Monday 2026-03-02 to Monday 2026-03-09: Tue..Fri + Mon = 5.
        assert_eq!(c.working_days_between(d(2026, 3, 2), d(2026, 3, 9)), 5);
        assert_eq!(c.working_days_between(d(2026, 3, 6), d(2026, 3, 9)), 1);
        assert_eq!(c.working_days_between(d(2026, 3, 9), d(2026, 3, 9)), 0);
        assert_eq!(c.add_working_days(d(2026, 3, 6), 1), d(2026, 3, 9));
    }

    #[test]
    fn chinese_adjusted_working_days_count_and_holidays_do_not() {
        let c = Calendar::china_2026();
        // Spring Festival: 2026-02-13 (Fri) to 2026-02-24 (Tue): Sat 14th is a working day,
        // 15th..23rd are holidays, 24th works: 2 working days.
        assert_eq!(c.working_days_between(d(2026, 2, 13), d(2026, 2, 24)), 2);
        assert!(c.is_working_day(d(2026, 2, 28)));
        assert!(!c.is_working_day(d(2026, 10, 5)));
        assert_eq!(c.add_working_days(d(2026, 9, 30), 1), d(2026, 10, 8));
    }

    #[test]
    fn counting_agrees_with_day_by_day() {
        let c = Calendar::china_2026();
        let start = d(2025, 12, 20);
        for a in 0..120 {
            for len in [0, 1, 3, 7, 13, 40] {
                let from = start + chrono::Duration::days(a);
                let to = from + chrono::Duration::days(len);
                let slow = span(from.succ_opt().unwrap(), to).filter(|x| c.is_working_day(*x)).count() as u32;
                assert_eq!(c.working_days_between(from, to), slow, "{from} .. {to}");
            }
        }
    }
}
