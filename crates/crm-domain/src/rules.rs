//! Operator-configured rules: the sales pipeline and its evidence, root-cause tags, stage
//! time limits, assignment, duplicate thresholds, reminders. Rules live in the `rules`
//! stream; every change is a validated, versioned [`RulesChanged`] event.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::event::{Event, RulesChanged};
use crate::CommandContext;

/// The complete rule set. `version` 0 is the built-in default; every change increments it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    pub version: u64,
    pub pipeline: Pipeline,
    /// Tags a stage move must carry one of: why the deal moved.
    pub root_cause_tags: Vec<String>,
    /// Maximum dwell time per stage, in working days (Monday to Friday).
    pub stage_time_limits: BTreeMap<String, u32>,
    pub assignment: AssignmentRules,
    pub duplicates: DuplicateThresholds,
    /// Customers without an activity for this many days raise a reminder.
    pub follow_up_reminder_days: u32,
    /// Empty activity fields are inherited from the previous activity within this window.
    pub activity_inherit_hours: u32,
    /// Reasons a merge may give; free text comes on top.
    pub merge_reasons: Vec<String>,
}

/// Ordered stages plus the allowed moves between them. `won_stage` and `lost_stage` end an
/// opportunity and are reached only through MarkWon / MarkLost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub stages: Vec<String>,
    pub won_stage: String,
    pub lost_stage: String,
    pub transitions: Vec<Transition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: String,
    pub to: String,
    /// Evidence keys that must be present and non-empty, e.g. `meeting_notes_ref`.
    pub evidence: Vec<String>,
    /// A skip rule: the move is only allowed when the condition holds.
    pub condition: Option<TransitionCondition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransitionCondition {
    /// The customer has won a deal before.
    RepeatCustomer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// The eligible candidate with the fewest open leads (ties: lowest user id).
    LeastLoaded,
    /// The eligible candidate assigned longest ago (never assigned first; ties: lowest id).
    RoundRobin,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LeastLoaded => "least_loaded",
            Strategy::RoundRobin => "round_robin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRules {
    /// Region (as in lead and user records, e.g. "北京") to team.
    pub region_teams: BTreeMap<String, String>,
    /// Team for leads whose region is unknown or unmapped; `None` refuses them.
    pub default_team: Option<String>,
    pub strategy: Strategy,
    pub ab_split: Option<AbSplit>,
    /// An assigned lead nobody claimed within this many hours raises an alert.
    pub unclaimed_alert_hours: u32,
}

/// A deterministic split: a lead goes to arm B when `bucket(lead id) < percent_b`, where the
/// bucket is FNV-1a-64 of the lead id's 16 bytes modulo 100.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbSplit {
    pub experiment: String,
    pub percent_b: u8,
    pub strategy_b: Strategy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateThresholds {
    /// Company-name similarity (percent) above which two customers are candidates.
    pub company_name_similarity_pct: u8,
    /// Maximum edit distance between contact names still considered the same person.
    pub contact_name_edit_distance: u8,
}

pub const STAGE_INITIAL: &str = "初步接触";
pub const STAGE_NEEDS: &str = "需求确认";
pub const STAGE_DEMO: &str = "方案演示";
pub const STAGE_NEGOTIATION: &str = "商务谈判";
pub const STAGE_CONTRACT: &str = "合同签署";
pub const STAGE_WON: &str = "赢单";
pub const STAGE_LOST: &str = "输单";

fn transition(from: &str, to: &str, evidence: &[&str]) -> Transition {
    Transition {
        from: from.into(),
        to: to.into(),
        evidence: evidence.iter().map(|e| (*e).to_owned()).collect(),
        condition: None,
    }
}

