//! Per-form field health: each field's match rate over a sliding window of the form's last
//! submissions, and alerts when a rate falls below the threshold, an unmapped field starts
//! arriving, or a field stops arriving.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::mapping::{FieldObservation, ObservationOutcome};
use crate::HOUR_MICROS;

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Observations per field kept in the window (the field's last N submissions).
    pub window: usize,
    /// A field whose match rate falls below this raises an alert.
    pub threshold: f64,
    /// Observations needed before a mapped field's rate can alert (an unmapped field
    /// alerts on its first arrival: nothing maps it, so its rate is 0).
    pub min_samples: usize,
    /// A field not seen for this long raises a stale alert.
    pub stale_after_micros: i64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { window: 200, threshold: 0.95, min_samples: 20, stale_after_micros: 72 * HOUR_MICROS }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The match rate fell below the threshold.
    LowMatchRate,
    /// A field no mapping knows is arriving (kept as a custom attribute).
    UnmappedField,
    /// The field has not arrived for the stale period.
    Stale,
    /// The field is healthy again after an alert.
    Recovered,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::LowMatchRate => "low_match_rate",
            AlertKind::UnmappedField => "unmapped_field",
            AlertKind::Stale => "stale",
            AlertKind::Recovered => "recovered",
        }
    }
}

/// An alert to record.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthAlert {
    pub form_id: String,
    pub field: String,
    pub kind: AlertKind,
    pub rate: f64,
    pub samples: usize,
    pub at_micros: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldHealth {
    window: VecDeque<bool>,
    matched: usize,
    pub mapped: bool,
    pub total: u64,
    pub last_seen_micros: Option<i64>,
    /// The alert in force, if any (never `Recovered`).
    pub alert: Option<AlertKind>,
}

impl FieldHealth {
    pub fn rate(&self) -> f64 {
        if self.window.is_empty() {
            1.0
        } else {
            self.matched as f64 / self.window.len() as f64
        }
    }

    pub fn samples(&self) -> usize {
        self.window.len()
    }

    fn push(&mut self, window: usize, matched: bool) {
        self.window.push_back(matched);
        self.matched += usize::from(matched);
        while self.window.len() > window.max(1) {
            if self.window.pop_front() == Some(true) {
                self.matched -= 1;
            }
        }
        self.total += 1;
    }
}

/// One field's health, for answers.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldHealthReport {
    pub field: String,
    pub mapped: bool,
    pub rate: f64,
    pub samples: usize,
    pub total: u64,
    pub last_seen_micros: Option<i64>,
    pub alert: Option<AlertKind>,
}

/// The health of one form's fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FormHealth {
    pub form_id: String,
    pub submissions: u64,
    pub last_submission_micros: Option<i64>,
    fields: BTreeMap<String, FieldHealth>,
}

impl FormHealth {
    pub fn new(form_id: &str) -> Self {
        FormHealth { form_id: form_id.to_owned(), ..FormHealth::default() }
    }

    /// Folds one submission's observations in and returns the alerts it raises (each alert
    /// fires once, on the transition; `Recovered` when an alerted field is healthy again).
    pub fn observe(
        &mut self,
        cfg: &HealthConfig,
        at_micros: i64,
        observations: &[FieldObservation],
    ) -> Vec<HealthAlert> {
        self.submissions += 1;
        self.last_submission_micros = Some(at_micros);
        let mut alerts = Vec::new();
        for o in observations {
            let f = self.fields.entry(o.field.clone()).or_default();
            f.mapped = o.outcome != ObservationOutcome::Unmapped;
            f.push(cfg.window, o.matched());
            if o.outcome != ObservationOutcome::Missing {
                f.last_seen_micros = Some(at_micros);
            }
            let low = f.rate() < cfg.threshold;
            let next = if !f.mapped {
                Some(AlertKind::UnmappedField)
            } else if low && (f.samples() >= cfg.min_samples || f.alert == Some(AlertKind::LowMatchRate)) {
                Some(AlertKind::LowMatchRate)
            } else if f.alert == Some(AlertKind::Stale) && o.outcome == ObservationOutcome::Missing {
                Some(AlertKind::Stale)
            } else {
                None
            };
            let kind = match (f.alert, next) {
                (a, b) if a == b => None,
                (_, Some(k)) => Some(k),
                (Some(_), None) => Some(AlertKind::Recovered),
                (None, None) => None,
            };
            f.alert = next;
            if let Some(kind) = kind {
                alerts.push(alert(&self.form_id, &o.field, f, kind, at_micros));
            }
        }
        alerts
    }

