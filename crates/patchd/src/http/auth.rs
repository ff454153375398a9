//! The bearer token of the HTTP endpoint: read from `[daemon] api_token_file` at start-up,
//! compared in constant time, never logged.

use std::fmt;
use std::path::Path;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;

/// The configured token. Its Debug form hides it.
#[derive(Clone)]
pub(crate) struct ApiToken(Vec<u8>);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

/// The shortest token accepted: anything shorter can be guessed.
const MIN_TOKEN_LEN: usize = 16;

impl ApiToken {
    /// Reads the token file: its first line, surrounding whitespace removed.
    pub fn read(path: &Path) -> Result<ApiToken, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!("cannot read the API token file {} ([daemon] api_token_file): {e}", path.display())
        })?;
        ApiToken::parse(&text).map_err(|why| format!("{} ([daemon] api_token_file): {why}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ApiToken, String> {
        let token = text.lines().next().unwrap_or("").trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the API token must be at least {MIN_TOKEN_LEN} characters; generate one with \
                 `openssl rand -hex 32`"
            ));
        }
        if token.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err("the API token must be printable ASCII without spaces".into());
        }
        Ok(ApiToken(token.as_bytes().to_vec()))
    }

    /// Whether an `Authorization` header value carries this token (`Bearer <token>`, the
    /// scheme case-insensitive). The comparison takes the same time wherever the first
    /// difference is.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else { return false };
        let Some((scheme, presented)) = value.trim().split_once(' ') else { return false };
        scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(presented.trim().as_bytes(), &self.0)
    }
}

/// Equality whose time depends on the lengths only, not on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    // Walk the expected token's length whatever the presented one's, so timing does not tell
    // how much of a prefix matched.
    for (i, &expected) in b.iter().enumerate() {
        let got = a.get(i).copied().unwrap_or(0);
        diff |= got ^ expected;
    }
    diff == 0
}

/// 401 with the challenge RFC 6750 asks for.
pub(crate) fn unauthorized() -> Response {
    let body = serde_json::json!({
        "error": "unauthorized",
        "message": "this endpoint requires `Authorization: Bearer <token>` (the token in [daemon] api_token_file)",
    });
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::WWW_AUTHENTICATE, "Bearer realm=\"patchd\"")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string() + "\n"))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = ApiToken::parse(&format!("{TOKEN}\n")).unwrap();
        assert!(token.accepts(Some(&format!("Bearer {TOKEN}"))));
        assert!(token.accepts(Some(&format!("bearer {TOKEN}"))));
        assert!(!token.accepts(None));
        assert!(!token.accepts(Some(TOKEN)));
        assert!(!token.accepts(Some(&format!("Basic {TOKEN}"))));
        assert!(!token.accepts(Some(&format!("Bearer {TOKEN}0"))));
        assert!(!token.accepts(Some(&format!("Bearer {}", &TOKEN[1..]))));
        assert!(!token.accepts(Some("Bearer ")));
        assert!(!token.accepts(Some("Bearer 1123456789abcdef0123456789abcdef")));
    }

    #[test]
    fn weak_or_odd_tokens_are_refused() {
        assert!(ApiToken::parse("short").is_err());
        assert!(ApiToken::parse("").is_err());
        assert!(ApiToken::parse("0123456789abcdef 0123").is_err());
        assert!(ApiToken::parse(&format!("  {TOKEN}  \nsecond line")).is_ok());
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let token = ApiToken::parse(TOKEN).unwrap();
        assert!(!format!("{token:?}").contains(TOKEN));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(constant_time_eq(b"", b""));
    }
}
