//! What looks like an AWS credential: key names and access key ids. The table reader uses it
//! to leave credential keys to [`crate::credentials`], which reports them with where
//! credentials belong instead.

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
