//! What a new user meets first: a command run without a configuration, and read-only commands
//! pointed at a database that is not there. Each error says its cause once and what to do, and
//! a command that only reads never creates a database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A scratch directory, removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("patchd-first-contact-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// patchd run in `dir` with none of its environment variables set and HOME at `home`.
fn patchd(dir: &Path, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchd"));
    cmd.current_dir(dir).args(args).env("HOME", home);
    for var in ["PATCHD_CONFIG", "PATCHD_DATABASE_URL", "PATCHD_ENDPOINT_URL", "PATCHD_LOG"] {
        cmd.env_remove(var);
    }
    // No AWS: a command that would ask AWS before the database fails fast instead.
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_without_a_configuration_says_why_once_and_what_to_do() {
    let scratch = Scratch::new("no-config");
    let out = patchd(&scratch.0, &scratch.0, &["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("patchd: error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].starts_with("patchd: error: cannot read /etc/patchd: "), "{err}");
    let cause = errors[0].rsplit(": ").next().unwrap();
    assert_eq!(err.matches(cause).count(), 1, "the cause `{cause}` is said once: {err}");
    assert_eq!(err.matches("(os error").count(), 1, "{err}");
    let hint =
        err.lines().find(|l| l.starts_with("patchd: hint: ")).unwrap_or_else(|| panic!("a hint: {err}"));
    for advice in ["--config", "PATCHD_CONFIG", "config/example.toml", "patchd demo"] {
        assert!(hint.contains(advice), "the hint names {advice}: {hint}");
    }
}

#[test]
fn a_configuration_directory_without_files_gets_the_hint_too() {
    let scratch = Scratch::new("empty-dir");
    let out = patchd(&scratch.0, &scratch.0, &["check", "--config", "."]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("holds no *.toml files"), "{err}");
    assert!(err.contains("patchd: hint: ") && err.contains("config/example.toml"), "{err}");
}

/// Every command that only reads, given a database that does not exist.
const READ_ONLY: &[&[&str]] = &[
    &["report", "sla"],
    &["report", "compliance"],
    &["report", "coverage"],
    &["report", "history"],
    &["report", "evidence", "--format", "html", "--out", "evidence.html"],
    &["audit"],
    &["plan", "--offline"],
    &["check"],
    &["baseline", "preview", "patchd-prod-amazon-linux-2"],
    &["db", "status"],
    &["advisories", "status"],
];

#[test]
fn read_only_commands_name_a_missing_database_and_create_nothing() {
    let scratch = Scratch::new("missing-db");
    let config = root().join("config/example.toml");
    let config = config.to_str().unwrap();
    let dir = scratch.0.join("missing");
    let file = dir.join("x.db");
    let url = format!("sqlite://{}", file.display());
    for command in READ_ONLY {
        let mut args = vec!["--config", config, "--database", &url];
        args.extend_from_slice(command);
        let out = patchd(&scratch.0, &scratch.0, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {err}");
        assert!(
            err.contains(&format!("patchd: error: no database at {}", file.display())),
            "{command:?}: {err}"
        );
        assert!(err.contains("patchd: hint: check the path"), "{command:?}: {err}");
        assert!(err.contains("patchd db migrate"), "{command:?}: {err}");
        assert!(!dir.exists(), "{command:?} created {}", dir.display());
        assert!(!file.exists(), "{command:?} created {}", file.display());
        assert!(!scratch.0.join("evidence.html").exists(), "{command:?} wrote a report");
    }
    // The same through PATCHD_DATABASE_URL, and with the directory there but not the file.
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchd"));
    cmd.current_dir(&scratch.0).args(["--config", config, "report", "sla"]).env("HOME", &scratch.0);
    cmd.env_remove("PATCHD_CONFIG").env("PATCHD_DATABASE_URL", &url);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no database at "), "{}", stderr(&out));
    assert!(!file.exists(), "report sla created {}", file.display());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing in the directory");
}

#[test]
fn read_only_commands_refuse_an_unmigrated_database_and_leave_it_alone() {
    let scratch = Scratch::new("unmigrated");
    let config = root().join("config/example.toml");
    let config = config.to_str().unwrap();
    let file = scratch.0.join("empty.db");
    std::fs::write(&file, "").unwrap();
    let url = format!("sqlite://{}", file.display());
    for command in [&["report", "sla"][..], &["audit"], &["advisories", "status"]] {
        let mut args = vec!["--config", config, "--database", &url];
        args.extend_from_slice(command);
        let out = patchd(&scratch.0, &scratch.0, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {err}");
        assert!(err.contains(&url) && err.contains("run `patchd db migrate`"), "{command:?}: {err}");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0, "{command:?} wrote to the database");
    }
    // `db status` says where the schema stands, and `db migrate` is what creates.
    let status = patchd(&scratch.0, &scratch.0, &["--config", config, "--database", &url, "db", "status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    assert!(String::from_utf8_lossy(&status.stdout).contains(": empty; "), "{status:?}");
    let fresh = scratch.0.join("new").join("patchd.db");
    let fresh_url = format!("sqlite://{}", fresh.display());
    let migrate =
        patchd(&scratch.0, &scratch.0, &["--config", config, "--database", &fresh_url, "db", "migrate"]);
    assert_eq!(migrate.status.code(), Some(0), "{}", stderr(&migrate));
    assert!(fresh.is_file(), "db migrate creates the database");
    let report =
        patchd(&scratch.0, &scratch.0, &["--config", config, "--database", &fresh_url, "report", "sla"]);
    assert_eq!(report.status.code(), Some(0), "{}", stderr(&report));
}

/// `plan` reads the database only for a task that promotes. A configured database that does not
/// exist yet (a fresh install) is a note in the plan, not an error, and is not created.
#[test]
fn plan_with_a_promoting_task_and_no_database_yet_creates_none() {
    let scratch = Scratch::new("plan-promote");
    let state = scratch.0.join("state");
    let example = std::fs::read_to_string(root().join("config/example.toml")).unwrap();
    let configured = example
        .replace("state_dir = \"/var/lib/patchd\"", &format!("state_dir = \"{}\"", state.display()))
        .replace(
            "database_url = \"sqlite:///var/lib/patchd/patchd.db\"",
            &format!("database_url = \"sqlite://{}/patchd.db\"", state.display()),
        );
    assert_ne!(configured, example, "the example names its state directory and database");
    let promoting = "\n[[window]]\nname = \"prod-db-promoted\"\nschedule = \"cron(0 3 ? * WED *)\"\n\
                     duration_hours = 4\ncutoff_hours = 1\n\n[[window.task]]\nname = \"install-db\"\n\
                     operation = \"install\"\ngroups = [\"prod-db\"]\n\n[window.task.promote]\n\
                     from = \"prod-weekly-install\"\nbucket = \"acme-patch-lists\"\n";
    let config = scratch.0.join("patchd.toml");
    std::fs::write(&config, configured + promoting).unwrap();
    let config = config.to_str().unwrap();

    let out = patchd(&scratch.0, &scratch.0, &["--config", config, "plan", "--offline", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problem = plan["promotions"][0]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("no database at"), "{plan}");
    assert!(!state.exists(), "plan created {}", state.display());

    // Named on the command line, the same missing database is a mistake to point out.
    let url = format!("sqlite://{}/patchd.db", state.display());
    let out = patchd(&scratch.0, &scratch.0, &["--config", config, "--database", &url, "plan", "--offline"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no database at "), "{}", stderr(&out));
    assert!(!state.exists(), "plan created {}", state.display());
}