impl Default for Rules {
    /// The defaults from the issue: 初步接触 → 需求确认 → 方案演示 → 商务谈判 → 合同签署, a
    /// repeat customer may go straight to 合同签署; 72 hours of field inheritance; 7 days
    /// without follow-up; 2 hours unclaimed; 85% company-name similarity; edit distance 2.
    fn default() -> Self {
        let stages = [STAGE_INITIAL, STAGE_NEEDS, STAGE_DEMO, STAGE_NEGOTIATION, STAGE_CONTRACT];
        let mut repeat = transition(STAGE_INITIAL, STAGE_CONTRACT, &["previous_contract_ref"]);
        repeat.condition = Some(TransitionCondition::RepeatCustomer);
        Rules {
            version: 0,
            pipeline: Pipeline {
                stages: stages.iter().map(|s| (*s).to_owned()).collect(),
                won_stage: STAGE_WON.into(),
                lost_stage: STAGE_LOST.into(),
                transitions: vec![
                    transition(STAGE_INITIAL, STAGE_NEEDS, &["requirements_note"]),
                    transition(STAGE_NEEDS, STAGE_DEMO, &["meeting_notes_ref", "customer_feedback"]),
                    transition(STAGE_DEMO, STAGE_NEGOTIATION, &["quote_ref"]),
                    transition(STAGE_NEGOTIATION, STAGE_CONTRACT, &["contract_draft_ref"]),
                    repeat,
                ],
            },
            root_cause_tags: ["客户主动", "需求明确", "演示认可", "价格达成", "老客户复购", "竞品对比", "其他"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            stage_time_limits: stages.iter().zip([5, 10, 10, 15, 10]).map(|(s, d)| ((*s).to_owned(), d)).collect(),
            assignment: AssignmentRules {
                region_teams: BTreeMap::new(),
                default_team: None,
                strategy: Strategy::LeastLoaded,
                ab_split: None,
                unclaimed_alert_hours: 2,
            },
            duplicates: DuplicateThresholds { company_name_similarity_pct: 85, contact_name_edit_distance: 2 },
            follow_up_reminder_days: 7,
            activity_inherit_hours: 72,
            merge_reasons: ["同一手机号", "同一统一社会信用代码", "同名公司", "人工核实"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

impl Rules {
    /// The transition from `from` to `to`, if the pipeline allows it.
    pub fn transition(&self, from: &str, to: &str) -> Option<&Transition> {
        self.pipeline.transitions.iter().find(|t| t.from == from && t.to == to)
    }

    pub fn first_stage(&self) -> &str {
        self.pipeline.stages.first().map_or(STAGE_INITIAL, String::as_str)
    }

    pub fn last_stage(&self) -> &str {
        self.pipeline.stages.last().map_or(STAGE_CONTRACT, String::as_str)
    }

    /// Checks the rule set is usable; the version is not checked (the aggregate sets it).
    pub fn validate(&self) -> Result<(), DomainError> {
        let p = &self.pipeline;
        if p.stages.is_empty() {
            return Err(DomainError::invalid(
                "pipeline.stages",
                "rules.pipeline_empty",
                "at least one stage is required",
            ));
        }
        let stages: BTreeSet<&str> = p.stages.iter().map(String::as_str).collect();
        if stages.len() != p.stages.len() || p.stages.iter().any(|s| s.trim().is_empty()) {
            return Err(DomainError::invalid(
                "pipeline.stages",
                "rules.stage_names",
                "stage names must be unique and non-empty",
            ));
        }
        if p.won_stage.trim().is_empty() || p.lost_stage.trim().is_empty() || p.won_stage == p.lost_stage {
            return Err(DomainError::invalid(
                "pipeline.won_stage",
                "rules.end_stages",
                "won and lost stages must differ and be non-empty",
            ));
        }
        if stages.contains(p.won_stage.as_str()) || stages.contains(p.lost_stage.as_str()) {
            return Err(DomainError::invalid(
                "pipeline.stages",
                "rules.end_stages",
                "won and lost are end states, not pipeline stages",
            ));
        }
        for t in &p.transitions {
            for stage in [&t.from, &t.to] {
                if !stages.contains(stage.as_str()) {
                    return Err(DomainError::invalid(
                        "pipeline.transitions",
                        "rules.unknown_stage",
                        format!("transition {} -> {} names unknown stage {stage}", t.from, t.to),
                    ));
                }
            }
            if t.from == t.to {
                return Err(DomainError::invalid(
                    "pipeline.transitions",
                    "rules.self_transition",
                    format!("{} -> {}", t.from, t.to),
                ));
            }
        }
        let pairs: BTreeSet<(&str, &str)> = p.transitions.iter().map(|t| (t.from.as_str(), t.to.as_str())).collect();
        if pairs.len() != p.transitions.len() {
            return Err(DomainError::invalid(
                "pipeline.transitions",
                "rules.duplicate_transition",
                "a transition is listed twice",
            ));
        }
        if self.root_cause_tags.is_empty() || self.root_cause_tags.iter().any(|t| t.trim().is_empty()) {
            return Err(DomainError::invalid(
                "root_cause_tags",
                "rules.root_cause_tags",
                "at least one non-empty tag is required",
            ));
        }
        if let Some(stage) = self.stage_time_limits.keys().find(|s| !stages.contains(s.as_str())) {
            return Err(DomainError::invalid("stage_time_limits", "rules.unknown_stage", format!("no stage {stage}")));
        }
        if self.stage_time_limits.values().any(|d| *d == 0) {
            return Err(DomainError::invalid(
                "stage_time_limits",
                "rules.positive",
                "limits are at least one working day",
            ));
        }
        if let Some(split) = &self.assignment.ab_split {
            if split.percent_b > 100 || split.experiment.trim().is_empty() {
                return Err(DomainError::invalid(
                    "assignment.ab_split",
                    "rules.ab_split",
                    "percent_b is 0..=100 and the experiment is named",
                ));
            }
        }
        if self.assignment.region_teams.iter().any(|(r, t)| r.trim().is_empty() || t.trim().is_empty()) {
            return Err(DomainError::invalid(
                "assignment.region_teams",
                "rules.region_teams",
                "regions and teams are non-empty",
            ));
        }
        let d = &self.duplicates;
        if !(50..=100).contains(&d.company_name_similarity_pct) {
            return Err(DomainError::invalid(
                "duplicates.company_name_similarity_pct",
                "rules.range",
                "must be 50..=100",
            ));
        }
        if d.contact_name_edit_distance > 10 {
            return Err(DomainError::invalid("duplicates.contact_name_edit_distance", "rules.range", "must be 0..=10"));
        }
        if self.follow_up_reminder_days == 0 {
            return Err(DomainError::invalid("follow_up_reminder_days", "rules.positive", "must be at least 1"));
        }
        if self.merge_reasons.is_empty() || self.merge_reasons.iter().any(|r| r.trim().is_empty()) {
            return Err(DomainError::invalid(
                "merge_reasons",
                "rules.merge_reasons",
                "at least one non-empty reason is required",
            ));
        }
        Ok(())
    }
}

/// The `rules` stream as an aggregate: the current rule set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleBook {
    pub current: Rules,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesCommand {
    /// Replace the rule set. `rules.version` is ignored; the new version is current + 1.
    ChangeRules { rules: Rules, reason: String },
}

impl Aggregate for RuleBook {
    type Command = RulesCommand;
    const KIND: &'static str = "rules";

    fn handle(&self, cmd: RulesCommand, _ctx: &CommandContext, _rules: &Rules) -> Result<Vec<Event>, DomainError> {
        match cmd {
            RulesCommand::ChangeRules { mut rules, reason } => {
                rules.validate()?;
                rules.version = self.current.version + 1;
                let mut unchanged = rules.clone();
                unchanged.version = self.current.version;
                if unchanged == self.current {
                    return Err(DomainError::precondition("rules.unchanged", "the new rules equal the current ones"));
                }
                Ok(vec![Event::RulesChanged(RulesChanged { rules, reason })])
            }
        }
    }

    fn apply(&mut self, event: &Event) {
        if let Event::RulesChanged(e) = event {
            self.current = e.rules.clone();
        }
    }
}
