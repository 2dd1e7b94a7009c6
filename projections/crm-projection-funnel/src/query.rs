//! The funnel query: reads the buckets of one scope over a month range, plus the overdue index.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{Datelike, NaiveDate};
use crm_projection_runtime::{histogram_median, Reader, Result};
use uuid::Uuid;

use crate::projector::{month_name, Bucket, Value};

/// What to report on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunnelQuery {
    pub region: Option<String>,
    pub owner: Option<Uuid>,
    /// Months `YYYY-MM`, inclusive; `None` is open-ended.
    pub from_month: Option<String>,
    pub to_month: Option<String>,
    /// Opportunities whose stage deadline is before this day are overdue.
    pub today: NaiveDate,
    /// The stages in pipeline order (conversion is from each to the next), then any extra
    /// stage found in the data is appended.
    pub stages: Vec<String>,
    /// The lost stage's name, for the `lost` total.
    pub lost_stage: String,
}

impl FunnelQuery {
    /// The whole funnel under `rules`' pipeline, all months.
    pub fn all(rules: &crm_domain::Rules, today: NaiveDate) -> Self {
        FunnelQuery {
            region: None,
            owner: None,
            from_month: None,
            to_month: None,
            today,
            stages: rules.pipeline.stages.iter().chain([&rules.pipeline.won_stage]).cloned().collect(),
            lost_stage: rules.pipeline.lost_stage.clone(),
        }
    }
}

/// One stage's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageReport {
    pub stage: String,
    pub entered: u64,
    pub exited: u64,
    /// `entered(next stage) / entered(this stage)`; `None` for the last stage or no entries.
    pub conversion_to_next: Option<f64>,
    pub avg_dwell_working_days: Option<f64>,
    pub median_dwell_working_days: Option<f64>,
    /// Open opportunities in this stage past their limit on `today`.
    pub overdue: u64,
    pub root_causes: BTreeMap<String, u64>,
    pub moved_to: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunnelReport {
    pub stages: Vec<StageReport>,
    /// Wins with all three references.
    pub won: u64,
    pub won_unverified: u64,
    pub lost: u64,
}

/// The scope whose keys answer `q`, and the region to take from an owner's values (`None`:
/// every region). A build older than version 7 keeps region+owner scopes as keys of their
/// own (`ro:<region>|<owner>`) and an owner's months whole: it is read that way while it
/// serves during the rebuild.
fn scope(reader: &Reader, q: &FunnelQuery) -> (String, Option<String>) {
    match (&q.region, &q.owner) {
        (None, None) => ("*".to_owned(), None),
        (Some(r), None) => (format!("r:{r}"), None),
        (None, Some(o)) => (format!("o:{o}"), None),
        (Some(r), Some(o)) => {
            let old = format!("ro:{r}|{o}");
            let has_old = [BUCKETS_PREFIX, DUE_PREFIX]
                .iter()
                .any(|kind| reader.tree.scan_prefix(format!("{kind}{old}/").as_bytes()).next().is_some());
            if has_old {
                (old, None)
            } else {
                (format!("o:{o}"), Some(r.clone()))
            }
        }
    }
}

const BUCKETS_PREFIX: &str = "b/";
const DUE_PREFIX: &str = "d/";

fn merge(into: &mut Bucket, b: &Bucket) {
    into.entered += b.entered;
    into.exited += b.exited;
    into.won += b.won;
    into.won_unverified += b.won_unverified;
    for (k, v) in &b.moved_to {
        *into.moved_to.entry(k.clone()).or_default() += v;
    }
    for (k, v) in &b.dwell {
        *into.dwell.entry(*k).or_default() += v;
    }
    for (k, v) in &b.root_causes {
        *into.root_causes.entry(k.clone()).or_default() += v;
    }
}

/// Whether a key's part after the scope is a month, `YYYY-MM`. Other keys can share a
/// scope's prefix: a region named with a `/` (`b/r:A/B/...` is under `b/r:A/`), and the keys
/// of a version 2 build (`<month>/<stage>`, `<due date>/<stage>`).
fn is_month(suffix: &[u8]) -> bool {
    suffix.len() == 7 && suffix.iter().enumerate().all(|(i, b)| if i == 4 { *b == b'-' } else { b.is_ascii_digit() })
}

