//! Tokens, status, rules, rebuild, verify, history and audit.

use crate::support::{crmctl, Server};

#[test]
fn tokens_are_issued_listed_and_revoked_and_a_sales_rep_may_not_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);

    let token = server.run(&["token", "issue", "--user", "li.lei", "--role", "sales_rep", "--label", "laptop"]);
    let token = token.trim().to_owned();
    assert!(token.starts_with("crm_"), "{token}");
    let list = server.run(&["token", "list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let rep = list.as_array().unwrap().iter().find(|t| t["user_id"] == "li.lei").expect("listed").clone();
    assert_eq!(rep["role"], "sales_rep");
    assert_eq!(rep["revoked_at"], "");

    // Rebuilding is for administrators.
    let denied = crmctl()
        .env("CRM_SERVER", &server.url)
        .env("CRM_TOKEN", &token)
        .args(["rebuild", "customers"])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("PermissionDenied") && stderr.contains("rebuild"), "{stderr}");

    let id = rep["token_id"].as_str().unwrap();
    server.run(&["token", "revoke", id, "--reason", "laptop lost"]);
    let after =
        crmctl().env("CRM_SERVER", &server.url).env("CRM_TOKEN", &token).args(["rules", "get"]).output().unwrap();
    assert!(String::from_utf8_lossy(&after.stderr).contains("Unauthenticated"));
    let list: serde_json::Value = serde_json::from_str(&server.run(&["token", "list", "--format", "json"])).unwrap();
    let rep = list.as_array().unwrap().iter().find(|t| t["user_id"] == "li.lei").unwrap().clone();
    assert_ne!(rep["revoked_at"], "");
}

#[test]
fn rules_are_validated_diffed_then_applied_and_projections_rebuild_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);

    let current = server.run(&["rules", "get"]);
    assert!(current.starts_with("# rules version 0"), "{current}");
    assert!(current.contains("follow_up_reminder_days = 7"), "{current}");

    // An invalid rule set is refused before anything is sent.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("{current}\n[[transitions]]\nfrom = \"初步接触\"\nto = \"不存在\"\n")).unwrap();
    let out = server.crmctl().args(["rules", "set"]).arg(&bad).args(["--reason", "test", "--yes"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown stage \"不存在\""), "{out:?}");

    // Without --yes and without a terminal nothing is applied, but the difference is shown.
    let new = dir.path().join("rules.toml");
    std::fs::write(&new, current.replace("follow_up_reminder_days = 7", "follow_up_reminder_days = 10")).unwrap();
    let out = server.crmctl().args(["rules", "set"]).arg(&new).args(["--reason", "longer reminders"]).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("- follow_up_reminder_days = 7") && stdout.contains("+ follow_up_reminder_days = 10"),
        "{stdout}"
    );
    assert!(server.run(&["rules", "get"]).starts_with("# rules version 0"));

    let applied = server.run(&["rules", "set", new.to_str().unwrap(), "--reason", "longer reminders", "--yes"]);
    assert!(applied.contains("applied: rules version 1"), "{applied}");
    let now = server.run(&["rules", "get"]);
    assert!(now.starts_with("# rules version 1") && now.contains("follow_up_reminder_days = 10"), "{now}");
    assert!(server.run(&["rules", "set", new.to_str().unwrap(), "--reason", "again", "--yes"]).contains("no change"));

    let status: serde_json::Value = serde_json::from_str(&server.run(&["status", "--format", "json"])).unwrap();
    let names: Vec<&str> =
        status["projections"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"customers") && names.contains(&"funnel"), "{status}");

    for name in &names {
        let out = server.run(&["rebuild", name]);
        assert!(out.contains(&format!("rebuilt {name}")), "{out}");
        let out = server.run(&["verify", name]);
        assert!(out.contains(&format!("{name} ok")), "{out}");
    }
    let unknown = server.crmctl().args(["verify", "nosuch"]).output().unwrap();
    assert!(!unknown.status.success());

    // The log verifies offline once the server is stopped.
    let data = dir.path().to_owned();
    server.stop();
    let out = crmctl().args(["verify", "log", "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("log ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_the_timeline_and_the_state_as_of_a_position_and_audit_lists_operations() {
    use crm_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let mut commands = pb::command_service_client::CommandServiceClient::new(server.channel().await);
    let id = "5a1c3f0e-0000-4000-8000-000000000001";
    let created = commands
        .create_customer(pb::CreateCustomerRequest {
            customer_id: id.into(),
            fields: [("name".to_owned(), "苏州示例精密有限公司".to_owned()), ("level".to_owned(), "B".to_owned())]
                .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    commands
        .update_customer(pb::UpdateCustomerRequest {
            customer_id: id.into(),
            set: [("level".to_owned(), "A".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let now: serde_json::Value = serde_json::from_str(&server.run(&["history", id, "--format", "json"])).unwrap();
    let types: Vec<&str> =
        now["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["CustomerCreated", "CustomerUpdated"]);
    assert_eq!(now["state"]["customer"]["fields"]["level"], "A");

    let pos = created.position.to_string();
    let then: serde_json::Value =
        serde_json::from_str(&server.run(&["history", id, "--as-of", &pos, "--format", "json"])).unwrap();
    assert_eq!(then["events"].as_array().unwrap().len(), 1);
    assert_eq!(then["state"]["customer"]["fields"]["level"], "B");
    let before: serde_json::Value =
        serde_json::from_str(&server.run(&["history", id, "--as-of", "2020-01-01", "--format", "json"])).unwrap();
    assert_eq!(before["state"]["exists"], false);
    let table = server.run(&["history", id]);
    assert!(table.contains("CustomerUpdated") && table.contains("level"), "{table}");

    let csv = server.run(&["audit", "--actor", "admin", "--op", "CustomerUpdated", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "position,recorded_at,actor,operation,stream,source,correlation_id");
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].contains(&format!("customer-{id}")));
    let none = server.run(&["audit", "--from", "2020-01-01", "--to", "2020-01-02", "--format", "csv"]);
    assert_eq!(none.lines().count(), 1, "{none}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_source_shows_in_status_and_resumes_and_the_log_verifies_online() {
    use crm_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let mut intake = pb::intake_client::IntakeClient::new(server.channel().await);
    intake
        .configure_source(pb::ConfigureSourceRequest {
            source: "finance".into(),
            fields: [("name".to_owned(), pb::FieldRule { required: true, ..Default::default() })].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A broken export: records without a modification time; five such batches pause the source.
    let broken = pb::SyncRecordsRequest {
        source: "finance".into(),
        records: vec![pb::SyncRecord { external_id: "KH9".into(), modified_at_micros: 0, fields: vec![] }],
        ..Default::default()
    };
    for _ in 0..5 {
        intake.sync_records(broken.clone()).await.unwrap_err();
    }
    let status: serde_json::Value = serde_json::from_str(&server.run(&["status", "--format", "json"])).unwrap();
    let finance = status["sources"].as_array().unwrap().iter().find(|s| s["source"] == "finance").unwrap().clone();
    assert_eq!(finance["paused"], true, "{status}");
    assert!(server.run(&["source", "list"]).contains("PAUSED"));

    let out = server.run(&["source", "resume", "finance"]);
    assert!(out.contains("resumed finance"), "{out}");
    let list = server.run(&["source", "list"]);
    assert!(list.contains("running") && !list.contains("PAUSED"), "{list}");

    let out = server.run(&["verify", "log"]);
    assert!(out.starts_with("log ok"), "{out}");
}
