//! `patchd audit`, and the modes of what patchd creates: a private state directory (0700)
//! and database file (0600).

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;

use chrono::{TimeZone, Utc};
use patchd_store::{AuditEntry, OpenOptions, Store};

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn patchd(config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchd"));
    cmd.arg("--config").arg(config);
    for var in ["PATCHD_CONFIG", "PATCHD_DATABASE_URL", "PATCHD_ENDPOINT_URL"] {
        cmd.env_remove(var);
    }
    cmd
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn audit_prints_the_log_and_the_state_is_private() {
    let scratch = Scratch(std::env::temp_dir().join(format!("patchd-audit-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    std::fs::create_dir_all(&scratch.0).unwrap();
    let state = scratch.0.join("state").join("nested");
    let config = scratch.0.join("patchd.toml");
    std::fs::write(&config, format!("[daemon]\nstate_dir = \"{}\"\n", state.display())).unwrap();

    // A fresh state: `audit` only reads, so it fails and creates nothing; `db migrate` creates
    // the directory and the database, both private.
    let out = patchd(&config).args(["audit"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database at "), "{out:?}");
    assert!(!state.exists(), "audit created the state directory");
    let out = patchd(&config).args(["db", "migrate"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = patchd(&config).args(["audit"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no audit entries\n");
    let db = state.join("patchd.db");
    assert_eq!(mode(&state), 0o700, "state_dir");
    assert_eq!(mode(&db), 0o600, "database file");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store =
            Store::open(&format!("sqlite://{}", db.display()), &OpenOptions::default()).await.unwrap();
        let details =
            serde_json::json!({ "run_id": "r-1", "plan": ["scan", "install"], "note": "x".repeat(100) });
        let entries = [
            (
                Utc.with_ymd_and_hms(2026, 11, 1, 3, 0, 0).unwrap(),
                "window-run-start",
                Some("weekly"),
                None,
                None,
            ),
            (
                Utc.with_ymd_and_hms(2026, 11, 2, 3, 0, 5).unwrap(),
                "send-command",
                Some("i-0abc,i-0def"),
                Some("cmd-1234"),
                Some("req-5678"),
            ),
        ];
        for (at, action, target, command_id, request_id) in entries {
            store
                .append_audit(&AuditEntry {
                    at,
                    actor: "daemon",
                    action,
                    target,
                    command_id,
                    request_id,
                    details: Some(&details),
                })
                .await
                .unwrap();
        }
        store.close().await;
    });
    assert_eq!(mode(&db), 0o600, "still private after writes");

    let out = patchd(&config).args(["audit"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for column in ["TIME", "ACTOR", "ACTION", "TARGET", "COMMAND", "REQUEST", "DETAILS"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(lines[1].starts_with("2026-11-01T03:00:00Z  daemon  window-run-start  weekly"), "{table}");
    assert!(
        lines[2].contains("send-command") && lines[2].contains("cmd-1234") && lines[2].contains("req-5678")
    );
    assert!(lines[2].ends_with('…'), "long details are abbreviated: {table}");

    let out = patchd(&config).args(["audit", "--since", "2026-11-02", "--format", "json"]).output().unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["action"], "send-command");
    assert_eq!(rows[0]["at"], "2026-11-02T03:00:05Z");
    assert_eq!(rows[0]["command_id"], "cmd-1234");
    assert_eq!(rows[0]["details"]["note"].as_str().unwrap().len(), 100, "JSON keeps details whole");

    let out = patchd(&config).args(["audit", "--since", "yesterday"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses a bad instant");
}
