//! The GBK fixture: the expected cleansing report, then an import that creates every accepted
//! row exactly once, even when killed mid-way and run again.

use std::path::Path;
use std::time::Duration;

use crate::support::{fixture, Server};

/// A customer that exists before the import; line 3 of the fixture (0086 phone) matches it.
const EXISTING: &str = "0a5e0000-0000-4000-8000-000000000003";

async fn create_existing(server: &Server) {
    use crm_proto::v1 as pb;
    let mut commands = pb::command_service_client::CommandServiceClient::new(server.channel().await);
    let fields = [
        ("name", "上海申通精密机械有限公司"),
        ("phone", "137 6123 4567"),
        ("region", "上海"),
        ("contact_name", "李娜"),
    ];
    commands
        .create_customer(pb::CreateCustomerRequest {
            customer_id: EXISTING.into(),
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn customers(server: &Server) -> Vec<csv::StringRecord> {
    let out = server.run(&["export", "customers"]);
    csv::Reader::from_reader(out.as_bytes()).records().map(Result::unwrap).collect()
}

fn head(server: &Server) -> u64 {
    let status: serde_json::Value = serde_json::from_str(&server.run(&["status", "--format", "json"])).unwrap();
    status["head"].as_u64().unwrap()
}

/// Compares with a committed expected file; `UPDATE_EXPECT=1` rewrites it.
fn check(actual: &str, expected_file: &Path) {
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(expected_file, actual).unwrap();
    }
    let expected = std::fs::read_to_string(expected_file).unwrap_or_default();
    assert_eq!(actual, expected, "differs from {} (UPDATE_EXPECT=1 to accept)", expected_file.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gbk_fixture_gives_the_expected_report_and_imports_exactly_once_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    create_existing(&server).await;
    let csv_path = dir.path().join("legacy_customers.csv");
    std::fs::copy(fixture("legacy_customers.csv"), &csv_path).unwrap();
    let mapping = fixture("legacy_customers.mapping.toml");
    let (csv_arg, mapping_arg) = (csv_path.to_str().unwrap(), mapping.to_str().unwrap());
    let head_before = head(&server);

    // The dry run: the expected report, and nothing stored.
    let report = server.run(&["import", csv_arg, "--mapping", mapping_arg, "--dry-run"]);
    check(&report, &fixture("legacy_customers.report.txt"));
    let json = server.run(&[
        "import",
        csv_arg,
        "--mapping",
        mapping_arg,
        "--dry-run",
        "--report-format",
        "json",
        "--encoding",
        "gbk",
    ]);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    let lines =
        |key: &str| -> Vec<u64> { r[key].as_array().unwrap().iter().map(|i| i["line"].as_u64().unwrap()).collect() };
    assert_eq!(r["encoding"], "gbk");
    assert_eq!(r["rows"], 20);
    assert_eq!(lines("rejected"), [11]);
    assert_eq!(lines("invalid_phones"), [6, 7, 10]);
    assert_eq!(lines("invalid_uscc"), [7, 10, 15]);
    assert_eq!(lines("duplicates_in_file"), [8, 13, 16, 19]);
    assert_eq!(lines("duplicates_existing"), [3]);
    assert_eq!(r["duplicates_existing"][0]["of"], format!("customer {EXISTING}"));
    assert_eq!(r["to_import"], 14);
    assert_eq!(head(&server), head_before, "a dry run stores nothing");
    assert!(!dir.path().join("legacy_customers.csv.crmctl-progress").exists());

    // Interrupted: one row per batch with a pause, killed once a few batches are saved.
    let progress = dir.path().join("legacy_customers.csv.crmctl-progress");
    let mut child = server
        .crmctl()
        .args(["import", csv_arg, "--mapping", mapping_arg, "--batch-size", "1", "--pause-ms", "300"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut done = 0;
    for _ in 0..1200 {
        if let Ok(text) = std::fs::read_to_string(&progress) {
            done = serde_json::from_str::<serde_json::Value>(&text).map_or(0, |v| v["done"].as_u64().unwrap_or(0));
            if done >= 3 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(done >= 3, "the import saved progress before it was killed");
    let partial = customers(&server).len();
    assert!(partial > 1 && partial < 15, "killed mid-way: {partial} customers");

    // Resumed: every accepted row exactly once, the existing customer untouched.
    let out = server.run(&["import", csv_arg, "--mapping", mapping_arg, "--batch-size", "4"]);
    assert!(out.contains("imported 14 rows"), "{out}");
    let all = customers(&server);
    assert_eq!(all.len(), 15);
    let ids: std::collections::HashSet<&str> = all.iter().map(|c| c.get(0).unwrap()).collect();
    assert_eq!(ids.len(), 15);
    assert!(ids.contains(EXISTING));

    // Again with the progress file: nothing to do; without it: every row deduplicated.
    let out = server.run(&["import", csv_arg, "--mapping", mapping_arg]);
    assert!(out.contains("imported 14 rows"), "{out}");
    std::fs::remove_file(&progress).unwrap();
    let h = head(&server);
    let out = server.run(&["import", csv_arg, "--mapping", mapping_arg]);
    assert!(out.contains("(0 created, 14 already there)"), "{out}");
    assert_eq!(head(&server), h, "a repeated import writes nothing");
    assert_eq!(customers(&server).len(), 15);

    // What was stored is normalised, and invalid values are kept raw.
    let header: Vec<String> = {
        let out = server.run(&["export", "customers"]);
        csv::Reader::from_reader(out.as_bytes()).headers().unwrap().iter().map(str::to_owned).collect()
    };
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let by_legacy = |id: &str| all.iter().find(|c| c.get(col("custom.legacy_id")) == Some(id)).unwrap().clone();
    assert_eq!(by_legacy("KH0003").get(col("phone")), Some("+8613922334455"), "full-width digits");
    assert_eq!(by_legacy("KH0013").get(col("phone")), Some("+8613502020202"), "+86 prefix");
    assert_eq!(by_legacy("KH0017").get(col("phone")), Some("+8613320203030"), "0086 prefix");
    assert_eq!(by_legacy("KH0005").get(col("custom.phone_raw")), Some("1381234"), "an invalid phone is kept raw");
    assert_eq!(by_legacy("KH0008").get(col("uscc")), Some("91420100MA4K5L6M7D"), "uppercase, no space");

    // An auditor's export is masked as the server masks it for that role.
    let auditor = server.run(&["token", "issue", "--user", "shen.jie", "--role", "auditor"]);
    let out = crate::support::ok(
        crate::support::crmctl()
            .env("CRM_SERVER", &server.url)
            .env("CRM_TOKEN", auditor.trim())
            .args(["export", "customers"])
            .output()
            .unwrap(),
        &["export", "customers"],
    );
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    let masked_header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 15);
    let (phone, legacy) = (
        masked_header.iter().position(|h| h == "phone").unwrap(),
        masked_header.iter().position(|h| h == "custom.legacy_id").unwrap(),
    );
    let kh3 = rows.iter().find(|r| r.get(legacy) == Some("KH0003")).unwrap();
    let masked = kh3.get(phone).unwrap();
    assert!(masked.contains('*') && !masked.contains("13922334455"), "auditor sees {masked}");
}
