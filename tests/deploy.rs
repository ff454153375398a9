//! The container artifacts under deploy/ agree with patchd and with each other. No container
//! engine runs here, so the image is never built in CI; these checks catch what a build or a
//! first start would: a toolchain too old for the locked dependencies, a health check on the
//! wrong port, a volume that is not where patchd keeps its state, a sidecar that runs as
//! another user than the image provides for.

use std::path::PathBuf;
use std::process::Command;

use patchd_config::{DEFAULT_LISTEN, DEFAULT_STATE_DIR};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

/// `1.94.1` → (1, 94, 1); a missing patch number is 0, as Cargo reads `rust-version`.
fn version(text: &str) -> (u32, u32, u32) {
    let mut parts =
        text.trim().split('.').map(|p| p.parse::<u32>().unwrap_or_else(|_| panic!("version `{text}`")));
    (parts.next().unwrap(), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn workspace_rust_version() -> String {
    let manifest = read("Cargo.toml");
    let line = manifest.lines().find(|l| l.starts_with("rust-version")).expect("workspace rust-version");
    line.split('"').nth(1).expect("rust-version = \"X.Y\"").to_string()
}

/// The value of `INSTRUCTION` lines in the Containerfile's final stage, continuations joined.
fn final_stage(containerfile: &str) -> Vec<(String, String)> {
    let joined = containerfile.replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (word, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (word.to_ascii_uppercase(), rest.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect();
    let last_from = instructions.iter().rposition(|(w, _)| w == "FROM").expect("a FROM");
    instructions[last_from..].to_vec()
}

fn instruction<'a>(stage: &'a [(String, String)], word: &str) -> Vec<&'a str> {
    stage.iter().filter(|(w, _)| w == word).map(|(_, v)| v.as_str()).collect()
}

/// `cargo metadata` for the packages this platform builds, dev-dependencies included. Offline
/// first: the build that runs this test downloaded them all. Other platforms' packages
/// (windows-*) are never downloaded by a build here, so they are filtered out rather than
/// fetched; only if something is still missing does cargo fetch it.
fn locked_packages_for_this_platform() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc).arg("-vV").output().expect("rustc -vV runs");
    let version = String::from_utf8_lossy(&version.stdout);
    let host = version.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc -vV names the host");
    let metadata = |offline: bool| {
        let mut command = Command::new(&cargo);
        command.args(["metadata", "--format-version", "1", "--locked", "--filter-platform", host]);
        if offline {
            command.arg("--offline");
        }
        command.current_dir(root()).output().expect("cargo metadata runs")
    };
    let mut out = metadata(true);
    if !out.status.success() {
        out = metadata(false);
    }
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// The oldest Rust that builds a package, and where that comes from: its `rust-version`, or,
/// when it declares none, the first release of its edition (a lower bound, but the only one
/// such a package states).
fn minimum_rust(package: &serde_json::Value) -> (String, String) {
    let name = &package["name"];
    if let Some(declared) = package["rust_version"].as_str() {
        return (declared.to_string(), "its rust-version".to_string());
    }
    let edition = package["edition"].as_str().unwrap_or_else(|| panic!("{name} has no edition"));
    let first = match edition {
        "2015" => "1.0",
        "2018" => "1.31",
        "2021" => "1.56",
        "2024" => "1.85",
        other => panic!("{name}: edition {other} is unknown to this test; add its first Rust release"),
    };
    (first.to_string(), format!("edition {edition}; it declares no rust-version"))
}

/// Every locked package, dev-dependencies included, builds with the toolchain the workspace
/// declares, and the image builds with exactly that toolchain: a dependency update that needs a
/// newer Rust fails here rather than in someone's `docker build`.
#[test]
fn the_declared_toolchain_builds_every_locked_dependency_and_the_image_uses_it() {
    let metadata = locked_packages_for_this_platform();
    let declared = workspace_rust_version();
    let packages = metadata["packages"].as_array().unwrap();
    assert!(packages.len() > 100, "cargo metadata lists the locked packages: {}", packages.len());
    let too_new: Vec<String> = packages
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["version"].as_str().unwrap(), minimum_rust(p)))
        .filter(|(_, _, (needs, _))| version(needs) > version(&declared))
        .map(|(name, v, (needs, why))| format!("{name} {v} needs Rust {needs} ({why})"))
        .collect();
    assert!(
        too_new.is_empty(),
        "Cargo.toml declares rust-version {declared}, but locked packages need more: {too_new:#?}\n\
         raise rust-version (and deploy/Containerfile's RUST_VERSION with it)"
    );

    let containerfile = read("deploy/Containerfile");
    let arg =
        containerfile.lines().find_map(|l| l.strip_prefix("ARG RUST_VERSION=")).expect("ARG RUST_VERSION");
    assert_eq!(arg.trim(), declared, "the image builds with the declared toolchain");
    assert!(
        read("deploy/README.md").contains(&format!("rust:{declared}-slim")),
        "deploy/README.md names the builder image"
    );
}