/// A key under the scope's prefix that is not one of its months: another scope's key, to
/// skip, or a version 2 bucket or due count. Those mean the serving build is the one made
/// before an upgrade, which this version cannot answer from (the rebuild started at the
/// upgrade replaces it).
fn other_key(key: &[u8], value: Option<&Value>) -> Result<()> {
    match value {
        Some(Value::Bucket(_) | Value::DueCount(_)) => Err(crm_projection_runtime::Error::Upgrading {
            projection: "funnel".into(),
            detail: format!("the serving build has version 2 keys ({})", String::from_utf8_lossy(key)),
        }),
        _ => Ok(()),
    }
}

/// The funnel for a region and/or owner over a month range.
pub fn funnel(reader: &Reader, q: &FunnelQuery) -> Result<FunnelReport> {
    let (scope, region) = scope(reader, q);
    let wanted = |name: &String| region.as_ref().is_none_or(|r| r == name);
    // An owner's whole month (a build older than version 7) when one region of it is wanted:
    // that build has no region+owner key for the pair, so the pair counts nothing.
    let whole = region.is_none();
    let prefix = format!("{BUCKETS_PREFIX}{scope}/");
    let from = format!("{prefix}{}", q.from_month.as_deref().unwrap_or(""));
    let mut per_stage: BTreeMap<String, Bucket> = BTreeMap::new();
    for entry in reader.tree.range(from.as_bytes()..) {
        let (key, value) = entry?;
        let Some(month) = key.strip_prefix(prefix.as_bytes()) else { break };
        if !is_month(month) {
            other_key(&key, crm_projection_runtime::decode_value::<Value>(&key, &value).ok().as_ref())?;
            continue;
        }
        if q.to_month.as_deref().is_some_and(|to| month > to.as_bytes()) {
            break;
        }
        match crm_projection_runtime::decode_value::<Value>(&key, &value)? {
            Value::Month(_) if !whole => {}
            Value::Month(buckets) => {
                for (stage, b) in &buckets {
                    merge(per_stage.entry(stage.clone()).or_default(), b);
                }
            }
            Value::OwnerMonth(regions) => {
                for (stage, b) in regions.iter().filter(|(name, _)| wanted(name)).flat_map(|(_, m)| m) {
                    merge(per_stage.entry(stage.clone()).or_default(), b);
                }
            }
            other => other_key(&key, Some(&other))?,
        }
    }
    // Due days of months before today's all count; of today's month, the days before today.
    let mut overdue: BTreeMap<String, u64> = BTreeMap::new();
    let due_prefix = format!("{DUE_PREFIX}{scope}/");
    let this_month = month_name(q.today);
    for entry in reader.tree.scan_prefix(due_prefix.as_bytes()) {
        let (key, value) = entry?;
        let month = &key[due_prefix.len()..];
        if !is_month(month) {
            other_key(&key, crm_projection_runtime::decode_value::<Value>(&key, &value).ok().as_ref())?;
            continue;
        }
        if month > this_month.as_bytes() {
            break;
        }
        let before_today = |day: u8| month < this_month.as_bytes() || u32::from(day) < q.today.day();
        let mut count = |stage: &String, days: &[u32; 31]| {
            let n: u64 = (1..=31u8).zip(days).filter(|(day, _)| before_today(*day)).map(|(_, n)| u64::from(*n)).sum();
            *overdue.entry(stage.clone()).or_default() += n;
        };
        match crm_projection_runtime::decode_value::<Value>(&key, &value)? {
            Value::Dues(_) | Value::Due(_) if !whole => {}
            Value::Dues(dues) => dues.iter().for_each(|(stage, days)| count(stage, days)),
            Value::OwnerDues(regions) => {
                regions.iter().filter(|(name, _)| wanted(name)).flat_map(|(_, d)| d).for_each(|(s, d)| count(s, d))
            }
            // A build of version 3 to 5, serving while the current version is built.
            Value::Due(days) => {
                for ((day, stage), n) in days {
                    if before_today(day) {
                        *overdue.entry(stage).or_default() += n;
                    }
                }
            }
            other => other_key(&key, Some(&other))?,
        }
    }
    let mut report = FunnelReport::default();
    let mut order: Vec<String> = q.stages.clone();
    for stage in per_stage.keys() {
        if !order.contains(stage) {
            order.push(stage.clone());
        }
    }
    for (i, stage) in order.iter().enumerate() {
        let b = per_stage.get(stage).cloned().unwrap_or_default();
        report.won += b.won;
        report.won_unverified += b.won_unverified;
        let next_entered = q
            .stages
            .get(i + 1)
            .filter(|_| i + 1 < q.stages.len())
            .map(|next| per_stage.get(next).map_or(0, |n| n.entered));
        let dwell_n: u64 = b.dwell.values().sum();
        let dwell_sum: u64 = b.dwell.iter().map(|(d, c)| u64::from(*d) * c).sum();
        report.stages.push(StageReport {
            stage: stage.clone(),
            entered: b.entered,
            exited: b.exited,
            conversion_to_next: next_entered.filter(|_| b.entered > 0).map(|n| n as f64 / b.entered as f64),
            avg_dwell_working_days: (dwell_n > 0).then(|| dwell_sum as f64 / dwell_n as f64),
            median_dwell_working_days: histogram_median(&b.dwell),
            overdue: overdue.get(stage).copied().unwrap_or(0),
            root_causes: b.root_causes.clone(),
            moved_to: b.moved_to.clone(),
        });
    }
    report.lost = report.stages.iter().filter(|s| s.stage == q.lost_stage).map(|s| s.entered).sum();
    Ok(report)
}

