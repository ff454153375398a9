//! STS (AWS Query protocol, version 2011-06-15) on the simulator's endpoint: `AssumeRole` and
//! `GetCallerIdentity`, enough for an SDK's assume-role credentials provider to reach the
//! other accounts of a scenario.
//!
//! There is no IAM: any role name in an account the scenario defines can be assumed, unless
//! the account requires an ExternalId. Issued keys map requests to the role's account (see
//! the server's partition routing); they do not expire on the simulator's side, and session
//! tokens are not checked.
//!
//! Inferred rather than documented: the text of the "not a role ARN" error (STS answers
//! `Request ARN is invalid` for malformed ARNs elsewhere), the order of the checks, and that a
//! role's MaxSessionDuration is the model's maximum (43200 s) rather than IAM's default 3600.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::clock::{to_datetime, Millis};
use crate::error::ApiError;
use crate::scenario::Scenario;
use crate::xml::escape;

/// The STS actions the simulator answers.
pub const ACTIONS: &[&str] = &["AssumeRole", "GetCallerIdentity"];

/// Every action of the STS model, so that a request for one the simulator lacks still reaches
/// STS (and gets STS's error) instead of EC2.
pub const MODEL_ACTIONS: &[&str] = &[
    "AssumeRole",
    "AssumeRoleWithSAML",
    "AssumeRoleWithWebIdentity",
    "AssumeRoot",
    "DecodeAuthorizationMessage",
    "GetAccessKeyInfo",
    "GetCallerIdentity",
    "GetDelegatedAccessToken",
    "GetFederationToken",
    "GetSessionToken",
    "GetWebIdentityToken",
];

pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// Every key AssumeRole issues starts so; static keys practically never do, which lets the
/// router skip the session table for them.
pub const ISSUED_KEY_PREFIX: &str = "ASIA";

const MIN_DURATION_SECONDS: i64 = 900;
const MAX_DURATION_SECONDS: i64 = 43_200;
const DEFAULT_DURATION_SECONDS: i64 = 3_600;
/// Apart from the world's streams, so issuing keys never shifts a fleet's random draws.
const STREAM_STS: u64 = 11;

/// What AssumeRole issued: whose keys these are.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) account_id: String,
    arn: String,
    user_id: String,
}

/// The issued sessions and which accounts may be assumed into.
#[derive(Debug)]
pub(crate) struct Sts {
    primary_account: String,
    /// Every account with a partition, and the ExternalId it requires.
    accounts: HashMap<String, Option<String>>,
    /// Access key id → session.
    sessions: HashMap<String, Session>,
    rng: ChaCha8Rng,
}

impl Sts {
    pub(crate) fn new(scenario: &Scenario) -> Sts {
        let mut accounts: HashMap<String, Option<String>> = HashMap::new();
        accounts.insert(scenario.account_id.clone(), scenario.external_id.clone());
        for partition in &scenario.partitions {
            let required = accounts.entry(partition.account_id.clone()).or_default();
            if required.is_none() {
                required.clone_from(&partition.external_id);
            }
        }
        Sts {
            primary_account: scenario.account_id.clone(),
            accounts,
            sessions: HashMap::new(),
            rng: ChaCha8Rng::seed_from_u64(crate::random::derive_seed(scenario.seed, STREAM_STS, 0)),
        }
    }

    /// The account of a key AssumeRole issued; `None` for any other key.
    pub(crate) fn session_account(&self, access_key: &str) -> Option<&str> {
        self.sessions.get(access_key).map(|s| s.account_id.as_str())
    }

    /// (ARN, user id, account) of whoever signed with `access_key`.
    fn caller(&self, access_key: Option<&str>) -> (String, String, String) {
        match access_key.and_then(|key| self.sessions.get(key)) {
            Some(session) => (session.arn.clone(), session.user_id.clone(), session.account_id.clone()),
            None => (
                format!("arn:aws:iam::{}:user/sim", self.primary_account),
                format!("AIDA{}", unique_suffix(&format!("user/{}", self.primary_account))),
                self.primary_account.clone(),
            ),
        }
    }

    /// Answers one STS action with its XML body, or the error STS would send.
    pub(crate) fn answer(
        &mut self,
        action: &str,
        params: &[(String, String)],
        access_key: Option<&str>,
        now: Millis,
        request_id: &str,
    ) -> Result<String, ApiError> {
        match action {
            "GetCallerIdentity" => {
                let (arn, user_id, account) = self.caller(access_key);
                Ok(format!(
                    "<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\"><GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account></GetCallerIdentityResult>{}</GetCallerIdentityResponse>",
                    escape(&arn),
                    escape(&user_id),
                    escape(&account),
                    metadata(request_id)
                ))
            }
            "AssumeRole" => self.assume_role(params, access_key, now, request_id),
            other if MODEL_ACTIONS.contains(&other) => Err(ApiError::new(
                "InvalidAction",
                format!("fleet-sim does not implement {other}; it answers {}", ACTIONS.join(" and ")),
            )),
            other => Err(ApiError::new(
                "InvalidAction",
                format!("Could not find operation {other} for version 2011-06-15"),
            )),
        }
    }

