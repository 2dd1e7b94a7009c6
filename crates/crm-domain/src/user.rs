//! Users: salespeople and everyone else who acts on the CRM. Role and region changes are
//! events, so permissions are audited like everything else.

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::event::{Event, Role, UserCreated, UserDeactivated, UserRegionChanged, UserRoleChanged};
use crate::ids::UserId;
use crate::normalize::normalize_person_name;
use crate::rules::Rules;
use crate::CommandContext;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub id: Option<UserId>,
    pub name: String,
    pub role: Option<Role>,
    pub region: Option<String>,
    pub team: Option<String>,
    pub capacity: u32,
    pub active: bool,
    /// Open items moved away by handovers so far.
    pub handed_over: u32,
}

/// What other aggregates need to know about a user; commands carry it so the aggregate
/// receiving them can check, without loading the user itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub user_id: UserId,
    pub active: bool,
}

impl UserSummary {
    pub fn ensure_active(&self) -> Result<(), DomainError> {
        if self.active {
            Ok(())
        } else {
            Err(DomainError::precondition("user.inactive", format!("user {} is deactivated", self.user_id)))
        }
    }
}

impl User {
    /// `None` when the user does not exist.
    pub fn summary(&self) -> Option<UserSummary> {
        Some(UserSummary { user_id: self.id?, active: self.active })
    }

    fn exists(&self) -> Result<UserId, DomainError> {
        self.id.ok_or_else(|| DomainError::not_found("user", "(new)"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Create { user_id: UserId, name: String, role: Role, region: Option<String>, team: Option<String>, capacity: u32 },
    SetRole { role: Role },
    SetRegion { region: Option<String>, team: Option<String> },
    Deactivate { reason: String },
}

fn clean(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl Aggregate for User {
    type Command = UserCommand;
    const KIND: &'static str = "user";

    fn handle(&self, cmd: UserCommand, ctx: &CommandContext, _rules: &Rules) -> Result<Vec<Event>, DomainError> {
        if let UserCommand::Create { user_id, name, role, region, team, capacity } = cmd {
            if let Some(id) = self.id {
                return Err(DomainError::already_exists("user", id));
            }
            let name = normalize_person_name(&name);
            if name.is_empty() {
                return Err(DomainError::invalid("name", "user.name_required", "a user has a name"));
            }
            if capacity == 0 && role == Role::SalesRep {
                return Err(DomainError::invalid(
                    "capacity",
                    "user.capacity_positive",
                    "a sales rep takes at least one lead",
                ));
            }
            return Ok(vec![Event::UserCreated(UserCreated {
                user_id,
                name,
                role,
                region: clean(region),
                team: clean(team),
                capacity,
            })]);
        }
        let user_id = self.exists()?;
        if !self.active {
            return Err(DomainError::precondition("user.inactive", format!("user {user_id} is deactivated")));
        }
        match cmd {
            UserCommand::Create { .. } => unreachable!("handled above"),
            UserCommand::SetRole { role } => {
                let from = self.role.unwrap_or(role);
                if from == role {
                    return Err(DomainError::precondition(
                        "user.unchanged",
                        format!("user {user_id} already has that role"),
                    ));
                }
                Ok(vec![Event::UserRoleChanged(UserRoleChanged { user_id, from, to: role })])
            }
            UserCommand::SetRegion { region, team } => {
                let (region, team) = (clean(region), clean(team));
                if region == self.region && team == self.team {
                    return Err(DomainError::precondition(
                        "user.unchanged",
                        format!("user {user_id} already has that region and team"),
                    ));
                }
                Ok(vec![Event::UserRegionChanged(UserRegionChanged {
                    user_id,
                    from_region: self.region.clone(),
                    to_region: region,
                    from_team: self.team.clone(),
                    to_team: team,
                })])
            }
            UserCommand::Deactivate { reason } => {
                if reason.trim().is_empty() {
                    return Err(DomainError::invalid(
                        "reason",
                        "user.deactivation_reason_required",
                        "say why the user leaves",
                    ));
                }
                Ok(vec![Event::UserDeactivated(UserDeactivated {
                    user_id,
                    reason: reason.trim().to_owned(),
                    deactivated_at: ctx.now,
                })])
            }
        }
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::UserCreated(e) => {
                *self = User {
                    id: Some(e.user_id),
                    name: e.name.clone(),
                    role: Some(e.role),
                    region: e.region.clone(),
                    team: e.team.clone(),
                    capacity: e.capacity,
                    active: true,
                    handed_over: 0,
                }
            }
            Event::UserRoleChanged(e) => self.role = Some(e.to),
            Event::UserRegionChanged(e) => {
                self.region = e.to_region.clone();
                self.team = e.to_team.clone();
            }
            Event::UserDeactivated(_) => self.active = false,
            Event::UserHandedOver(e) => self.handed_over += e.items,
            _ => {}
        }
    }
}
