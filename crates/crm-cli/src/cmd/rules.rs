//! `crmctl rules get|set`: the rule set as TOML, validated and diffed before
//! `CommandService.ChangeRules` applies it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use crm_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::client::{status, Connection};

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCmd {
    /// Print the rules in force as TOML (the input format of `rules set`).
    Get {
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
    },
    /// Validate a TOML rule set, show what changes, then apply it as the next version.
    Set {
        file: PathBuf,
        /// Why the rules change (recorded in the RulesChanged event).
        #[arg(long)]
        reason: String,
        /// Apply without asking (needed when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Only validate and show the difference.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rules {
    stages: Vec<String>,
    won_stage: String,
    lost_stage: String,
    #[serde(default)]
    root_cause_tags: Vec<String>,
    #[serde(default)]
    merge_reasons: Vec<String>,
    #[serde(default)]
    company_name_similarity_pct: u32,
    #[serde(default)]
    contact_name_edit_distance: u32,
    #[serde(default)]
    follow_up_reminder_days: u32,
    #[serde(default)]
    activity_inherit_hours: u32,
    /// Per stage, in working days.
    #[serde(default)]
    stage_time_limit_days: BTreeMap<String, u32>,
    #[serde(default)]
    assignment: Assignment,
    #[serde(default)]
    transitions: Vec<Transition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Assignment {
    #[serde(default)]
    default_team: String,
    /// `least_loaded` or `round_robin`.
    #[serde(default)]
    strategy: String,
    #[serde(default)]
    unclaimed_alert_hours: u32,
    #[serde(default)]
    region_teams: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ab_split: Option<AbSplit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AbSplit {
    experiment: String,
    percent_b: u32,
    strategy_b: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Transition {
    from: String,
    to: String,
    #[serde(default)]
    evidence: Vec<String>,
    /// Empty (always) or `repeat_customer`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    condition: String,
}

fn strategy_name(s: i32) -> String {
    match pb::AssignmentStrategy::try_from(s) {
        Ok(pb::AssignmentStrategy::LeastLoaded) => "least_loaded".into(),
        Ok(pb::AssignmentStrategy::RoundRobin) => "round_robin".into(),
        _ => String::new(),
    }
}

fn strategy_value(field: &str, s: &str) -> Result<i32> {
    Ok(match s {
        "" => pb::AssignmentStrategy::Unspecified,
        "least_loaded" => pb::AssignmentStrategy::LeastLoaded,
        "round_robin" => pb::AssignmentStrategy::RoundRobin,
        other => bail!("{field}: unknown strategy {other:?}; use least_loaded or round_robin"),
    } as i32)
}

impl From<pb::RuleSet> for Rules {
    fn from(r: pb::RuleSet) -> Rules {
        let a = r.assignment.unwrap_or_default();
        Rules {
            stages: r.stages,
            won_stage: r.won_stage,
            lost_stage: r.lost_stage,
            root_cause_tags: r.root_cause_tags,
            merge_reasons: r.merge_reasons,
            company_name_similarity_pct: r.company_name_similarity_pct,
            contact_name_edit_distance: r.contact_name_edit_distance,
            follow_up_reminder_days: r.follow_up_reminder_days,
            activity_inherit_hours: r.activity_inherit_hours,
            stage_time_limit_days: r.stage_time_limit_days.into_iter().collect(),
            assignment: Assignment {
                default_team: a.default_team,
                strategy: strategy_name(a.strategy),
                unclaimed_alert_hours: a.unclaimed_alert_hours,
                region_teams: a.region_teams.into_iter().collect(),
                ab_split: a.ab_split.filter(|s| !s.experiment.is_empty()).map(|s| AbSplit {
                    experiment: s.experiment,
                    percent_b: s.percent_b,
                    strategy_b: strategy_name(s.strategy_b),
                }),
            },
            transitions: r
                .transitions
                .into_iter()
                .map(|t| Transition {
                    from: t.from,
                    to: t.to,
                    evidence: t.evidence,
                    condition: if t.condition == pb::TransitionCondition::RepeatCustomer as i32 {
                        "repeat_customer".into()
                    } else {
                        String::new()
                    },
                })
                .collect(),
        }
    }
}

impl Rules {
    /// Checks what can be checked without the server; the server checks again.
    pub(crate) fn validate(&self) -> Result<()> {
        let mut errors = Vec::new();
        if self.stages.is_empty() {
            errors.push("stages: at least one stage".to_owned());
        }
        let known = |s: &str| self.stages.iter().any(|x| x == s) || s == self.won_stage || s == self.lost_stage;
        if self.won_stage.is_empty() || self.lost_stage.is_empty() {
            errors.push("won_stage and lost_stage must be set".to_owned());
        }
        for (i, t) in self.transitions.iter().enumerate() {
            for s in [&t.from, &t.to] {
                if !known(s) {
                    errors.push(format!("transitions[{i}]: unknown stage {s:?}"));
                }
            }
            if !matches!(t.condition.as_str(), "" | "repeat_customer") {
                errors.push(format!("transitions[{i}].condition: {:?} is not repeat_customer", t.condition));
            }
        }
        for s in self.stage_time_limit_days.keys() {
            if !known(s) {
                errors.push(format!("stage_time_limit_days: unknown stage {s:?}"));
            }
        }
        if self.company_name_similarity_pct > 100 {
            errors.push("company_name_similarity_pct: at most 100".to_owned());
        }
        if let Some(ab) = &self.assignment.ab_split {
            if ab.percent_b > 100 {
                errors.push("assignment.ab_split.percent_b: at most 100".to_owned());
            }
        }
        if let Err(e) = self.to_pb() {
            errors.push(e.to_string());
        }
        if !errors.is_empty() {
            bail!("the rule set is invalid:\n  {}", errors.join("\n  "));
        }
        Ok(())
    }

    fn to_pb(&self) -> Result<pb::RuleSet> {
        Ok(pb::RuleSet {
            version: 0,
            stages: self.stages.clone(),
            won_stage: self.won_stage.clone(),
            lost_stage: self.lost_stage.clone(),
            transitions: self
                .transitions
                .iter()
                .map(|t| pb::StageTransition {
                    from: t.from.clone(),
                    to: t.to.clone(),
                    evidence: t.evidence.clone(),
                    condition: if t.condition == "repeat_customer" {
                        pb::TransitionCondition::RepeatCustomer as i32
                    } else {
                        0
                    },
                })
                .collect(),
            root_cause_tags: self.root_cause_tags.clone(),
            stage_time_limit_days: self.stage_time_limit_days.clone().into_iter().collect(),
            assignment: Some(pb::AssignmentRules {
                region_teams: self.assignment.region_teams.clone().into_iter().collect(),
                default_team: self.assignment.default_team.clone(),
                strategy: strategy_value("assignment.strategy", &self.assignment.strategy)?,
                ab_split: match &self.assignment.ab_split {
                    None => None,
                    Some(s) => Some(pb::AbSplit {
                        experiment: s.experiment.clone(),
                        percent_b: s.percent_b,
                        strategy_b: strategy_value("assignment.ab_split.strategy_b", &s.strategy_b)?,
                    }),
                },
                unclaimed_alert_hours: self.assignment.unclaimed_alert_hours,
            }),
            company_name_similarity_pct: self.company_name_similarity_pct,
            contact_name_edit_distance: self.contact_name_edit_distance,
            follow_up_reminder_days: self.follow_up_reminder_days,
            activity_inherit_hours: self.activity_inherit_hours,
            merge_reasons: self.merge_reasons.clone(),
        })
    }
}

/// A line diff (longest common subsequence): `-` removed, `+` added, unchanged lines omitted.
pub(crate) fn diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", b[j]));
            j += 1;
        } else {
            out.push(format!("- {}", a[i]));
            i += 1;
        }
    }
    out
}

pub(crate) async fn run(conn: &Connection, c: RulesCmd) -> Result<u8> {
    let mut commands = conn.connect().await?.commands();
    let current = commands.get_rules(pb::GetRulesRequest {}).await.map_err(|s| status("GetRules", s))?.into_inner();
    let version = current.rules.as_ref().map_or(0, |r| r.version);
    let current_rules = Rules::from(current.rules.unwrap_or_default());
    let current_text = toml::to_string_pretty(&current_rules)?;
    match c {
        RulesCmd::Get { out } => {
            let text = format!("# rules version {version}\n{current_text}");
            match out {
                Some(p) => std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?,
                None => print!("{text}"),
            }
            Ok(0)
        }
        RulesCmd::Set { file, reason, yes, dry_run } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let new: Rules =
                toml::from_str(&text).with_context(|| format!("{} is not a valid rule set", file.display()))?;
            new.validate()?;
            let new_text = toml::to_string_pretty(&new)?;
            let changes = diff(&current_text, &new_text);
            if changes.is_empty() {
                println!("no change: {} equals the rules in force (version {version})", file.display());
                return Ok(0);
            }
            println!("changes from version {version}:");
            for line in &changes {
                println!("{line}");
            }
            if dry_run {
                return Ok(0);
            }
            if !yes {
                if !std::io::stdin().is_terminal() {
                    bail!("not applied: pass --yes to apply without a terminal");
                }
                eprint!("apply as version {}? [y/N] ", version + 1);
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    println!("not applied");
                    return Ok(1);
                }
            }
            let r = commands
                .change_rules(pb::ChangeRulesRequest {
                    options: Some(pb::CommandOptions {
                        // What was diffed is what gets replaced: a concurrent change is refused.
                        expected_version: current.stream_version,
                        source: "crmctl".into(),
                        ..Default::default()
                    }),
                    rules: Some(new.to_pb()?),
                    reason,
                })
                .await
                .map_err(|s| status("ChangeRules", s))?
                .into_inner();
            println!("applied: rules version {} at position {}", version + 1, r.position);
            println!("projections that depend on the rules rebuild themselves; watch with `crmctl status`");
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_only_changed_lines() {
        assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), vec!["+ x".to_owned(), "- b".to_owned()]);
        assert!(diff("a\n", "a\n").is_empty());
    }

    #[test]
    fn validation_names_unknown_stages() {
        let r = Rules {
            stages: vec!["lead".into()],
            won_stage: "won".into(),
            lost_stage: "lost".into(),
            transitions: vec![Transition {
                from: "lead".into(),
                to: "demo".into(),
                evidence: vec![],
                condition: String::new(),
            }],
            ..Rules::default()
        };
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("transitions[0]: unknown stage \"demo\""), "{e}");
    }
}
