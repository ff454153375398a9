//! AWS credentials never belong in a configuration file: files are reviewed, committed and
//! copied around, and a key in one is a leaked key. patchd takes credentials from the AWS
//! SDK's standard chain only, so any credential-looking key or value, in any section, is an
//! error that says where the credentials should come from instead.

use toml::de::{DeTable, DeValue};

use crate::diagnostic::Diagnostics;
use crate::reader::{Source, Value};

/// Where credentials come from, and what to do with the one found.
const CHAIN_HINT: &str =
    "remove it (and rotate the key if the file was ever shared or committed); patchd takes \
credentials only from the AWS SDK's standard chain: the environment (AWS_ACCESS_KEY_ID, \
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), a profile in ~/.aws/config or ~/.aws/credentials \
(`profile = \"...\"` in [aws]; SSO and credential_process profiles included), the container \
or IRSA web-identity role, or the EC2 instance profile; use `role_arn` in [[aws.account]] to \
reach other accounts";

/// Key names (lowercase, `-` read as `_`) that hold credentials: the names the AWS CLI and SDKs
/// use in `~/.aws/credentials`, with or without the `aws_` prefix.
const CREDENTIAL_KEY_SUFFIXES: &[&str] =
    &["access_key_id", "secret_access_key", "session_token", "security_token"];
const CREDENTIAL_KEYS: &[&str] = &["access_key", "secret_key", "aws_access_key", "aws_secret_key"];

/// Whether a key names an AWS credential, e.g. `aws_secret_access_key` or `Session-Token`.
pub(crate) fn is_credential_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    CREDENTIAL_KEYS.contains(&key.as_str()) || CREDENTIAL_KEY_SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// The prefix (`AKIA` long-term, `ASIA` temporary) of the first access key id in `text`: the
/// prefix and 16 more upper-case letters or digits, not inside a longer word.
pub(crate) fn access_key_id_in(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric();
    (0..bytes.len()).find_map(|start| {
        let prefix = text.get(start..start + 4)?;
        if prefix != "AKIA" && prefix != "ASIA" {
            return None;
        }
        if start > 0 && word(bytes[start - 1]) {
            return None;
        }
        let rest = bytes.get(start + 4..start + 20)?;
        if !rest.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return None;
        }
        if bytes.get(start + 20).is_some_and(|&b| word(b)) {
            return None;
        }
        Some(prefix)
    })
}

/// Reports every credential key and every access-key-shaped string in one file's tree.
pub(crate) fn check(src: &Source, root: &DeTable<'_>, d: &mut Diagnostics) {
    check_table(src, root, &mut Vec::new(), false, d);
}

/// How messages name a place: `[aws]`, `[[aws.account]]`, or the top level.
fn section_name(path: &[String], in_array: bool) -> String {
    match (path.is_empty(), in_array) {
        (true, _) => "the top level".to_string(),
        (false, true) => format!("[[{}]]", path.join(".")),
        (false, false) => format!("[{}]", path.join(".")),
    }
}

fn check_table(
    src: &Source,
    table: &DeTable<'_>,
    path: &mut Vec<String>,
    in_array: bool,
    d: &mut Diagnostics,
) {
    for (key, value) in table.iter() {
        let name = key.get_ref().as_ref();
        if is_credential_key(name) {
            d.error(
                &src.origin(&key.span()),
                format!(
                    "`{name}` in {} is an AWS credential; patchd does not read credentials from its configuration",
                    section_name(path, in_array)
                ),
                Some(CHAIN_HINT.to_string()),
            );
            // The value is the secret itself: no second report for it, and never echoed.
            continue;
        }
        if let Some(prefix) = access_key_id_in(name) {
            d.error(
                &src.origin(&key.span()),
                format!(
                    "a key in {} looks like an AWS access key id ({prefix}…); patchd does not read credentials from its configuration",
                    section_name(path, in_array)
                ),
                Some(CHAIN_HINT.to_string()),
            );
        }
        path.push(name.to_string());
        check_value(src, value, path, in_array, d);
        path.pop();
    }
}

/// `path` ends with the value's key; `parent_in_array` tells how to name the table holding it.
fn check_value(
    src: &Source,
    value: &Value<'_>,
    path: &mut Vec<String>,
    parent_in_array: bool,
    d: &mut Diagnostics,
) {
    match value.get_ref() {
        DeValue::String(s) => {
            if let Some(prefix) = access_key_id_in(s) {
                let key = path.last().cloned().unwrap_or_default();
                let parent = section_name(&path[..path.len().saturating_sub(1)], parent_in_array);
                d.error(
                    &src.origin(&value.span()),
                    format!(
                        "the value of `{key}` in {parent} looks like an AWS access key id ({prefix}…); patchd does not read credentials from its configuration"
                    ),
                    Some(CHAIN_HINT.to_string()),
                );
            }
        }
        DeValue::Table(t) => check_table(src, t, path, false, d),
        DeValue::Array(items) => {
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::Table(t) => check_table(src, t, path, true, d),
                    _ => check_value(src, item, path, parent_in_array, d),
                }
            }
        }
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_keys() {
        for key in [
            "aws_access_key_id",
            "aws_secret_access_key",
            "access_key_id",
            "secret_access_key",
            "aws_session_token",
            "session_token",
            "aws_security_token",
            "AWS_SECRET_ACCESS_KEY",
            "secret-access-key",
            "secret_key",
        ] {
            assert!(is_credential_key(key), "{key}");
        }
        for key in ["region", "profile", "role_arn", "external_id", "key", "access", "token_file"] {
            assert!(!is_credential_key(key), "{key}");
        }
    }

    #[test]
    fn access_key_ids() {
        assert_eq!(access_key_id_in("AKIAIOSFODNN7EXAMPLE"), Some("AKIA"));
        assert_eq!(access_key_id_in("ASIAY34FZKBOKMUTVV7A"), Some("ASIA"));
        assert_eq!(access_key_id_in("key=AKIAIOSFODNN7EXAMPLE;"), Some("AKIA"));
        assert_eq!(access_key_id_in("  AKIAIOSFODNN7EXAMPLE"), Some("AKIA"));
        // Too short, too long, lower case, inside a word, other id prefixes (roles, users).
        assert_eq!(access_key_id_in("AKIAIOSFODNN7EXAMPL"), None);
        assert_eq!(access_key_id_in("AKIAIOSFODNN7EXAMPLEX"), None);
        assert_eq!(access_key_id_in("AKIAiosfodnn7example"), None);
        assert_eq!(access_key_id_in("XAKIAIOSFODNN7EXAMPLE"), None);
        assert_eq!(access_key_id_in("AROAIOSFODNN7EXAMPLE"), None);
        assert_eq!(access_key_id_in("AKIA"), None);
        assert_eq!(access_key_id_in("ÄKIAIOSFODNN7EXAMPLE AKIA"), None);
        assert_eq!(access_key_id_in(""), None);
    }
}
