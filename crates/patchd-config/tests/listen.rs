//! `[daemon] listen` and `api_token_file`: loopback by default, and a non-loopback address only
//! with a token file, refused at the line of `listen` otherwise.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use patchd_config::{load_sources, LoadError, Loaded, DEFAULT_LISTEN};

fn load(daemon: &str) -> Result<Loaded, LoadError> {
    let text = format!("[daemon]\nstate_dir = \"/var/lib/patchd\"\n{daemon}\n");
    load_sources(
        vec![(PathBuf::from("/etc/patchd/patchd.toml"), text)],
        Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap(),
    )
}

fn errors(daemon: &str) -> Vec<String> {
    match load(daemon) {
        Ok(_) => Vec::new(),
        Err(LoadError::Invalid { diagnostics }) => diagnostics.iter().map(|d| d.to_string()).collect(),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn the_default_is_loopback_port_9487_without_a_token() {
    assert_eq!(DEFAULT_LISTEN, "127.0.0.1:9487");
    let config = load("").unwrap().config;
    assert_eq!(config.daemon.listen.to_string(), "127.0.0.1:9487");
    assert_eq!(config.daemon.api_token_file, None);
}

#[test]
fn a_non_loopback_listen_needs_a_token_file() {
    let found = errors("listen = \"0.0.0.0:9487\"");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with(
            "/etc/patchd/patchd.toml:3:10: error: `listen = \"0.0.0.0:9487\"` is not a loopback address"
        ),
        "{found:#?}"
    );
    assert!(found[0].contains("api_token_file"), "{found:#?}");
    assert_eq!(errors("listen = \"[::]:9487\"").len(), 1);
    assert_eq!(errors("listen = \"10.0.0.5:9487\"").len(), 1);
}

#[test]
fn a_token_file_allows_any_address_and_is_relative_to_its_file() {
    let config = load("listen = \"0.0.0.0:9487\"\napi_token_file = \"api.token\"").unwrap().config;
    assert_eq!(config.daemon.api_token_file, Some(PathBuf::from("/etc/patchd/api.token")));
    let config = load("listen = \"[::1]:9487\"").unwrap().config;
    assert!(config.daemon.listen.ip().is_loopback());
    assert_eq!(errors("api_token_file = \" \"").len(), 1, "an empty name is refused");
}

fn warnings(daemon: &str) -> Vec<String> {
    load(daemon).unwrap().warnings.iter().map(|d| d.to_string()).collect()
}

#[test]
fn tls_takes_a_certificate_and_its_key_together() {
    let config =
        load("tls_cert_file = \"tls/cert.pem\"\ntls_key_file = \"/secrets/key.pem\"").unwrap().config;
    let tls = config.daemon.tls.expect("TLS on");
    assert_eq!(tls.cert_file, PathBuf::from("/etc/patchd/tls/cert.pem"), "relative to its file");
    assert_eq!(tls.key_file, PathBuf::from("/secrets/key.pem"));
    assert_eq!(load("").unwrap().config.daemon.tls, None, "plain HTTP by default");

    let found = errors("tls_cert_file = \"cert.pem\"");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with(
            "/etc/patchd/patchd.toml:3:17: error: `tls_cert_file` is set without `tls_key_file`"
        ),
        "{found:#?}"
    );
    let found = errors("tls_key_file = \"key.pem\"");
    assert!(found[0].contains("`tls_key_file` is set without `tls_cert_file`"), "{found:#?}");
    assert_eq!(errors("tls_cert_file = \"\"\ntls_key_file = \"key.pem\"").len(), 2, "empty, then alone");
}

#[test]
fn a_token_off_loopback_without_tls_is_a_warning() {
    let found = warnings("listen = \"0.0.0.0:9487\"\napi_token_file = \"api.token\"");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("is not a loopback address and TLS is off"), "{found:#?}");
    let with_tls = "listen = \"0.0.0.0:9487\"\napi_token_file = \"api.token\"\n\
                    tls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\"";
    assert!(warnings(with_tls).is_empty());
    assert!(warnings("api_token_file = \"api.token\"").is_empty(), "loopback stays on the host");
}
