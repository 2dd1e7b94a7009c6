use crm_domain::testing::given;
use crm_domain::*;

use crate::support::*;

fn create(n: u128) -> UserCommand {
    UserCommand::Create {
        user_id: user_id(n),
        name: " 王  芳 ".into(),
        role: Role::SalesRep,
        region: Some("北京".into()),
        team: Some("华北一组".into()),
        capacity: 30,
    }
}

#[test]
fn users_are_created_changed_and_deactivated() {
    given::<User>(vec![]).when(create(1)).then_expect_events(vec![Event::UserCreated(UserCreated {
        user_id: user_id(1),
        name: "王芳".into(),
        role: Role::SalesRep,
        region: Some("北京".into()),
        team: Some("华北一组".into()),
        capacity: 30,
    })]);
    let base = vec![user_created(1, "北京", "华北一组", 30)];
    given::<User>(base.clone()).when(UserCommand::SetRole { role: Role::RegionalManager }).then_expect_events(vec![
        Event::UserRoleChanged(UserRoleChanged {
            user_id: user_id(1),
            from: Role::SalesRep,
            to: Role::RegionalManager,
        }),
    ]);
    let state = given::<User>(base.clone())
        .when(UserCommand::SetRegion { region: Some("上海".into()), team: Some("华东一组".into()) })
        .then_expect_events(vec![Event::UserRegionChanged(UserRegionChanged {
            user_id: user_id(1),
            from_region: Some("北京".into()),
            to_region: Some("上海".into()),
            from_team: Some("华北一组".into()),
            to_team: Some("华东一组".into()),
        })]);
    assert_eq!(state.team.as_deref(), Some("华东一组"));
    let state = given::<User>(base).when(UserCommand::Deactivate { reason: "离职".into() }).then_expect_events(vec![
        Event::UserDeactivated(UserDeactivated { user_id: user_id(1), reason: "离职".into(), deactivated_at: now() }),
    ]);
    assert!(!state.active);
}

#[test]
fn user_refusals() {
    let base = vec![user_created(1, "北京", "华北一组", 30)];
    given::<User>(base.clone())
        .when(create(1))
        .then_expect_error(DomainError::AlreadyExists { kind: "user".into(), id: user_id(1).to_string() });
    given::<User>(vec![])
        .when(UserCommand::Create {
            user_id: user_id(2),
            name: " ".into(),
            role: Role::Auditor,
            region: None,
            team: None,
            capacity: 0,
        })
        .then_expect_rule("user.name_required");
    given::<User>(vec![])
        .when(UserCommand::Create {
            user_id: user_id(2),
            name: "赵磊".into(),
            role: Role::SalesRep,
            region: None,
            team: None,
            capacity: 0,
        })
        .then_expect_rule("user.capacity_positive");
    given::<User>(base.clone()).when(UserCommand::SetRole { role: Role::SalesRep }).then_expect_rule("user.unchanged");
    given::<User>(base.clone())
        .when(UserCommand::SetRegion { region: Some("北京".into()), team: Some("华北一组".into()) })
        .then_expect_rule("user.unchanged");
    given::<User>(base.clone())
        .when(UserCommand::Deactivate { reason: "".into() })
        .then_expect_rule("user.deactivation_reason_required");
    let mut gone = base;
    gone.push(Event::UserDeactivated(UserDeactivated {
        user_id: user_id(1),
        reason: "离职".into(),
        deactivated_at: now(),
    }));
    given::<User>(gone).when(UserCommand::SetRole { role: Role::Auditor }).then_expect_rule("user.inactive");
    given::<User>(vec![])
        .when(UserCommand::Deactivate { reason: "x".into() })
        .then_expect_error(DomainError::NotFound { kind: "user".into(), id: "(new)".into() });
}

fn regional() -> Rules {
    let mut rules = Rules::default();
    rules.assignment.region_teams = map(&[("北京", "华北一组")]);
    rules
}