    /// Alerts for fields that have not arrived for the stale period by `now_micros`.
    pub fn check_stale(&mut self, cfg: &HealthConfig, now_micros: i64) -> Vec<HealthAlert> {
        let mut alerts = Vec::new();
        for (name, f) in &mut self.fields {
            let Some(seen) = f.last_seen_micros else { continue };
            if now_micros - seen >= cfg.stale_after_micros && f.alert != Some(AlertKind::Stale) {
                f.alert = Some(AlertKind::Stale);
                alerts.push(alert(&self.form_id, name, f, AlertKind::Stale, now_micros));
            }
        }
        alerts
    }

    /// Restores an alert state recorded in the log (on restart).
    pub fn restore_alert(&mut self, field: &str, kind: AlertKind) {
        let f = self.fields.entry(field.to_owned()).or_default();
        f.alert = if kind == AlertKind::Recovered { None } else { Some(kind) };
    }

    pub fn report(&self) -> Vec<FieldHealthReport> {
        self.fields
            .iter()
            .map(|(name, f)| FieldHealthReport {
                field: name.clone(),
                mapped: f.mapped,
                rate: f.rate(),
                samples: f.samples(),
                total: f.total,
                last_seen_micros: f.last_seen_micros,
                alert: f.alert,
            })
            .collect()
    }
}

fn alert(form: &str, field: &str, f: &FieldHealth, kind: AlertKind, at: i64) -> HealthAlert {
    HealthAlert {
        form_id: form.to_owned(),
        field: field.to_owned(),
        kind,
        rate: f.rate(),
        samples: f.samples(),
        at_micros: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(field: &str, outcome: ObservationOutcome) -> FieldObservation {
        FieldObservation { field: field.into(), outcome }
    }

    #[test]
    fn an_unmapped_field_alerts_on_first_arrival_and_only_once() {
        let cfg = HealthConfig::default();
        let mut h = FormHealth::new("f");
        let a = h.observe(&cfg, 1, &[obs("new_field", ObservationOutcome::Unmapped)]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::UnmappedField);
        assert_eq!(a[0].rate, 0.0);
        assert!(h.observe(&cfg, 2, &[obs("new_field", ObservationOutcome::Unmapped)]).is_empty());
    }

    #[test]
    fn a_rate_below_95_percent_alerts_once_enough_samples_exist_then_recovers() {
        let cfg = HealthConfig { window: 20, min_samples: 20, ..HealthConfig::default() };
        let mut h = FormHealth::new("f");
        let mut alerts = Vec::new();
        for i in 0..20 {
            alerts.extend(h.observe(&cfg, i, &[obs("phone", ObservationOutcome::Matched)]));
        }
        assert!(alerts.is_empty());
        // Two misses in a window of 20: 90%.
        alerts.extend(h.observe(&cfg, 20, &[obs("phone", ObservationOutcome::Missing)]));
        assert!(alerts.is_empty(), "19/20 = 95% is not below the threshold");
        alerts.extend(h.observe(&cfg, 21, &[obs("phone", ObservationOutcome::Missing)]));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::LowMatchRate);
        assert!((alerts[0].rate - 0.90).abs() < 1e-9);
        let mut later = Vec::new();
        for i in 22..60 {
            later.extend(h.observe(&cfg, i, &[obs("phone", ObservationOutcome::Matched)]));
        }
        assert_eq!(later.iter().map(|a| a.kind).collect::<Vec<_>>(), vec![AlertKind::Recovered]);
    }

    #[test]
    fn a_field_that_stops_arriving_for_72_hours_goes_stale() {
        let cfg = HealthConfig::default();
        let mut h = FormHealth::new("f");
        h.observe(&cfg, 0, &[obs("phone", ObservationOutcome::Matched)]);
        assert!(h.check_stale(&cfg, 72 * HOUR_MICROS - 1).is_empty());
        let a = h.check_stale(&cfg, 72 * HOUR_MICROS);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::Stale);
        assert!(h.check_stale(&cfg, 80 * HOUR_MICROS).is_empty(), "fires once");
        let back = h.observe(&cfg, 81 * HOUR_MICROS, &[obs("phone", ObservationOutcome::Matched)]);
        assert_eq!(back[0].kind, AlertKind::Recovered);
    }

    #[test]
    fn the_window_slides() {
        let cfg = HealthConfig { window: 4, ..HealthConfig::default() };
        let mut h = FormHealth::new("f");
        for outcome in [false, true, true, true, true] {
            let o = if outcome { ObservationOutcome::Matched } else { ObservationOutcome::Missing };
            h.observe(&cfg, 0, &[obs("x", o)]);
        }
        let r = &h.report()[0];
        assert_eq!(r.samples, 4);
        assert_eq!(r.rate, 1.0);
        assert_eq!(r.total, 5);
    }
}
