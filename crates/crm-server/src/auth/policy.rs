//! Who may do what: roles, permissions, the permission of each gRPC method, record scopes and
//! field masks. Everything here is a pure function of its inputs, so the whole matrix is
//! tested without a server.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A role, as in the product's permission model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Works their own leads, customers and opportunities.
    SalesRep,
    /// Manages one region: sees and reassigns everything in it.
    RegionalManager,
    /// Sees and runs everything, but may only read the rules.
    OperationsDirector,
    /// Reads everything, including the audit service; changes nothing.
    Auditor,
    /// Everything, including rules, tokens and rebuilds.
    Administrator,
}

impl Role {
    pub const ALL: [Role; 5] =
        [Role::SalesRep, Role::RegionalManager, Role::OperationsDirector, Role::Auditor, Role::Administrator];

    /// The stable name used in tokens, the API and documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SalesRep => "sales_rep",
            Role::RegionalManager => "regional_manager",
            Role::OperationsDirector => "operations_director",
            Role::Auditor => "auditor",
            Role::Administrator => "administrator",
        }
    }

    /// Parses a stable role name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The permission matrix.
    pub fn allows(self, p: Permission) -> bool {
        use Permission as P;
        match self {
            Role::Administrator => true,
            Role::OperationsDirector => !matches!(p, P::ChangeRules | P::Rebuild | P::ManageTokens),
            Role::Auditor => {
                matches!(p, P::Query | P::ReadRules | P::Audit | P::ReadLog | P::ExportBulk | P::ReadStatus)
            }
            Role::RegionalManager => {
                matches!(p, P::Command | P::Query | P::ReadRules | P::Handover | P::Merge | P::ExportBulk)
            }
            Role::SalesRep => matches!(p, P::Command | P::Query | P::ReadRules),
        }
    }

    /// Which records a role sees.
    pub fn scope(self, user_id: &str, region: Option<&str>) -> Scope {
        match self {
            Role::SalesRep => Scope::Own(user_id.to_owned()),
            Role::RegionalManager => match region {
                Some(r) => Scope::Region(r.to_owned()),
                // A regional manager without a region sees only their own records.
                None => Scope::Own(user_id.to_owned()),
            },
            Role::OperationsDirector | Role::Auditor | Role::Administrator => Scope::All,
        }
    }

    /// Which fields come back masked for a role.
    pub fn masks(self) -> FieldMasks {
        match self {
            // A sales rep sees only their own customers and must be able to call them.
            Role::SalesRep => FieldMasks { contract_amount: false, identity_number: true, phone: false },
            Role::RegionalManager => FieldMasks { contract_amount: false, identity_number: true, phone: true },
            Role::OperationsDirector => FieldMasks { contract_amount: false, identity_number: true, phone: true },
            Role::Auditor => FieldMasks { contract_amount: false, identity_number: true, phone: true },
            Role::Administrator => FieldMasks { contract_amount: false, identity_number: false, phone: false },
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Everyday commands on leads, customers, opportunities and activities.
    Command,
    /// Read models, within the principal's scope.
    Query,
    /// Read the rules.
    ReadRules,
    /// Change the rules.
    ChangeRules,
    /// Move everything a salesperson owns to others.
    Handover,
    /// Merge and unmerge customers.
    Merge,
    /// Create users, change their role or region, deactivate them.
    ManageUsers,
    /// Read the raw event log (every record, every field).
    ReadLog,
    /// Bulk export of customers or events.
    ExportBulk,
    /// The audit service: history, as-of, operation log, log verification.
    Audit,
    /// Projection status and verification.
    ReadStatus,
    /// Rebuild read models.
    Rebuild,
    /// Issue, revoke and list tokens.
    ManageTokens,
    /// Form intake and ERP sync from integrated systems.
    Intake,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Command => "command",
            Permission::Query => "query",
            Permission::ReadRules => "rules.read",
            Permission::ChangeRules => "rules.change",
            Permission::Handover => "handover",
            Permission::Merge => "merge",
            Permission::ManageUsers => "users.manage",
            Permission::ReadLog => "log.read",
            Permission::ExportBulk => "export.bulk",
            Permission::Audit => "audit",
            Permission::ReadStatus => "status.read",
            Permission::Rebuild => "rebuild",
            Permission::ManageTokens => "tokens.manage",
            Permission::Intake => "intake",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a gRPC method is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodAccess {
    /// Health checks and reflection: no token needed.
    Public,
    /// A valid token whose role has this permission.
    Requires(Permission),
    /// A method nobody mapped: refused for everyone (deny by default).
    Unmapped,
}

/// The permission a gRPC method (`/package.Service/Method`) needs. Deny by default: a
/// method that is not listed here is refused, and a test checks that every method in the
/// API's descriptor set is listed.
pub fn permission_for(path: &str) -> MethodAccess {
    use Permission as P;
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return MethodAccess::Unmapped;
    };
    let p = match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => return MethodAccess::Public,
        "crm.v1.EventLog" => P::ReadLog,
        "crm.v1.CommandService" => match method {
            "ChangeRules" => P::ChangeRules,
            "GetRules" => P::ReadRules,
            "HandoverOwner" => P::Handover,
            "MergeCustomers" | "UnmergeCustomers" => P::Merge,
            "CreateUser" | "SetUserRole" | "SetUserRegion" | "DeactivateUser" => P::ManageUsers,
            _ => P::Command,
        },
        "crm.v1.Query" => match method {
            m if m.starts_with("Export") => P::ExportBulk,
            // Scoped in `restrict`: a sales rep gets their own workload row and day.
            "GetWorkload" | "ListUnclaimedLeads" | "GetReminders" | "GetMyDay" | "GetDataHealth" => P::Query,
            _ => P::Query,
        },
        "crm.v1.Duplicates" => match method {
            "DismissCandidate" => P::Merge,
            _ => P::Query,
        },
        "crm.v1.Audit" => P::Audit,
        "crm.v1.Admin" => match method {
            "RebuildProjection" => P::Rebuild,
            m if m.starts_with("Backup") || m.starts_with("Restore") => P::Rebuild,
            _ => P::ReadStatus,
        },
        "crm.v1.Intake" => match method {
            m if m.starts_with("List") || m.starts_with("Get") => P::ReadStatus,
            _ => P::Intake,
        },
        "crm.v1.Subscriptions" => P::ReadLog,
        "crm.v1.Tokens" => P::ManageTokens,
        _ => return MethodAccess::Unmapped,
    };
    MethodAccess::Requires(p)
}