/// Most reports a [`ReportCache`] keeps.
const CACHE_ENTRIES: usize = 1024;

/// Funnel reports by the build and position they were computed at. A report depends only on
/// the serving tree (named by its build generation) at a log position and on the query, so
/// every caller asking the same question before the read model's next live step (20 ms by
/// default in the server) shares one computation: a dashboard polled by many managers
/// reads the buckets once per step, not once per call. Entries of older positions are
/// dropped when the cache is full.
#[derive(Debug, Default)]
pub struct ReportCache {
    reports: Mutex<HashMap<(sled::IVec, u64, FunnelQuery), Arc<FunnelReport>>>,
}

impl ReportCache {
    /// The report for `q` at `reader`'s build and position, computed on a miss.
    pub fn funnel(&self, reader: &Reader, q: &FunnelQuery) -> Result<Arc<FunnelReport>> {
        let key = (reader.tree.name(), reader.position, q.clone());
        if let Some(report) = self.reports.lock().expect("report cache").get(&key) {
            return Ok(report.clone());
        }
        // Computed outside the lock: two callers missing at once both compute the same report.
        let report = Arc::new(funnel(reader, q)?);
        let mut reports = self.reports.lock().expect("report cache");
        if reports.len() >= CACHE_ENTRIES {
            reports.retain(|(tree, position, _), _| *position == key.1 && *tree == key.0);
            if reports.len() >= CACHE_ENTRIES {
                reports.clear();
            }
        }
        reports.insert(key, report.clone());
        Ok(report)
    }