    fn assume_role(
        &mut self,
        params: &[(String, String)],
        access_key: Option<&str>,
        now: Millis,
        request_id: &str,
    ) -> Result<String, ApiError> {
        let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let role_arn = param("RoleArn");
        let session_name = param("RoleSessionName");
        let external_id = param("ExternalId");
        let mut problems = Vec::new();
        match role_arn {
            None => problems.push(not_null("roleArn")),
            Some(arn) => check_length(&mut problems, arn, "roleArn", 20, 2048),
        }
        match session_name {
            None => problems.push(not_null("roleSessionName")),
            Some(name) => {
                check_length(&mut problems, name, "roleSessionName", 2, 64);
                if !name.chars().all(is_session_name_char) {
                    problems.push(violation(
                        name,
                        "roleSessionName",
                        r"Member must satisfy regular expression pattern: [\w+=,.@-]*",
                    ));
                }
            }
        }
        if let Some(id) = external_id {
            check_length(&mut problems, id, "externalId", 2, 1224);
            if !id.chars().all(|c| is_session_name_char(c) || c == ':' || c == '/') {
                problems.push(violation(
                    id,
                    "externalId",
                    r"Member must satisfy regular expression pattern: [\w+=,.@:\/-]*",
                ));
            }
        }
        let duration = match param("DurationSeconds") {
            None => DEFAULT_DURATION_SECONDS,
            Some(text) => match text.parse::<i64>() {
                Ok(seconds) if seconds < MIN_DURATION_SECONDS => {
                    problems.push(violation(
                        seconds,
                        "durationSeconds",
                        &format!("Member must have value greater than or equal to {MIN_DURATION_SECONDS}"),
                    ));
                    DEFAULT_DURATION_SECONDS
                }
                Ok(seconds) if seconds > MAX_DURATION_SECONDS => {
                    problems.push(violation(
                        seconds,
                        "durationSeconds",
                        &format!("Member must have value less than or equal to {MAX_DURATION_SECONDS}"),
                    ));
                    DEFAULT_DURATION_SECONDS
                }
                Ok(seconds) => seconds,
                Err(_) => {
                    problems.push(violation(text, "durationSeconds", "Member must be an integer"));
                    DEFAULT_DURATION_SECONDS
                }
            },
        };
        if !problems.is_empty() {
            let plural = if problems.len() == 1 { "" } else { "s" };
            return Err(ApiError::new(
                "ValidationError",
                format!("{} validation error{plural} detected: {}", problems.len(), problems.join("; ")),
            ));
        }
        let (Some(role_arn), Some(session_name)) = (role_arn, session_name) else {
            unreachable!("missing members were reported above");
        };
        let Some((account, role_name)) = parse_role_arn(role_arn) else {
            return Err(ApiError::new("ValidationError", "Request ARN is invalid"));
        };
        let denied = match self.accounts.get(account) {
            None => true,
            Some(Some(required)) => external_id != Some(required.as_str()),
            Some(None) => false,
        };
        if denied {
            let (caller, _, _) = self.caller(access_key);
            return Err(ApiError::new(
                "AccessDenied",
                format!(
                    "User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
                ),
            )
            .with_status(403));
        }

        let access_key_id = format!("{ISSUED_KEY_PREFIX}{}", self.random_text(16, BASE32));
        let secret = self.random_text(40, BASE64);
        let token = self.random_text(320, BASE64);
        // IAM gives a role one unique id for life, so derive it from the ARN rather than draw it.
        let role_id = format!("AROA{}", unique_suffix(role_arn));
        let user_id = format!("{role_id}:{session_name}");
        let arn = format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}");
        let expiration = to_datetime(now.saturating_add(duration * 1000))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let body = format!(
            "<AssumeRoleResponse xmlns=\"{NAMESPACE}\"><AssumeRoleResult><Credentials><AccessKeyId>{access_key_id}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{expiration}</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser></AssumeRoleResult>{}</AssumeRoleResponse>",
            escape(&secret),
            escape(&token),
            escape(&user_id),
            escape(&arn),
            metadata(request_id)
        );
        self.sessions.insert(access_key_id, Session { account_id: account.to_string(), arn, user_id });
        Ok(body)
    }

    fn random_text(&mut self, length: usize, alphabet: &[u8]) -> String {
        (0..length).map(|_| char::from(alphabet[self.rng.random_range(0..alphabet.len())])).collect()
    }
}

const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn metadata(request_id: &str) -> String {
    format!("<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>", escape(request_id))
}