/// Which records a principal sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Records owned by this user id.
    Own(String),
    /// Records in this region.
    Region(String),
    /// Everything.
    All,
}

impl Scope {
    /// Whether a record with this owner and region is visible.
    pub fn admits(&self, owner: Option<&str>, region: Option<&str>) -> bool {
        match self {
            Scope::All => true,
            Scope::Own(user) => owner == Some(user.as_str()),
            Scope::Region(r) => region == Some(r.as_str()),
        }
    }
}

/// Fields masked in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FieldMasks {
    pub contract_amount: bool,
    pub identity_number: bool,
    pub phone: bool,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub user_id: String,
    pub role: Role,
    pub region: Option<String>,
}

impl Principal {
    pub fn scope(&self) -> Scope {
        self.role.scope(&self.user_id, self.region.as_deref())
    }

    pub fn masks(&self) -> FieldMasks {
        self.role.masks()
    }

    pub fn allows(&self, p: Permission) -> bool {
        self.role.allows(p)
    }
}

/// Masks a phone number the way Chinese CRMs show it: the first three and last four digits
/// stay, the middle becomes `****` (`+8613800138000` -> `138****8000`).
pub fn mask_phone(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let national =
        digits.strip_prefix("0086").or_else(|| digits.strip_prefix("86").filter(|d| d.len() >= 9)).unwrap_or(&digits);
    if national.len() < 7 {
        return "*".repeat(national.len().max(4));
    }
    format!("{}****{}", &national[..3], &national[national.len() - 4..])
}

