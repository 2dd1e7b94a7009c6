//! Automatic lead assignment: a pure function of the rules, the lead and the candidates.
//!
//! Region → team (`region_teams`, else `default_team`), then inside the team the strategy
//! (least-loaded or round-robin) among active members below capacity. With an A/B split the
//! lead id's hash picks the arm deterministically, so replaying a decision gives the same arm.

use chrono::{DateTime, Utc};

use crate::error::DomainError;
use crate::event::{AbArm, AssignmentTrace, CandidateTrace};
use crate::ids::{LeadId, UserId};
use crate::rules::{Rules, Strategy};

/// A user who could take the lead, with the load the caller measured (open leads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub user_id: UserId,
    pub team: Option<String>,
    pub active: bool,
    pub load: u32,
    pub capacity: u32,
    /// When the user last got a lead; round-robin picks the oldest.
    pub last_assigned_at: Option<DateTime<Utc>>,
}

/// FNV-1a 64 over the lead id's bytes, modulo 100. Stable across versions and platforms.
pub fn ab_bucket(lead_id: LeadId) -> u8 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in lead_id.0.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % 100) as u8
}

/// Chooses the assignee and explains the choice. Refuses with `assignment.no_team` when the
/// region maps to no team, and `assignment.no_capacity` when nobody in the team can take it.
pub fn choose_assignee(
    rules: &Rules,
    lead_id: LeadId,
    region: Option<&str>,
    candidates: &[Candidate],
) -> Result<(UserId, AssignmentTrace), DomainError> {
    let a = &rules.assignment;
    let (rule, team) = match region.and_then(|r| a.region_teams.get(r).map(|t| (r, t))) {
        Some((region, team)) => (format!("region:{region}->team:{team}"), team.clone()),
        None => match &a.default_team {
            Some(team) => (format!("default_team->team:{team}"), team.clone()),
            None => {
                return Err(DomainError::missing(
                    "assignment.no_team",
                    vec!["assignment.region_teams".into()],
                    format!("no team for region {}", region.unwrap_or("(unknown)")),
                ))
            }
        },
    };
    let (strategy, arm) = match &a.ab_split {
        Some(split) => {
            let bucket = ab_bucket(lead_id);
            let b = bucket < split.percent_b;
            let strategy = if b { split.strategy_b } else { a.strategy };
            let arm = AbArm { experiment: split.experiment.clone(), arm: if b { "B" } else { "A" }.into(), bucket };
            (strategy, Some(arm))
        }
        None => (a.strategy, None),
    };
    let mut traces = Vec::with_capacity(candidates.len());
    let mut eligible = Vec::new();
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by_key(|c| c.user_id);
    for c in sorted {
        let verdict = if !c.active {
            "inactive"
        } else if c.team.as_deref() != Some(team.as_str()) {
            "other_team"
        } else if c.load >= c.capacity {
            "at_capacity"
        } else {
            eligible.push(c);
            "eligible"
        };
        traces.push(CandidateTrace {
            user_id: c.user_id,
            team: c.team.clone(),
            load: c.load,
            capacity: c.capacity,
            verdict: verdict.into(),
        });
    }
    let chosen = match strategy {
        Strategy::LeastLoaded => eligible.iter().min_by_key(|c| (c.load, c.user_id)),
        Strategy::RoundRobin => eligible.iter().min_by_key(|c| (c.last_assigned_at, c.user_id)),
    };
    let Some(chosen) = chosen else {
        return Err(DomainError::missing(
            "assignment.no_capacity",
            vec![format!("an active member of team {team} below capacity")],
            format!("{} candidates considered, none eligible", candidates.len()),
        ));
    };
    let trace = AssignmentTrace { rule, team, strategy, arm, candidates: traces, rules_version: rules.version };
    Ok((chosen.user_id, trace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::AbSplit;
    use uuid::Uuid;

    fn user(n: u128) -> UserId {
        UserId(Uuid::from_u128(n))
    }

    fn candidate(n: u128, team: &str, load: u32, capacity: u32) -> Candidate {
        Candidate { user_id: user(n), team: Some(team.into()), active: true, load, capacity, last_assigned_at: None }
    }

    fn rules() -> Rules {
        let mut rules = Rules::default();
        rules.assignment.region_teams.insert("北京".into(), "华北".into());
        rules.assignment.region_teams.insert("上海".into(), "华东".into());
        rules
    }

    #[test]
    fn region_to_team_then_least_loaded() {
        let candidates = [
            candidate(1, "华北", 5, 10),
            candidate(2, "华北", 2, 10),
            candidate(3, "华东", 0, 10),
            candidate(4, "华北", 10, 10),
            Candidate { active: false, ..candidate(5, "华北", 0, 10) },
        ];
        let (chosen, trace) = choose_assignee(&rules(), LeadId(Uuid::from_u128(9)), Some("北京"), &candidates).unwrap();
        assert_eq!(chosen, user(2));
        assert_eq!(trace.rule, "region:北京->team:华北");
        let verdicts: Vec<&str> = trace.candidates.iter().map(|c| c.verdict.as_str()).collect();
        assert_eq!(verdicts, ["eligible", "eligible", "other_team", "at_capacity", "inactive"]);
        assert_eq!(trace.arm, None);
    }

    #[test]
    fn round_robin_picks_longest_idle() {
        let mut rules = rules();
        rules.assignment.strategy = Strategy::RoundRobin;
        let t = |h| Some(DateTime::parse_from_rfc3339(&format!("2026-03-02T{h:02}:00:00Z")).unwrap().to_utc());
        let candidates = [
            Candidate { last_assigned_at: t(9), ..candidate(1, "华东", 0, 10) },
            Candidate { last_assigned_at: t(8), ..candidate(2, "华东", 7, 10) },
            Candidate { last_assigned_at: t(10), ..candidate(3, "华东", 1, 10) },
        ];
        let (chosen, _) = choose_assignee(&rules, LeadId(Uuid::from_u128(9)), Some("上海"), &candidates).unwrap();
        assert_eq!(chosen, user(2));
    }

    #[test]
    fn refusals_name_the_rule() {
        let err = choose_assignee(&rules(), LeadId(Uuid::from_u128(9)), Some("成都"), &[]).unwrap_err();
        assert!(
            matches!(err, DomainError::FailedPrecondition { ref rule, .. } if rule == "assignment.no_team"),
            "{err}"
        );
        let full = [candidate(1, "华北", 3, 3)];
        let err = choose_assignee(&rules(), LeadId(Uuid::from_u128(9)), Some("北京"), &full).unwrap_err();
        assert!(
            matches!(err, DomainError::FailedPrecondition { ref rule, .. } if rule == "assignment.no_capacity"),
            "{err}"
        );
        let mut with_default = rules();
        with_default.assignment.default_team = Some("华北".into());
        let (chosen, trace) =
            choose_assignee(&with_default, LeadId(Uuid::from_u128(9)), None, &[candidate(1, "华北", 0, 3)]).unwrap();
        assert_eq!((chosen, trace.rule.as_str()), (user(1), "default_team->team:华北"));
    }

    #[test]
    fn ab_split_is_deterministic_and_roughly_proportional() {
        let mut rules = rules();
        rules.assignment.ab_split =
            Some(AbSplit { experiment: "rr-vs-ll".into(), percent_b: 30, strategy_b: Strategy::RoundRobin });
        let candidates = [candidate(1, "华北", 0, 1000), candidate(2, "华北", 1, 1000)];
        let mut b = 0;
        for n in 0..1000u128 {
            let lead = LeadId(Uuid::from_u128(n * 7919 + 1));
            let (_, first) = choose_assignee(&rules, lead, Some("北京"), &candidates).unwrap();
            let (_, again) = choose_assignee(&rules, lead, Some("北京"), &candidates).unwrap();
            assert_eq!(first, again);
            let arm = first.arm.unwrap();
            assert_eq!(arm.arm == "B", arm.bucket < 30);
            assert_eq!(first.strategy, if arm.arm == "B" { Strategy::RoundRobin } else { Strategy::LeastLoaded });
            b += usize::from(arm.arm == "B");
        }
        assert!((220..380).contains(&b), "arm B got {b} of 1000");
    }
}
