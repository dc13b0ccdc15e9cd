//! End to end: `hapair lab bench failover --trials 1 --scenarios link-down` runs hapair and
//! keepalived in the namespace lab and prints a table with numbers for both.
//!
//! Needs root and keepalived (`.ci/run` installs it). Outside CI a missing one skips with a
//! message; with `CI=true` a skip is a failure.

use std::process::Command;

use hapair::lab::keepalived;
use hapair::lab::netns::require_root;

fn require_keepalived(test: &str) -> bool {
    if keepalived::installed() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: keepalived is not installed, and CI=true forbids skipping");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: SKIPPED: keepalived is not installed (apt-get install -y keepalived)"
    );
    false
}

/// The first number in a table cell like `269.8 / 280.1`.
fn first_number(cell: &str) -> Option<f64> {
    cell.split_whitespace().next()?.parse().ok()
}

#[test]
fn bench_failover_link_down_smoke() {
    if !require_root("bench_failover_link_down_smoke")
        || !require_keepalived("bench_failover_link_down_smoke")
    {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hapair"))
        .args([
            "lab",
            "bench",
            "failover",
            "--trials",
            "1",
            "--scenarios",
            "link-down",
            "--out",
        ])
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");

    // Rows: daemon label, then columns separated by two or more spaces.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.contains("link-down") && !l.starts_with(' '))
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    let takeover = |label: &str| -> f64 {
        let row = rows
            .iter()
            .find(|r| r[0].starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} row in:\n{stdout}"));
        // daemon, scenario, trials, takeover med/max, outage med/max, failed, GARP
        assert_eq!(row[1], "link-down", "{row:?}");
        let outage = first_number(row[4]).unwrap_or_else(|| panic!("no numeric outage in {row:?}"));
        assert!(outage >= 0.0, "{row:?}");
        first_number(row[3]).unwrap_or_else(|| panic!("no numeric takeover in {row:?}"))
    };
    let hapair = takeover("hapair defaults");
    let tuned = takeover("hapair tuned");
    let ka3 = takeover("keepalived v3");
    let ka2 = takeover("keepalived v2");
    assert!(
        hapair < 350.0,
        "hapair link-down takeover {hapair} ms >= 350 ms\n{stdout}"
    );
    assert!(tuned > 0.0 && ka3 > 0.0 && ka2 > 0.0, "{stdout}");
    assert!(stdout.contains("keepalived / hapair"), "{stdout}");

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("bench-failover.json")).unwrap(),
    )
    .unwrap();
    let variants = json["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 4, "{json}");
    let hp = &variants.iter().find(|v| v["key"] == "hapair").unwrap()["results"][0]["summary"];
    assert!(hp["takeover_median_ms"].as_f64().unwrap() < 350.0, "{hp}");
}
