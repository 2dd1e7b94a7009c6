//! A deterministic generator of plausible CRM event histories, for property tests, crash
//! tests and benchmarks: users, customers with Chinese names, phones, regions, industries and
//! tags, contacts and activities, opportunities moving along the pipeline with root causes,
//! wins (a few without all three references), losses, owner changes, merges and unmerges,
//! rule changes that alter a stage time limit, and leads captured (a few with a phone kept raw
//! or a USCC failing its checksum), assigned, claimed, released, handed over and qualified.
//! Some activities set a next follow-up date.
//!
//! The events are shaped like the domain's output but do not go through `handle`: they are
//! read-model input, generated fast enough to fill a log of millions of events.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use crm_domain::{
    ActivityId, ActivityKind, ActivityLogged, AssignmentReason, Channel, Contact, ContactAdded, ContactId,
    CustomerAbsorbed, CustomerCreated, CustomerDealWon, CustomerId, CustomerRestored, CustomerUnmerged,
    CustomerUpdated, CustomersMerged, Event, FieldChange, LeadAssigned, LeadCaptured, LeadClaimed, LeadId,
    LeadQualified, LeadReleased, OpportunityId, OpportunityLost, OpportunityOpened, OpportunityWon, Owned,
    OwnerChanged, Role, Rules, RulesChanged, StageMoved, UserCreated, UserId,
};
use crm_eventlog::{ExpectedVersion, Metadata, NewEvent, StreamAppend};
use uuid::Uuid;

const REGIONS: &[&str] = &["北京", "上海", "广东", "江苏", "浙江", "四川", "湖北", "山东"];
const INDUSTRIES: &[&str] = &["医疗器械", "制造", "教育", "零售", "物流"];
const TAGS: &[&str] = &["重点", "老客户", "展会", "渠道", "政府采购"];
const SURNAMES: &[&str] = &["张", "王", "李", "赵", "刘", "陈", "杨", "黄"];
const CORES: &[&str] = &["康达", "华信", "瑞丰", "新元", "博远", "安泰", "天润", "嘉禾"];

/// How big and how varied a history is.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub users: usize,
    /// Start time of the simulated clock.
    pub start: DateTime<Utc>,
    /// Mean simulated time between commands, in seconds.
    pub step_seconds: i64,
    /// Share of commands (after the users' setup) that create a customer, in thousandths;
    /// `None`: the usual mix (189 in 1000). The other commands keep their relative shares.
    pub new_customer_permille: Option<u32>,
    /// Whether 2 in 1000 commands change the rules (a stage time limit), which makes the
    /// read models whose fingerprint covers it rebuild. Each generator counts rule versions
    /// on its own, so several generators writing to one log should not.
    pub rules_changes: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 1,
            users: 20,
            start: Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).single().expect("valid start"),
            step_seconds: 180,
            new_customer_permille: None,
            rules_changes: true,
        }
    }
}

/// One generated command's events: one or more streams, appended atomically.
#[derive(Debug, Clone)]
pub struct Generated {
    pub actor: String,
    pub events: Vec<Event>,
}

impl Generated {
    /// The atomic multi-stream append for this command, with event ids from `ids`.
    pub fn to_appends(&self, ids: &mut impl FnMut() -> Uuid) -> Vec<StreamAppend> {
        let correlation_id = ids();
        let mut appends: Vec<StreamAppend> = Vec::new();
        for event in &self.events {
            let stream = event.stream();
            let new = NewEvent {
                id: ids(),
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                metadata: Metadata {
                    actor: self.actor.clone(),
                    correlation_id,
                    causation_id: None,
                    source: "generator".into(),
                },
                payload: event.encode(),
            };
            match appends.iter_mut().find(|a| a.stream == stream) {
                Some(a) => a.events.push(new),
                None => appends.push(StreamAppend { stream, expected: ExpectedVersion::Any, events: vec![new] }),
            }
        }
        appends
    }
}

struct Opp {
    id: OpportunityId,
    customer: CustomerId,
    stage: usize,
}

/// A lead's phase: 0 in the pool, 1 assigned, 2 claimed, 3 qualified.
struct Ld {
    id: LeadId,
    phase: u8,
    holder: Option<UserId>,
}

struct Cust {
    id: CustomerId,
    owner: UserId,
    absorbed: bool,
    survivor_of: Vec<CustomerId>,
    fields: BTreeMap<String, String>,
    pre_merge: Option<(CustomerId, Vec<FieldChange>)>,
}