/// Seventeen upper-case characters, stable for `seed`: the tail of an IAM unique id.
fn unique_suffix(seed: &str) -> String {
    crate::baseline::stable_hex17(seed).to_ascii_uppercase()
}

/// `\w` in the model's Java patterns, plus the extra characters session names allow.
fn is_session_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

fn violation(value: impl std::fmt::Display, member: &str, constraint: &str) -> String {
    format!("Value '{value}' at '{member}' failed to satisfy constraint: {constraint}")
}

fn not_null(member: &str) -> String {
    format!("Value null at '{member}' failed to satisfy constraint: Member must not be null")
}

fn check_length(problems: &mut Vec<String>, value: &str, member: &str, min: usize, max: usize) {
    let length = value.chars().count();
    if length < min {
        problems.push(violation(
            value,
            member,
            &format!("Member must have length greater than or equal to {min}"),
        ));
    } else if length > max {
        problems.push(violation(
            value,
            member,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
}

/// `arn:aws:iam::<12 digits>:role/[path/]<name>` → (account, role name).
fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, resource) = rest.split_once(':')?;
    let path_and_name = resource.strip_prefix("role/")?;
    let name = path_and_name.rsplit('/').next()?;
    let valid_account = account.len() == 12 && account.chars().all(|c| c.is_ascii_digit());
    let valid_name = (1..=64).contains(&name.len()) && name.chars().all(is_session_name_char);
    (valid_account && valid_name).then_some((account, name))
}

/// STS's error envelope: `Sender` faults are the caller's, `Receiver` faults STS's own.
pub fn error_xml(error: &ApiError, request_id: &str) -> String {
    let fault = if error.status >= 500 { "Receiver" } else { "Sender" };
    format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        escape(&error.code),
        escape(&error.message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Partition;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sts() -> Sts {
        Sts::new(
            &Scenario::minimal()
                .with_partition(Partition::new("210987654321", "eu-west-1").with_external_id("secret-id")),
        )
    }

    #[test]
    fn role_arns() {
        assert_eq!(parse_role_arn("arn:aws:iam::210987654321:role/patchd"), Some(("210987654321", "patchd")));
        assert_eq!(
            parse_role_arn("arn:aws:iam::210987654321:role/ops/patchd"),
            Some(("210987654321", "patchd"))
        );
        for bad in [
            "arn:aws:iam::21098765432:role/patchd",
            "arn:aws:iam::210987654321:user/patchd",
            "arn:aws:s3:::bucket/patchd-role-x",
            "arn:aws:iam::210987654321:role/",
        ] {
            assert_eq!(parse_role_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn assume_role_checks_and_issues() {
        let mut sts = sts();
        let role = "arn:aws:iam::210987654321:role/patchd";
        let ok = sts
            .answer(
                "AssumeRole",
                &params(&[("RoleArn", role), ("RoleSessionName", "s1"), ("ExternalId", "secret-id")]),
                Some("AKID"),
                0,
                "r",
            )
            .expect("assumed");
        assert!(ok.contains("<Expiration>1970-01-01T01:00:00Z</Expiration>"), "{ok}");
        assert!(ok.contains("<Arn>arn:aws:sts::210987654321:assumed-role/patchd/s1</Arn>"), "{ok}");
        let key = ok.split("<AccessKeyId>").nth(1).and_then(|s| s.split('<').next()).expect("a key");
        assert!(key.starts_with("ASIA") && key.len() == 20, "{key}");
        assert_eq!(sts.session_account(key), Some("210987654321"));

        let wrong = sts
            .answer("AssumeRole", &params(&[("RoleArn", role), ("RoleSessionName", "s1")]), None, 0, "r")
            .expect_err("no external id");
        assert_eq!((wrong.code.as_str(), wrong.status), ("AccessDenied", 403));
        assert_eq!(
            wrong.message,
            format!("User: arn:aws:iam::123456789012:user/sim is not authorized to perform: sts:AssumeRole on resource: {role}")
        );
        let invalid = sts
            .answer(
                "AssumeRole",
                &params(&[("RoleArn", role), ("RoleSessionName", "a b"), ("DurationSeconds", "60")]),
                None,
                0,
                "r",
            )
            .expect_err("invalid");
        assert_eq!(invalid.code, "ValidationError");
        assert!(invalid.message.starts_with("2 validation errors detected: "), "{}", invalid.message);
        let unknown = sts.answer("Frobnicate", &[], None, 0, "r").expect_err("unknown");
        assert_eq!(unknown.code, "InvalidAction");
    }

    #[test]
    fn errors_use_the_query_envelope() {
        let xml = error_xml(&ApiError::new("ValidationError", "a < b"), "id-1");
        assert!(xml.starts_with(&format!("<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>Sender</Type>")));
        assert!(xml.contains("<Message>a &lt; b</Message>"), "{xml}");
        assert!(error_xml(&ApiError::new("InternalFailure", "x").with_status(500), "i").contains("Receiver"));
    }
}