    /// Reports held now.
    pub fn len(&self) -> usize {
        self.reports.lock().expect("report cache").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_projection_runtime::testing::encoded;

    fn put(tree: &sled::Tree, key: &str, value: &Value) {
        tree.insert(key.as_bytes(), encoded(value)).unwrap();
    }

    fn entered(stage: &str, n: u64) -> Value {
        Value::Month(BTreeMap::from([(stage.to_owned(), Bucket { entered: n, ..Bucket::default() })]))
    }

    fn report(reader: &Reader, region: &str) -> Result<FunnelReport> {
        report_of(reader, Some(region), None)
    }

    fn report_of(reader: &Reader, region: Option<&str>, owner: Option<Uuid>) -> Result<FunnelReport> {
        let q = FunnelQuery {
            region: region.map(str::to_owned),
            owner,
            from_month: None,
            to_month: None,
            today: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            stages: vec!["初步接触".into(), "需求确认".into()],
            lost_stage: "输单".into(),
        };
        funnel(reader, &q)
    }

    /// A region named with a `/` puts its keys under another region's prefix (`b/r:A/B/...`
    /// under `b/r:A/`): each region's report holds its own counts only. A version 2 bucket
    /// in the scope (the build made before an upgrade, still serving) is refused as
    /// `Upgrading`, not read as a month.
    #[test]
    fn regions_with_a_slash_stay_apart_and_a_version_2_build_is_refused() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("funnel/1").unwrap();
        put(&tree, "b/r:A/2026-02", &entered("初步接触", 2));
        put(&tree, "b/r:A/B/2026-02", &entered("初步接触", 5));
        let mut days = [0; 31];
        days[2] = 7;
        put(&tree, "d/r:A/B/2026-02", &Value::Dues(BTreeMap::from([("初步接触".to_owned(), days)])));
        // A version 4 build's due days read as they were.
        put(&tree, "d/r:A/2026-02", &Value::Due(BTreeMap::from([((3, "初步接触".to_owned()), 1)])));
        let reader = Reader { tree: tree.clone(), position: 1 };
        let a = report(&reader, "A").unwrap();
        assert_eq!((a.stages[0].entered, a.stages[0].overdue), (2, 1));
        let ab = report(&reader, "A/B").unwrap();
        assert_eq!((ab.stages[0].entered, ab.stages[0].overdue), (5, 7));

        put(&tree, "b/r:A/2026-01/初步接触", &Value::Bucket(Box::new(Bucket { entered: 1, ..Bucket::default() })));
        let refused = report(&reader, "A").unwrap_err();
        assert!(matches!(refused, crm_projection_runtime::Error::Upgrading { .. }), "{refused}");
        assert_eq!(report(&reader, "A/B").unwrap(), ab);
    }

    /// Version 7 keeps an owner's counts by region in one value per month; a build of
    /// version 6 or older, serving during the rebuild, keeps region+owner keys and an
    /// owner's months whole. Both answer the owner and the region+owner funnels.
    #[test]
    fn an_owner_and_a_region_and_owner_read_both_layouts() {
        let owner = Uuid::from_u128(7);
        let entered_overdue = |r: &FunnelReport| (r.stages[0].entered, r.stages[0].overdue);
        let mut due = [0u32; 31];
        due[1] = 1;
        let dues = |n: u32| BTreeMap::from([("初步接触".to_owned(), due.map(|d| d * n))]);

        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("funnel/7").unwrap();
        let month = |n| match entered("初步接触", n) {
            Value::Month(m) => m,
            _ => unreachable!(),
        };
        put(
            &tree,
            &format!("b/o:{owner}/2026-02"),
            &Value::OwnerMonth(BTreeMap::from([("A".into(), month(2)), ("B".into(), month(3))])),
        );
        put(
            &tree,
            &format!("d/o:{owner}/2026-02"),
            &Value::OwnerDues(BTreeMap::from([("A".into(), dues(4)), ("B".into(), dues(5))])),
        );
        let reader = Reader { tree: tree.clone(), position: 1 };
        assert_eq!(entered_overdue(&report_of(&reader, None, Some(owner)).unwrap()), (5, 9));
        assert_eq!(entered_overdue(&report_of(&reader, Some("A"), Some(owner)).unwrap()), (2, 4));
        assert_eq!(entered_overdue(&report_of(&reader, Some("B"), Some(owner)).unwrap()), (3, 5));
        assert_eq!(entered_overdue(&report_of(&reader, Some("C"), Some(owner)).unwrap()), (0, 0));

        let old = db.open_tree("funnel/6").unwrap();
        put(&old, &format!("b/o:{owner}/2026-02"), &entered("初步接触", 5));
        put(&old, &format!("d/o:{owner}/2026-02"), &Value::Dues(dues(9)));
        put(&old, &format!("b/ro:A|{owner}/2026-02"), &entered("初步接触", 2));
        put(&old, &format!("d/ro:A|{owner}/2026-02"), &Value::Dues(dues(4)));
        let reader = Reader { tree: old, position: 1 };
        assert_eq!(entered_overdue(&report_of(&reader, None, Some(owner)).unwrap()), (5, 9));
        assert_eq!(entered_overdue(&report_of(&reader, Some("A"), Some(owner)).unwrap()), (2, 4));
        // No region+owner key for B: the owner counts nothing there (not its whole month).
        assert_eq!(entered_overdue(&report_of(&reader, Some("B"), Some(owner)).unwrap()), (0, 0));
    }
}
