//! proto -> domain for commands, domain -> proto for rules. Hand-written `From`/`TryFrom`
//! style functions; every failure names the request field.

use std::collections::BTreeMap;

use crm_domain::{
    AbSplit, ActivityKind, AssignmentRules, Channel, DuplicateThresholds, MergeWinner, Pipeline, Role, Rules, Strategy,
    Transition, TransitionCondition,
};
use crm_proto::v1 as pb;
use uuid::Uuid;

use super::engine::RunOptions;
use super::error::CommandError;
use super::ids::IdempotencyKey;

type Result<T, E = CommandError> = std::result::Result<T, E>;

/// `principal`: the authenticated user id; it is the actor, and `options.actor` is only used
/// for calls that did not pass the auth layer (handlers called directly).
/// `command` (the RPC name) scopes the idempotency key, so reusing a key for another kind of
/// command is not mistaken for a retry.
pub(crate) fn run_options(
    options: Option<pb::CommandOptions>,
    principal: Option<String>,
    command: &str,
) -> Result<RunOptions> {
    let o = options.unwrap_or_default();
    let key = match o.idempotency_key.trim() {
        "" => None,
        key => Some(IdempotencyKey::new(&format!("{command}\u{0}{key}"))),
    };
    let actor = principal.unwrap_or_else(|| o.actor.trim().to_owned());
    if actor.is_empty() {
        return Err(CommandError::request(
            "options.actor",
            "required when the call carries no authenticated principal",
        ));
    }
    let correlation_id = match o.correlation_id.trim() {
        "" => key.as_ref().map_or_else(Uuid::now_v7, |k| k.derived("correlation_id")),
        text => uuid("options.correlation_id", text)?,
    };
    let causation_id = match o.causation_id.trim() {
        "" => None,
        text => Some(uuid("options.causation_id", text)?),
    };
    let source = match o.source.trim() {
        "" => "grpc".to_owned(),
        s => s.to_owned(),
    };
    Ok(RunOptions { expected_version: o.expected_version, key, actor, correlation_id, causation_id, source })
}

fn uuid(field: &str, text: &str) -> Result<Uuid> {
    // Accept a stream name too: `lead-<uuid>`.
    let bare = if text.len() > 36 { &text[text.len() - 36..] } else { text };
    Uuid::parse_str(bare).map_err(|_| CommandError::request(field, format!("`{text}` is not a UUID")))
}

/// A required id.
pub(crate) fn id<T: From<Uuid>>(field: &str, text: &str) -> Result<T> {
    let text = text.trim();
    if text.is_empty() {
        return Err(CommandError::request(field, "required"));
    }
    uuid(field, text).map(T::from)
}

/// An id the caller may leave empty: then derived from the idempotency key, or new.
pub(crate) fn new_id<T: From<Uuid>>(field: &str, text: &str, opts: &RunOptions) -> Result<T> {
    match text.trim() {
        "" => Ok(T::from(opts.key.as_ref().map_or_else(Uuid::now_v7, |k| k.derived(field)))),
        text => uuid(field, text).map(T::from),
    }
}

pub(crate) fn optional_id<T: From<Uuid>>(field: &str, text: &str) -> Result<Option<T>> {
    match text.trim() {
        "" => Ok(None),
        text => uuid(field, text).map(|u| Some(T::from(u))),
    }
}

pub(crate) fn opt(text: String) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

pub(crate) fn channel(r: &pb::CaptureLeadRequest) -> Result<Channel> {
    let reference = r.channel_ref.trim().to_owned();
    Ok(match pb::LeadChannel::try_from(r.channel) {
        Ok(pb::LeadChannel::WebForm) => Channel::WebForm { form_id: reference },
        Ok(pb::LeadChannel::Phone) => Channel::Phone { line: reference },
        Ok(pb::LeadChannel::ExhibitionScan) => {
            Channel::ExhibitionScan { exhibition_id: r.exhibition_id.trim().into(), booth: r.booth.trim().into() }
        }
        Ok(pb::LeadChannel::Import) => Channel::Import { batch_id: reference },
        Ok(pb::LeadChannel::Api) => Channel::Api { client: reference },
        Ok(pb::LeadChannel::Unspecified) => return Err(CommandError::request("channel", "required")),
        Err(_) => return Err(CommandError::request("channel", format!("unknown value {}", r.channel))),
    })
}