/// The generator. Deterministic for a seed.
pub struct Generator {
    rng: u64,
    now: DateTime<Utc>,
    step: i64,
    users: Vec<UserId>,
    user_regions: Vec<&'static str>,
    users_pending: usize,
    customers: Vec<Cust>,
    open: Vec<Opp>,
    leads: Vec<Ld>,
    rules: Rules,
    counter: u128,
    new_customer_permille: Option<u32>,
    rules_changes: bool,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Self {
        Generator {
            rng: config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            now: config.start,
            step: config.step_seconds.max(1),
            users: Vec::new(),
            user_regions: Vec::new(),
            users_pending: config.users.max(1),
            customers: Vec::new(),
            open: Vec::new(),
            leads: Vec::new(),
            rules: Rules::default(),
            counter: 0,
            new_customer_permille: config.new_customer_permille.map(|p| p.min(1000)),
            rules_changes: config.rules_changes,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// A fresh, unique UUID (for entity and event ids).
    pub fn uuid(&mut self) -> Uuid {
        self.counter += 1;
        Uuid::from_u128((u128::from(self.next_u64()) << 64) ^ self.counter)
    }

    fn user(&mut self) -> UserId {
        let i = self.below(self.users.len());
        self.users[i]
    }

    /// A salesperson of `region` (users are spread over the regions round-robin).
    fn user_in(&mut self, region: &str) -> UserId {
        let Some(r) = REGIONS.iter().position(|x| *x == region) else { return self.user() };
        let per_region = self.users.len().div_ceil(REGIONS.len());
        for _ in 0..4 {
            // User k has region `REGIONS[(k + 1) % REGIONS.len()]`.
            let i = self.below(per_region) * REGIONS.len() + (r + REGIONS.len() - 1) % REGIONS.len();
            if i < self.users.len() && self.user_regions[i] == region {
                return self.users[i];
            }
        }
        self.user()
    }

    fn tick(&mut self) {
        let seconds = 1 + self.below(2 * self.step as usize) as i64;
        self.now += Duration::seconds(seconds);
    }

    /// The next command's events.
    pub fn next_command(&mut self) -> Generated {
        self.tick();
        if self.users_pending > 0 {
            self.users_pending -= 1;
            let user_id = UserId(self.uuid());
            self.users.push(user_id);
            let region = REGIONS[self.users.len() % REGIONS.len()];
            self.user_regions.push(region);
            let region = region.to_owned();
            let name = format!("{}{}", self.pick(SURNAMES), self.below(100));
            return Generated {
                actor: "system:setup".into(),
                events: vec![Event::UserCreated(UserCreated {
                    user_id,
                    name,
                    role: Role::SalesRep,
                    region: Some(region),
                    team: None,
                    capacity: 200,
                })],
            };
        }
        let actor = self.user().stream();
        let roll = match self.new_customer_permille {
            None => self.below(1000),
            // 12..=200 is the customer creation below; the rest keeps its shares.
            Some(share) => {
                if self.below(1000) < share as usize {
                    12
                } else {
                    match self.below(811) {
                        r @ 0..=11 => r,
                        r => r + 189,
                    }
                }
            }
        };
        let events = match roll {
            // Without rule changes, a customer is created instead (the fallback below).
            0..=1 if !self.rules_changes => Vec::new(),
            0..=1 => self.rules_changed(),
            2..=11 => self.merge_or_unmerge(),
            12..=200 => self.create_customer(),
            201..=260 => self.update_customer(),
            261..=300 => self.contact(),
            301..=470 => self.activity(),
            471..=560 => self.open_opportunity(),
            561..=900 => self.advance(),
            901..=930 => self.owner_change(),
            _ => self.lead(),
        };
        let events = if events.is_empty() { self.create_customer() } else { events };
        Generated { actor, events }
    }

    fn rules_changed(&mut self) -> Vec<Event> {
        let mut rules = self.rules.clone();
        rules.version += 1;
        let stage = rules.pipeline.stages[self.below(rules.pipeline.stages.len())].clone();
        let days = 3 + self.below(15) as u32;
        rules.stage_time_limits.insert(stage, days);
        self.rules = rules.clone();
        vec![Event::RulesChanged(RulesChanged { rules, reason: "阶段时限调整".into() })]
    }

    fn live_customer(&mut self) -> Option<usize> {
        if self.customers.is_empty() {
            return None;
        }
        for _ in 0..4 {
            let i = self.below(self.customers.len());
            if !self.customers[i].absorbed {
                return Some(i);
            }
        }
        None
    }

    fn create_customer(&mut self) -> Vec<Event> {
        let id = CustomerId(self.uuid());
        let mut fields = BTreeMap::new();
        let core = self.pick(CORES);
        let region = self.pick(REGIONS);
        let n = self.below(10_000);
        fields.insert("name".into(), format!("{region}{core}{n}有限公司"));
        fields.insert("phone".into(), format!("+86138{:08}", self.next_u64() % 100_000_000));
        fields.insert("region".into(), region.to_owned());
        fields.insert("industry".into(), self.pick(INDUSTRIES).to_owned());
        fields.insert("contact_name".into(), format!("{}先生", self.pick(SURNAMES)));
        if self.below(3) == 0 {
            let a = self.pick(TAGS).to_owned();
            let b = self.pick(TAGS).to_owned();
            fields.insert("custom.tags".into(), format!("{a},{b}"));
        }
        let owner_id = self.user_in(region);
        let owner = Some(owner_id);
        self.customers.push(Cust {
            owner: owner_id,
            id,
            absorbed: false,
            survivor_of: Vec::new(),
            fields: fields.clone(),
            pre_merge: None,
        });
        vec![Event::CustomerCreated(CustomerCreated { customer_id: id, fields, owner, from_lead: None })]
    }

    fn update_customer(&mut self) -> Vec<Event> {
        let Some(i) = self.live_customer() else { return vec![] };
        let (field, new) = match self.below(3) {
            0 => ("region", self.pick(REGIONS).to_owned()),
            1 => ("industry", self.pick(INDUSTRIES).to_owned()),
            _ => ("custom.tags", self.pick(TAGS).to_owned()),
        };
        let c = &mut self.customers[i];
        let old = c.fields.insert(field.to_owned(), new.clone());
        vec![Event::CustomerUpdated(CustomerUpdated {
            customer_id: c.id,
            changes: vec![FieldChange { field: field.into(), old, new: Some(new) }],
        })]
    }

    fn contact(&mut self) -> Vec<Event> {
        let Some(i) = self.live_customer() else { return vec![] };
        let contact_id = ContactId(self.uuid());
        let name = format!("{}{}", self.pick(SURNAMES), self.pick(&["伟", "芳", "敏", "静"]));
        vec![Event::ContactAdded(ContactAdded {
            customer_id: self.customers[i].id,
            contact: Contact {
                contact_id,
                name,
                title: None,
                phone: None,
                phone_e164: None,
                email: None,
                wechat: None,
            },
        })]
    }

    fn activity(&mut self) -> Vec<Event> {
        let Some(i) = self.live_customer() else { return vec![] };
        let by = self.user();
        let activity_id = ActivityId(self.uuid());
        let kind =
            [ActivityKind::Call, ActivityKind::Visit, ActivityKind::WeChat, ActivityKind::Meeting][self.below(4)];
        // Half the activities plan the next contact, from two days back to four ahead.
        let next_follow_up =
            (self.below(2) == 0).then(|| self.now.date_naive() + Duration::days(self.below(7) as i64 - 2));
        vec![Event::ActivityLogged(ActivityLogged {
            customer_id: self.customers[i].id,
            activity_id,
            by,
            kind,
            occurred_at: self.now,
            duration_minutes: Some(15),
            keywords: vec!["报价".into()],
            summary: "电话沟通".into(),
            next_follow_up,
            contact_id: None,
            opportunity_id: None,
            inherited_from: None,
            inherited_fields: Vec::new(),
        })]
    }

    fn open_opportunity(&mut self) -> Vec<Event> {
        let Some(i) = self.live_customer() else { return vec![] };
        let id = OpportunityId(self.uuid());
        let customer = self.customers[i].id;
        let owner = self.customers[i].owner;
        self.open.push(Opp { id, customer, stage: 0 });
        vec![Event::OpportunityOpened(OpportunityOpened {
            opportunity_id: id,
            customer_id: customer,
            lead_id: None,
            owner,
            title: "设备采购".into(),
            amount_fen: Some(1_000_000),
            stage: self.rules.pipeline.stages[0].clone(),
            repeat_customer: false,
            opened_at: self.now,
        })]
    }

    fn advance(&mut self) -> Vec<Event> {
        if self.open.is_empty() {
            return vec![];
        }
        let i = self.below(self.open.len());
        let stages = self.rules.pipeline.stages.clone();
        let roll = self.below(10);
        let from = stages[self.open[i].stage].clone();
        let last = self.open[i].stage + 1 == stages.len();
        if roll == 0 {
            let opp = self.open.swap_remove(i);
            return vec![Event::OpportunityLost(OpportunityLost {
                opportunity_id: opp.id,
                from_stage: from,
                reason: "价格".into(),
                lost_at: self.now,
            })];
        }
        if last {
            let opp = self.open.swap_remove(i);
            let receipt = if self.below(20) == 0 { String::new() } else { format!("FR-{}", self.below(99_999)) };
            return vec![
                Event::OpportunityWon(OpportunityWon {
                    opportunity_id: opp.id,
                    customer_id: opp.customer,
                    from_stage: from,
                    finance_receipt_ref: receipt,
                    contract_ref: "CT-1".into(),
                    delivery_acceptance_ref: "DA-1".into(),
                    won_at: self.now,
                }),
                Event::CustomerDealWon(CustomerDealWon { customer_id: opp.customer, opportunity_id: opp.id }),
            ];
        }
        let to = stages[self.open[i].stage + 1].clone();
        self.open[i].stage += 1;
        let tag = self.below(self.rules.root_cause_tags.len());
        let root_cause = self.rules.root_cause_tags[tag].clone();
        vec![Event::StageMoved(StageMoved {
            opportunity_id: self.open[i].id,
            from,
            to,
            root_cause,
            evidence: BTreeMap::new(),
            skip_rule: None,
            moved_at: self.now,
            rules_version: self.rules.version,
        })]
    }

    fn owner_change(&mut self) -> Vec<Event> {
        let to = self.user();
        if self.below(2) == 0 && !self.open.is_empty() {
            let i = self.below(self.open.len());
            return vec![Event::OwnerChanged(OwnerChanged {
                subject: Owned::Opportunity(self.open[i].id),
                from: None,
                to,
                reason: "调整".into(),
                receiver_rank: 1,
                over_capacity: false,
            })];
        }
        let Some(i) = self.live_customer() else { return vec![] };
        vec![Event::OwnerChanged(OwnerChanged {
            subject: Owned::Customer(self.customers[i].id),
            from: None,
            to,
            reason: "handover".into(),
            receiver_rank: 1,
            over_capacity: false,
        })]
    }

    fn merge_or_unmerge(&mut self) -> Vec<Event> {
        // Unmerge one in four times when a merge is in force.
        if self.below(4) == 0 {
            if let Some(s) = self.customers.iter().position(|c| c.pre_merge.is_some()) {
                let (absorbed_id, changes) = self.customers[s].pre_merge.take().expect("merge in force");
                let survivor = self.customers[s].id;
                self.customers[s].survivor_of.retain(|a| *a != absorbed_id);
                let restored: Vec<FieldChange> = changes
                    .iter()
                    .map(|c| FieldChange { field: c.field.clone(), old: c.new.clone(), new: c.old.clone() })
                    .collect();
                for r in &restored {
                    match &r.new {
                        Some(v) => self.customers[s].fields.insert(r.field.clone(), v.clone()),
                        None => self.customers[s].fields.remove(&r.field),
                    };
                }
                if let Some(a) = self.customers.iter_mut().find(|c| c.id == absorbed_id) {
                    a.absorbed = false;
                }
                return vec![
                    Event::CustomerUnmerged(CustomerUnmerged {
                        survivor_id: survivor,
                        absorbed_id,
                        reason: "误合并".into(),
                        restored,
                        kept: Vec::new(),
                        post_merge_activities: Vec::new(),
                    }),
                    Event::CustomerRestored(CustomerRestored { absorbed_id, survivor_id: survivor }),
                ];
            }
        }
        let (Some(s), Some(a)) = (self.live_customer(), self.live_customer()) else { return vec![] };
        if s == a
            || self.customers[s].pre_merge.is_some()
            || !self.customers[a].survivor_of.is_empty()
            || self.customers[a].pre_merge.is_some()
        {
            return vec![];
        }
        let (survivor, absorbed_id) = (self.customers[s].id, self.customers[a].id);
        let mut changes = Vec::new();
        if let Some(phone) = self.customers[a].fields.get("phone").cloned() {
            let old = self.customers[s].fields.insert("phone".into(), phone.clone());
            changes.push(FieldChange { field: "phone".into(), old, new: Some(phone) });
        }
        self.customers[a].absorbed = true;
        self.customers[s].survivor_of.push(absorbed_id);
        self.customers[s].pre_merge = Some((absorbed_id, changes.clone()));
        vec![
            Event::CustomersMerged(CustomersMerged {
                survivor_id: survivor,
                absorbed_id,
                reason: "同一手机号".into(),
                reason_text: String::new(),
                field_changes: changes,
                merged_at: self.now,
            }),
            Event::CustomerAbsorbed(CustomerAbsorbed {
                absorbed_id,
                survivor_id: survivor,
                reason: "同一手机号".into(),
            }),
        ]
    }

    /// A lead in `phase`, if one turns up in a few tries.
    fn lead_in(&mut self, phase: u8) -> Option<usize> {
        if self.leads.is_empty() {
            return None;
        }
        for _ in 0..4 {
            let i = self.below(self.leads.len());
            if self.leads[i].phase == phase {
                return Some(i);
            }
        }
        None
    }

    /// One step of a lead's life: capture (half the time), or assign, claim, release,
    /// hand over or qualify an existing one.
    fn lead(&mut self) -> Vec<Event> {
        let step = self.below(12);
        let events = match step {
            0..=5 => return self.capture(),
            6 | 7 => self.lead_in(0).or_else(|| self.lead_in(1)).map(|i| {
                let assignee = self.user();
                let l = &mut self.leads[i];
                let previous = l.holder.replace(assignee);
                l.phase = 1;
                Event::LeadAssigned(LeadAssigned {
                    lead_id: l.id,
                    assignee,
                    previous,
                    reason: AssignmentReason::Manual,
                    assigned_at: self.now,
                })
            }),
            8 | 9 => self.lead_in(1).or_else(|| self.lead_in(0)).map(|i| {
                let user = match self.leads[i].holder {
                    Some(holder) => holder,
                    None => self.user(),
                };
                let l = &mut self.leads[i];
                l.phase = 2;
                l.holder = Some(user);
                Event::LeadClaimed(LeadClaimed { lead_id: l.id, user_id: user, claimed_at: self.now })
            }),
            10 => self.lead_in(2).or_else(|| self.lead_in(1)).map(|i| {
                let to = self.user();
                let release = self.below(2) == 0;
                let l = &mut self.leads[i];
                let from = l.holder.replace(to);
                if release {
                    l.phase = 0;
                    l.holder = None;
                    Event::LeadReleased(LeadReleased {
                        lead_id: l.id,
                        user_id: from.unwrap_or(to),
                        reason: "无效".into(),
                    })
                } else {
                    Event::OwnerChanged(OwnerChanged {
                        subject: Owned::Lead(l.id),
                        from,
                        to,
                        reason: "handover".into(),
                        receiver_rank: 1,
                        over_capacity: false,
                    })
                }
            }),
            _ => match (self.lead_in(2), self.live_customer()) {
                (Some(i), Some(c)) => {
                    self.leads[i].phase = 3;
                    Some(Event::LeadQualified(LeadQualified {
                        lead_id: self.leads[i].id,
                        customer_id: self.customers[c].id,
                        opportunity_id: OpportunityId(self.uuid()),
                        new_customer: false,
                    }))
                }
                _ => None,
            },
        };
        events.into_iter().collect()
    }

    fn capture(&mut self) -> Vec<Event> {
        let lead_id = LeadId(self.uuid());
        self.leads.push(Ld { id: lead_id, phase: 0, holder: None });
        // One in eight phones is kept raw (invalid), one in eight USCCs fails its checksum.
        let (phone, phone_e164) = match self.below(8) {
            0 => ("1380013".to_owned(), None),
            _ => ("13800138000".to_owned(), Some("+8613800138000".to_owned())),
        };
        let first17 = "91110108MA01AB2C3";
        let check = crm_domain::uscc_check_char(first17).expect("17 characters");
        let (uscc, uscc_checksum_ok) = match self.below(8) {
            0 => (Some(format!("{first17}{}", if check == '0' { '1' } else { '0' })), false),
            1 => (Some(format!("{first17}{check}")), true),
            _ => (None, false),
        };
        vec![Event::LeadCaptured(LeadCaptured {
            lead_id,
            name: Some(format!("{}先生", self.pick(SURNAMES))),
            company: Some(format!("{}科技", self.pick(CORES))),
            phone: Some(phone),
            phone_e164,
            email: None,
            wechat: None,
            uscc,
            uscc_checksum_ok,
            region: Some(self.pick(REGIONS).to_owned()),
            channel: Channel::WebForm { form_id: "f1".into() },
            source: "官网".into(),
            custom_attributes: BTreeMap::new(),
            captured_at: self.now,
        })]
    }
}