/// The kinds of sensitive value a profile field can hold.
enum Sensitive {
    Phone,
    IdentityNumber,
    ContractAmount,
}

/// What kind of sensitive value a profile field holds, judged by its name.
fn sensitive_kind(field: &str) -> Option<Sensitive> {
    let f = field.trim_start_matches("custom.").to_ascii_lowercase();
    if f.contains("phone") || f.contains("mobile") || f == "tel" || f.contains("手机") || f.contains("电话") {
        Some(Sensitive::Phone)
    } else if f.contains("identity") || f.contains("id_number") || f.contains("id_card") || f.contains("身份证") {
        Some(Sensitive::IdentityNumber)
    } else if f.contains("amount") || f.contains("金额") {
        Some(Sensitive::ContractAmount)
    } else {
        None
    }
}

/// Applies `masks` to a record's profile fields in place.
pub fn mask_fields<'a>(fields: impl IntoIterator<Item = (&'a String, &'a mut String)>, masks: FieldMasks) {
    if masks == FieldMasks::default() {
        // Nothing to mask (an admin's answers): spare judging every field's name.
        return;
    }
    for (name, value) in fields {
        match sensitive_kind(name) {
            Some(Sensitive::Phone) if masks.phone => *value = mask_phone(value),
            Some(Sensitive::IdentityNumber) if masks.identity_number => *value = mask_identity_number(value),
            Some(Sensitive::ContractAmount) if masks.contract_amount => *value = "***".to_owned(),
            _ => {}
        }
    }
}

/// Masks an identity number: first 6 (the region code) and last 4 characters stay.
pub fn mask_identity_number(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < 10 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_masks() {
        for (input, want) in [
            ("+8613800138000", "138****8000"),
            ("138 0013 8000", "138****8000"),
            ("+86 10 6552 9988", "106****9988"),
            ("12", "****"),
        ] {
            assert_eq!(mask_phone(input), want, "{input}");
        }
        assert_eq!(mask_identity_number("11010519900307001X"), "110105********001X");
    }

    #[test]
    fn fields_are_masked_by_name() {
        let mut fields: std::collections::BTreeMap<String, String> = [
            ("name", "北京某某科技"),
            ("phone", "+8613800138000"),
            ("custom.contact_mobile", "13900139000"),
            ("custom.identity_number", "11010519900307001X"),
            ("custom.contract_amount", "1200000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        mask_fields(fields.iter_mut(), FieldMasks { contract_amount: true, identity_number: true, phone: true });
        assert_eq!(fields["name"], "北京某某科技");
        assert_eq!(fields["phone"], "138****8000");
        assert_eq!(fields["custom.contact_mobile"], "139****9000");
        assert_eq!(fields["custom.identity_number"], "110105********001X");
        assert_eq!(fields["custom.contract_amount"], "***");
    }

    #[test]
    fn roles_round_trip_their_names() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn scopes_admit_only_their_records() {
        let own = Role::SalesRep.scope("u1", Some("华东"));
        assert!(own.admits(Some("u1"), Some("华北")));
        assert!(!own.admits(Some("u2"), Some("华东")));
        let region = Role::RegionalManager.scope("m1", Some("华东"));
        assert!(region.admits(Some("u2"), Some("华东")));
        assert!(!region.admits(Some("m1"), Some("华北")));
        assert!(Role::Auditor.scope("a", None).admits(None, None));
    }

    #[test]
    fn unknown_methods_are_denied_by_default() {
        assert_eq!(permission_for("/crm.v1.Nope/Do"), MethodAccess::Unmapped);
        assert_eq!(permission_for("garbage"), MethodAccess::Unmapped);
        assert_eq!(permission_for("/grpc.health.v1.Health/Check"), MethodAccess::Public);
    }
}
