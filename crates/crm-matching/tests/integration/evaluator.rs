//! The evaluator binary on the committed fixture: the CI gate for matching quality.

use std::path::PathBuf;
use std::process::Command;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/matching/small")
}

fn run(extra: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .arg("--fixture")
        .arg(fixture())
        .args(extra)
        .output()
        .expect("evaluate runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn metric(output: &str, name: &str) -> f64 {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in output:\n{output}"))
}

#[test]
fn small_fixture_meets_the_quality_targets() {
    let (ok, output) = run(&["--min-f1", "0.97", "--min-precision", "0.98", "--min-pair-completeness", "0.995"]);
    assert!(ok, "evaluator below target:\n{output}");
    assert!(metric(&output, "f1") >= 0.97, "{output}");
    assert!(metric(&output, "precision") >= 0.98, "{output}");
    assert!(metric(&output, "pair completeness") >= 0.995, "{output}");
    // Blocking compares under 0.1% of all pairs.
    assert!(metric(&output, "reduction ratio") > 0.999, "{output}");
}

#[test]
fn evaluator_fails_below_its_target() {
    let (ok, output) = run(&["--min-f1", "1.01"]);
    assert!(!ok, "an unreachable target must fail:\n{output}");
    assert!(output.contains("below target"), "{output}");
}