#[test]
fn the_image_keeps_state_where_patchd_does_and_checks_health_where_it_listens() {
    let containerfile = read("deploy/Containerfile");
    assert!(containerfile.matches("\nFROM ").count() >= 2, "multi-stage: build, then runtime");
    assert!(containerfile.contains("cargo build --release --locked -p patchd"));
    let stage = final_stage(&containerfile);

    let user = instruction(&stage, "USER");
    assert_eq!(user.len(), 1, "{stage:#?}");
    let (uid, gid) = user[0].split_once(':').expect("USER uid:gid");
    assert!(uid.parse::<u32>().unwrap() > 0 && gid.parse::<u32>().unwrap() > 0, "not root: {}", user[0]);

    // The only writable place on a read-only root filesystem is patchd's state directory.
    assert_eq!(instruction(&stage, "VOLUME"), [format!("[\"{DEFAULT_STATE_DIR}\"]")]);
    let env = instruction(&stage, "ENV").join(" ");
    for var in ["HOME", "TMPDIR"] {
        assert!(env.contains(&format!("{var}={DEFAULT_STATE_DIR}")), "{var} in the state volume: {env}");
    }

    let port = DEFAULT_LISTEN.rsplit_once(':').unwrap().1;
    assert_eq!(instruction(&stage, "EXPOSE"), [port]);
    let health = instruction(&stage, "HEALTHCHECK").join(" ");
    assert!(health.contains(&format!("\"http://{DEFAULT_LISTEN}/healthz\"")), "{health}");
    assert_eq!(instruction(&stage, "ENTRYPOINT"), ["[\"/usr/local/bin/patchd\"]"]);
    assert_eq!(
        instruction(&stage, "CMD"),
        ["[\"run\", \"--config\", \"/etc/patchd\", \"--log-format\", \"json\"]"]
    );

    let ignored = read(".dockerignore");
    for path in ["target/", ".git/"] {
        assert!(ignored.lines().any(|l| l.trim() == path), ".dockerignore leaves out {path}");
    }
}

#[test]
fn the_sidecar_runs_the_image_as_its_user_on_a_read_only_root() {
    let sidecar = read("deploy/sidecar.yaml");
    let containerfile = read("deploy/Containerfile");
    let stage = final_stage(&containerfile);
    let (uid, gid) = instruction(&stage, "USER")[0].split_once(':').unwrap();
    for line in [
        format!("runAsUser: {uid}"),
        format!("runAsGroup: {gid}"),
        format!("fsGroup: {gid}"),
        "runAsNonRoot: true".to_string(),
        "readOnlyRootFilesystem: true".to_string(),
        "allowPrivilegeEscalation: false".to_string(),
        "path: /healthz".to_string(),
        format!("state_dir = \"{DEFAULT_STATE_DIR}\""),
        format!("mountPath: {DEFAULT_STATE_DIR}"),
    ] {
        assert!(sidecar.lines().any(|l| l.trim() == line), "deploy/sidecar.yaml: `{line}` missing");
    }
    // The container port is the one the ConfigMap's configuration listens on.
    let listen =
        sidecar.lines().find_map(|l| l.trim().strip_prefix("listen = ")).expect("listen in the ConfigMap");
    let port = listen.trim_matches('"').rsplit_once(':').unwrap().1;
    assert!(sidecar.lines().any(|l| l.trim() == format!("containerPort: {port}")), "containerPort {port}");
    // The same command as the image's CMD.
    let cmd = instruction(&stage, "CMD")[0];
    assert!(sidecar.lines().any(|l| l.trim() == format!("args: {cmd}")), "args: {cmd}");
}