pub(crate) fn activity_kind(value: i32) -> Result<Option<ActivityKind>> {
    Ok(match pb::ActivityKind::try_from(value) {
        Ok(pb::ActivityKind::Unspecified) => None,
        Ok(pb::ActivityKind::Call) => Some(ActivityKind::Call),
        Ok(pb::ActivityKind::Wechat) => Some(ActivityKind::WeChat),
        Ok(pb::ActivityKind::Visit) => Some(ActivityKind::Visit),
        Ok(pb::ActivityKind::Email) => Some(ActivityKind::Email),
        Ok(pb::ActivityKind::Meeting) => Some(ActivityKind::Meeting),
        Err(_) => return Err(CommandError::request("kind", format!("unknown value {value}"))),
    })
}

pub(crate) fn role(field: &str, value: i32) -> Result<Role> {
    Ok(match pb::UserRole::try_from(value) {
        Ok(pb::UserRole::SalesRep) => Role::SalesRep,
        Ok(pb::UserRole::RegionalManager) => Role::RegionalManager,
        Ok(pb::UserRole::OperationsDirector) => Role::OperationsDirector,
        Ok(pb::UserRole::Auditor) => Role::Auditor,
        Ok(pb::UserRole::Administrator) => Role::Administrator,
        Ok(pb::UserRole::Unspecified) => return Err(CommandError::request(field, "required")),
        Err(_) => return Err(CommandError::request(field, format!("unknown value {value}"))),
    })
}

pub(crate) fn merge_winners(winners: BTreeMap<String, i32>) -> Result<BTreeMap<String, MergeWinner>> {
    winners
        .into_iter()
        .map(|(field, value)| {
            let winner = match pb::MergeWinner::try_from(value) {
                Ok(pb::MergeWinner::Absorbed) => MergeWinner::Absorbed,
                Ok(pb::MergeWinner::Survivor | pb::MergeWinner::Unspecified) => MergeWinner::Survivor,
                Err(_) => {
                    return Err(CommandError::request(format!("winners.{field}"), format!("unknown value {value}")))
                }
            };
            Ok((field, winner))
        })
        .collect()
}

pub(crate) fn date(field: &str, text: &str) -> Result<Option<chrono::NaiveDate>> {
    match text.trim() {
        "" => Ok(None),
        text => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| CommandError::request(field, format!("`{text}` is not a YYYY-MM-DD date"))),
    }
}

pub(crate) fn timestamp(
    field: &str,
    ts: Option<prost_types::Timestamp>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    match ts {
        None => Ok(None),
        Some(ts) => chrono::DateTime::from_timestamp(ts.seconds, ts.nanos.max(0) as u32)
            .map(Some)
            .ok_or_else(|| CommandError::request(field, "timestamp out of range")),
    }
}

fn strategy(field: &str, value: i32) -> Result<Strategy> {
    match pb::AssignmentStrategy::try_from(value) {
        Ok(pb::AssignmentStrategy::LeastLoaded | pb::AssignmentStrategy::Unspecified) => Ok(Strategy::LeastLoaded),
        Ok(pb::AssignmentStrategy::RoundRobin) => Ok(Strategy::RoundRobin),
        Err(_) => Err(CommandError::request(field, format!("unknown value {value}"))),
    }
}

fn strategy_to_proto(s: Strategy) -> i32 {
    match s {
        Strategy::LeastLoaded => pb::AssignmentStrategy::LeastLoaded as i32,
        Strategy::RoundRobin => pb::AssignmentStrategy::RoundRobin as i32,
    }
}

fn small(field: &str, value: u32) -> Result<u8> {
    u8::try_from(value).map_err(|_| CommandError::request(field, format!("{value} is out of range")))
}

