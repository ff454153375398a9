//! Errors as AWS services send them: an error code, a message and an HTTP status.

/// An error answer of either service. SSM renders it as `{"__type", "message"}`, EC2 as
/// `<Response><Errors><Error>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// A client error (HTTP 400).
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError { status: 400, code: code.to_string(), message: message.into() }
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new("ValidationException", message)
    }

    /// AWS's wording for a value that breaks a model constraint.
    pub fn constraint(value: impl std::fmt::Display, member: &str, constraint: &str) -> ApiError {
        ApiError::validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
        ))
    }

    pub fn with_status(mut self, status: u16) -> ApiError {
        self.status = status;
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}
