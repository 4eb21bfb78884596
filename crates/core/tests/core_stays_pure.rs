//! `registrar-core` is the pure domain: it must never depend on the AWS SDK, reqwest or a
//! tokio runtime (design.md, "Rooms"). This test reads the real dependency tree.

use std::process::Command;

#[test]
fn core_has_no_io_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "registrar-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let forbidden = [
        "aws-sdk-",
        "aws-config",
        "aws-smithy",
        "reqwest",
        "tokio",
        "hyper",
    ];
    let offenders: Vec<&str> = tree
        .lines()
        .filter(|line| forbidden.iter().any(|f| line.starts_with(f)))
        .collect();
    assert!(
        offenders.is_empty(),
        "registrar-core depends on I/O crates: {offenders:?}"
    );
    assert!(
        tree.lines().any(|l| l.starts_with("serde ")),
        "the tree was read: {tree}"
    );
}
