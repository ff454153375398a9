//! AWS credentials never belong in a configuration file: files are reviewed, committed and
//! copied around, and a key in one is a leaked key. patchd takes credentials from the AWS
//! SDK's standard chain only, so any credential-looking key or value, in any section, is an
//! error that says where the credentials should come from instead.

use toml::de::{DeTable, DeValue};

use crate::diagnostic::Diagnostics;
use crate::reader::{Source, Value};
use crate::secrets::{access_key_id_in, is_credential_key};

/// Where credentials come from, and what to do with the one found.
const CHAIN_HINT: &str =
    "remove it (and rotate the key if the file was ever shared or committed); patchd takes \
credentials only from the AWS SDK's standard chain: the environment (AWS_ACCESS_KEY_ID, \
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), a profile in ~/.aws/config or ~/.aws/credentials \
(`profile = \"...\"` in [aws]; SSO and credential_process profiles included), the container \
or IRSA web-identity role, or the EC2 instance profile; use `role_arn` in [[aws.account]] to \
reach other accounts";

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
