//! The reminders read model: customers nobody has followed up for
//! `rules.follow_up_reminder_days`, escalations to the owner's manager when a further limit
//! passes, and "my day" for one salesperson (follow-ups overdue, follow-ups due today, leads
//! held for more than 24 hours).
//!
//! The fold stores timestamps and dates only; every "due" is evaluated at query time against
//! the `now`/`today` and the limits the caller passes, so the fold is deterministic and
//! depends on no rule (a rule change rebuilds nothing).
//!
//! Definitions (the same as `crm_domain::Customer::follow_up_due`):
//! - a customer's **last activity** is its activity with the latest `occurred_at` (an
//!   activity logged late with an earlier time does not count as newer); its **next
//!   follow-up** is that activity's `next_follow_up` (an activity without one clears it);
//! - **reminder**: a live (not merged-away) customer whose last activity is older than
//!   `follow_up_reminder_days` (`now - last > days`), or that has no activity at all;
//! - **escalation**: a live customer with an owner and no activity for
//!   `follow_up_reminder_days + escalation_after_days`, counted from its last activity or,
//!   without one, from its creation; it goes to the owner's managers: the active regional
//!   managers of the owner's region;
//! - **my day** for a user and a `today` (a date in China Standard Time): follow-ups of the
//!   user's customers with `next_follow_up < today` (overdue) or `== today` (today's
//!   appointments), and leads the user holds (assigned or claimed, not qualified) whose
//!   assignment or claim is more than 24 hours before `now`: a lead carries no activities,
//!   qualifying it into a customer is the contact.
//!
//! Keys:
//! - `c/<customer>`: the [`CustomerState`];
//! - `s/<micros, 20 digits>/<customer>`: live customers by last activity;
//! - `n/<micros, 20 digits>/<customer>`: live customers without any activity, by creation;
//! - `f/<owner>/<date>/<customer>`: live owned customers by next follow-up date;
//! - `l/<lead>`: the [`LeadState`]; `h/<holder>/<lead>`: leads a user holds;
//! - `u/<user>`: the user's name, role, region and whether active.
//!
//! ```
//! use crm_projection_reminders::RemindersProjector;
//! use crm_projection_runtime::Projector;
//! let p = RemindersProjector;
//! let mut rules = crm_domain::Rules::default();
//! let before = p.fingerprint(&rules);
//! rules.follow_up_reminder_days = 3;
//! assert_eq!(before, p.fingerprint(&rules), "limits are applied at query time");
//! ```

mod projector;
mod query;

pub use projector::{CustomerState, LeadState, RemindersProjector, UserInfo, Value};
pub use query::{
    escalations, my_day, reminders, Escalation, HeldLead, MyDay, MyDayQuery, Reminder, ReminderQuery,
    LEAD_CONTACT_HOURS,
};