#[test]
fn rule_changes_are_validated_and_versioned() {
    let state = given::<RuleBook>(vec![])
        .when(RulesCommand::ChangeRules { rules: regional(), reason: "按区域分配".into() })
        .then_expect_events(vec![Event::RulesChanged(RulesChanged {
            rules: Rules { version: 1, ..regional() },
            reason: "按区域分配".into(),
        })]);
    assert_eq!(state.current.version, 1);
    let mut stricter = regional();
    stricter.follow_up_reminder_days = 5;
    stricter.version = 99; // ignored: the book numbers versions
    let events = given::<RuleBook>(vec![Event::RulesChanged(RulesChanged {
        rules: Rules { version: 1, ..regional() },
        reason: "".into(),
    })])
    .when(RulesCommand::ChangeRules { rules: stricter, reason: "".into() })
    .result()
    .unwrap();
    assert!(
        matches!(&events[0], Event::RulesChanged(e) if e.rules.version == 2 && e.rules.follow_up_reminder_days == 5)
    );
}

#[test]
fn invalid_rules_are_refused() {
    let change = |rules: Rules| RulesCommand::ChangeRules { rules, reason: "".into() };
    given::<RuleBook>(vec![]).when(change(Rules::default())).then_expect_rule("rules.unchanged");
    type Breaker = Box<dyn Fn(&mut Rules)>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("rules.pipeline_empty", Box::new(|r| r.pipeline.stages.clear())),
        ("rules.stage_names", Box::new(|r| r.pipeline.stages.push(STAGE_DEMO.into()))),
        ("rules.end_stages", Box::new(|r| r.pipeline.stages.push(STAGE_WON.into()))),
        ("rules.end_stages", Box::new(|r| r.pipeline.lost_stage = STAGE_WON.into())),
        (
            "rules.unknown_stage",
            Box::new(|r| {
                r.pipeline.transitions.push(Transition {
                    from: STAGE_INITIAL.into(),
                    to: "报价".into(),
                    evidence: vec![],
                    condition: None,
                })
            }),
        ),
        (
            "rules.self_transition",
            Box::new(|r| {
                r.pipeline.transitions.push(Transition {
                    from: STAGE_DEMO.into(),
                    to: STAGE_DEMO.into(),
                    evidence: vec![],
                    condition: None,
                })
            }),
        ),
        (
            "rules.duplicate_transition",
            Box::new(|r| {
                let t = r.pipeline.transitions[0].clone();
                r.pipeline.transitions.push(t)
            }),
        ),
        ("rules.root_cause_tags", Box::new(|r| r.root_cause_tags.clear())),
        (
            "rules.unknown_stage",
            Box::new(|r| {
                r.stage_time_limits.insert("报价".into(), 3);
            }),
        ),
        (
            "rules.positive",
            Box::new(|r| {
                r.stage_time_limits.insert(STAGE_DEMO.into(), 0);
            }),
        ),
        (
            "rules.ab_split",
            Box::new(|r| {
                r.assignment.ab_split =
                    Some(AbSplit { experiment: "x".into(), percent_b: 101, strategy_b: Strategy::RoundRobin })
            }),
        ),
        (
            "rules.region_teams",
            Box::new(|r| {
                r.assignment.region_teams.insert("北京".into(), " ".into());
            }),
        ),
        ("rules.range", Box::new(|r| r.duplicates.company_name_similarity_pct = 30)),
        ("rules.range", Box::new(|r| r.duplicates.contact_name_edit_distance = 11)),
        ("rules.positive", Box::new(|r| r.follow_up_reminder_days = 0)),
        ("rules.merge_reasons", Box::new(|r| r.merge_reasons = vec!["".into()])),
    ];
    for (rule, break_it) in cases {
        let mut rules = Rules::default();
        break_it(&mut rules);
        given::<RuleBook>(vec![]).when(change(rules)).then_expect_rule(rule);
    }
}