pub(crate) fn rules_from_proto(r: pb::RuleSet) -> Result<Rules> {
    let a = r.assignment.unwrap_or_default();
    let ab_split = match a.ab_split {
        None => None,
        Some(split) => Some(AbSplit {
            experiment: split.experiment,
            percent_b: small("rules.assignment.ab_split.percent_b", split.percent_b)?,
            strategy_b: strategy("rules.assignment.ab_split.strategy_b", split.strategy_b)?,
        }),
    };
    let mut transitions = Vec::with_capacity(r.transitions.len());
    for (i, t) in r.transitions.into_iter().enumerate() {
        let condition = match pb::TransitionCondition::try_from(t.condition) {
            Ok(pb::TransitionCondition::Unspecified) => None,
            Ok(pb::TransitionCondition::RepeatCustomer) => Some(TransitionCondition::RepeatCustomer),
            Err(_) => return Err(CommandError::request(format!("rules.transitions[{i}].condition"), "unknown value")),
        };
        transitions.push(Transition { from: t.from, to: t.to, evidence: t.evidence, condition });
    }
    Ok(Rules {
        version: r.version,
        pipeline: Pipeline { stages: r.stages, won_stage: r.won_stage, lost_stage: r.lost_stage, transitions },
        root_cause_tags: r.root_cause_tags,
        stage_time_limits: r.stage_time_limit_days.into_iter().collect(),
        assignment: AssignmentRules {
            region_teams: a.region_teams.into_iter().collect(),
            default_team: opt(a.default_team),
            strategy: strategy("rules.assignment.strategy", a.strategy)?,
            ab_split,
            unclaimed_alert_hours: a.unclaimed_alert_hours,
        },
        duplicates: DuplicateThresholds {
            company_name_similarity_pct: small("rules.company_name_similarity_pct", r.company_name_similarity_pct)?,
            contact_name_edit_distance: small("rules.contact_name_edit_distance", r.contact_name_edit_distance)?,
        },
        follow_up_reminder_days: r.follow_up_reminder_days,
        activity_inherit_hours: r.activity_inherit_hours,
        merge_reasons: r.merge_reasons,
    })
}

pub(crate) fn rules_to_proto(r: &Rules) -> pb::RuleSet {
    pb::RuleSet {
        version: r.version,
        stages: r.pipeline.stages.clone(),
        won_stage: r.pipeline.won_stage.clone(),
        lost_stage: r.pipeline.lost_stage.clone(),
        transitions: r
            .pipeline
            .transitions
            .iter()
            .map(|t| pb::StageTransition {
                from: t.from.clone(),
                to: t.to.clone(),
                evidence: t.evidence.clone(),
                condition: match t.condition {
                    None => pb::TransitionCondition::Unspecified as i32,
                    Some(TransitionCondition::RepeatCustomer) => pb::TransitionCondition::RepeatCustomer as i32,
                },
            })
            .collect(),
        root_cause_tags: r.root_cause_tags.clone(),
        stage_time_limit_days: r.stage_time_limits.clone().into_iter().collect(),
        assignment: Some(pb::AssignmentRules {
            region_teams: r.assignment.region_teams.clone().into_iter().collect(),
            default_team: r.assignment.default_team.clone().unwrap_or_default(),
            strategy: strategy_to_proto(r.assignment.strategy),
            ab_split: r.assignment.ab_split.as_ref().map(|s| pb::AbSplit {
                experiment: s.experiment.clone(),
                percent_b: u32::from(s.percent_b),
                strategy_b: strategy_to_proto(s.strategy_b),
            }),
            unclaimed_alert_hours: r.assignment.unclaimed_alert_hours,
        }),
        company_name_similarity_pct: u32::from(r.duplicates.company_name_similarity_pct),
        contact_name_edit_distance: u32::from(r.duplicates.contact_name_edit_distance),
        follow_up_reminder_days: r.follow_up_reminder_days,
        activity_inherit_hours: r.activity_inherit_hours,
        merge_reasons: r.merge_reasons.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_through_proto() {
        let mut rules = Rules { version: 4, ..Rules::default() };
        rules.assignment.region_teams.insert("北京".into(), "华北一组".into());
        rules.assignment.default_team = Some("直销".into());
        rules.assignment.ab_split =
            Some(AbSplit { experiment: "rr-vs-ll".into(), percent_b: 30, strategy_b: Strategy::RoundRobin });
        assert_eq!(rules_from_proto(rules_to_proto(&rules)).unwrap(), rules);
    }
}
