//! Backup while the server runs, full and point-in-time restore: identical logs (every field,
//! hash chain included) and identical read models.

use std::path::Path;

use crate::support::{crmctl, fixture, ok, Server};

fn head(server: &Server) -> u64 {
    let status: serde_json::Value = serde_json::from_str(&server.run(&["status", "--format", "json"])).unwrap();
    status["head"].as_u64().unwrap()
}

fn restore(from: &Path, to: &Path, extra: &[&str]) -> String {
    let mut args = vec!["restore", "--from", from.to_str().unwrap(), "--data-dir", to.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(crmctl().args(&args).output().unwrap(), &args)
}

/// Every projection of the server equals a rebuild from its log.
fn verify_projections(server: &Server) {
    let status: serde_json::Value = serde_json::from_str(&server.run(&["status", "--format", "json"])).unwrap();
    let count = status["projections"].as_array().unwrap().len();
    let out = server.run(&["verify", "all"]);
    assert_eq!(out.lines().filter(|l| l.contains(" ok: ")).count(), count, "{out}");
    assert!(count >= 3, "{status}");
}

#[test]
fn backup_restore_and_point_in_time_restore_give_identical_logs_and_read_models() {
    let dir = tempfile::tempdir().unwrap();
    let original = Server::start(&dir.path().join("a"), None);
    let token = dir.path().join("a/bootstrap-admin-token");
    let mapping = fixture("legacy_customers.mapping.toml");
    let csv_path = dir.path().join("legacy_customers.csv");
    std::fs::copy(fixture("legacy_customers.csv"), &csv_path).unwrap();
    original.run(&["import", csv_path.to_str().unwrap(), "--mapping", mapping.to_str().unwrap()]);

    // The point in time: what the server served then.
    let p = head(&original);
    let events_at_p = original.run(&["export", "events"]);
    let customers_at_p = original.run(&["export", "customers"]);
    assert_eq!(events_at_p.lines().count() as u64, p);
    let last: serde_json::Value = serde_json::from_str(events_at_p.lines().last().unwrap()).unwrap();
    let time_at_p = last["recorded_at"].as_str().unwrap().to_owned();

    // Later writes: a UTF-8 file of three more customers and a rule change.
    let more = dir.path().join("more.csv");
    std::fs::write(&more, "客户名称,手机\n宁波港湾贸易有限公司,13957400001\n厦门鹭岛软件有限公司,+86 159 5920 0002\n合肥庐州仪器有限公司,18655100003\n").unwrap();
    let more_mapping = dir.path().join("more.toml");
    std::fs::write(&more_mapping, "[columns]\n\"客户名称\" = \"name\"\n\"手机\" = \"phone\"\n").unwrap();
    original.run(&["import", more.to_str().unwrap(), "--mapping", more_mapping.to_str().unwrap()]);
    let rules = original.run(&["rules", "get"]).replace("follow_up_reminder_days = 7", "follow_up_reminder_days = 5");
    let rules_file = dir.path().join("rules.toml");
    std::fs::write(&rules_file, rules).unwrap();
    original.run(&["rules", "set", rules_file.to_str().unwrap(), "--reason", "faster follow-up", "--yes"]);
    assert!(head(&original) > p + 3);

    // Backup while the server runs, then the full state of the original.
    let backup = dir.path().join("backup");
    let out = original.run(&["backup", "--out", backup.to_str().unwrap()]);
    assert!(out.contains("hash chain verified"), "{out}");
    let events = original.run(&["export", "events"]);
    let customers = original.run(&["export", "customers"]);
    let jsonl = dir.path().join("events.jsonl");
    std::fs::write(&jsonl, &events).unwrap();
    assert!(ok(crmctl().args(["verify", "log", "--data-dir"]).arg(&backup).output().unwrap(), &[]).contains("log ok"));

    // A full restore of the backup serves the same log and the same read models. The tokens
    // are in the log, so the original administrator token works there.
    let full = dir.path().join("full");
    restore(&backup, &full, &[]);
    let restored = Server::start(&full, Some(&token));
    assert_eq!(restored.run(&["export", "events"]), events, "identical log: every field of every event");
    assert_eq!(restored.run(&["export", "customers"]), customers, "identical customers read model");
    assert!(restored.run(&["rules", "get"]).contains("follow_up_reminder_days = 5"));
    verify_projections(&restored);
    drop(restored);

    // Point in time by position, by time, and from an exported JSON Lines file.
    let at_position = dir.path().join("at-position");
    restore(&backup, &at_position, &["--to-position", &p.to_string()]);
    let at_time = dir.path().join("at-time");
    restore(&backup, &at_time, &["--to-time", &time_at_p]);
    let from_jsonl = dir.path().join("from-jsonl");
    restore(&jsonl, &from_jsonl, &["--to-position", &p.to_string()]);
    for data in [&at_position, &at_time, &from_jsonl] {
        let server = Server::start(data, Some(&token));
        assert_eq!(server.run(&["export", "events"]), events_at_p, "{}", data.display());
        assert_eq!(server.run(&["export", "customers"]), customers_at_p, "{}", data.display());
        assert!(server.run(&["rules", "get"]).contains("follow_up_reminder_days = 7"));
        verify_projections(&server);
    }

    // A backup taken while an import runs holds one consistent prefix of the log.
    let later = dir.path().join("later.csv");
    let rows: String = (0..40).map(|i| format!("示例贸易有限公司{i:02},1390000{i:04}\n")).collect();
    std::fs::write(&later, format!("客户名称,手机\n{rows}")).unwrap();
    let mut import = original
        .crmctl()
        .args(["import", later.to_str().unwrap(), "--mapping", more_mapping.to_str().unwrap(), "--batch-size", "2"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let during = dir.path().join("during");
    original.run(&["backup", "--out", during.to_str().unwrap()]);
    assert!(import.wait().unwrap().success());
    let copied = dir.path().join("during-restored");
    restore(&during, &copied, &[]);
    let server = Server::start(&copied, Some(&token));
    let copy = server.run(&["export", "events"]);
    let h = copy.lines().count().to_string();
    assert_eq!(copy, original.run(&["export", "events", "--to", &h]), "the backup is the original's prefix");
    verify_projections(&server);
    drop(server);

    // A restore never writes into an existing log.
    let again = crmctl().args(["restore", "--from"]).arg(&backup).arg("--data-dir").arg(&full).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a log"));
}
