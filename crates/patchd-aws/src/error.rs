//! The one error type of the crate, sorted by what a caller does next: fix the request,
//! wait and try later, alert on permissions, or treat the resource as gone.

use std::error::Error as StdError;
use std::fmt;

use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
// aws-sdk-ssm and aws-sdk-ec2 re-export the same aws-types trait, so one import serves both.
use aws_sdk_ssm::operation::RequestId;

/// What went wrong with one AWS call. Every variant names the operation; those that got an
/// answer from AWS carry its request id, which AWS support and CloudTrail can look up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// Refused here, before any call, because AWS would refuse it too.
    #[error("{operation}: {problem}")]
    Invalid { operation: &'static str, problem: InvalidRequest },

    /// Still throttled after every attempt the retry configuration allows.
    #[error(
        "{operation} was throttled by aws ({code}) on every attempt{}; lower the call rate or raise [aws] max_attempts",
        RequestIdSuffix(request_id)
    )]
    Throttled { operation: &'static str, code: String, request_id: Option<String> },

    /// The command, instance or other resource named in the request does not exist (or, for
    /// an instance, is not a managed node that can take the command).
    #[error("{operation}: {code}: {message}{}", RequestIdSuffix(request_id))]
    NotFound { operation: &'static str, code: String, message: String, request_id: Option<String> },

    /// AWS rejected the request as malformed or inconsistent; retrying will not help.
    #[error("{operation} rejected by aws: {code}: {message}{}", RequestIdSuffix(request_id))]
    Rejected { operation: &'static str, code: String, message: String, request_id: Option<String> },

    /// The credentials are missing, invalid, expired, or lack permission for the operation.
    #[error(
        "{operation} denied by aws: {code}: {message}{}; check the credentials and the IAM policy",
        RequestIdSuffix(request_id)
    )]
    AccessDenied { operation: &'static str, code: String, message: String, request_id: Option<String> },

    /// No usable answer: the connection failed or timed out, the response could not be read,
    /// or the request could not be built or signed (no region, no credentials).
    #[error(
        "{operation} got no answer from aws ({kind}); check the region, endpoint, network and credentials"
    )]
    Transport {
        operation: &'static str,
        kind: TransportKind,
        request_id: Option<String>,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    /// Any other error AWS answered with, server errors that outlasted the retries included.
    #[error("{operation} failed: {code}: {message}{}", RequestIdSuffix(request_id))]
    Service { operation: &'static str, code: String, message: String, request_id: Option<String> },
}

impl AwsError {
    /// The AWS operation that failed, e.g. `SendCommand`.
    pub fn operation(&self) -> &'static str {
        match self {
            AwsError::Invalid { operation, .. }
            | AwsError::Throttled { operation, .. }
            | AwsError::NotFound { operation, .. }
            | AwsError::Rejected { operation, .. }
            | AwsError::AccessDenied { operation, .. }
            | AwsError::Transport { operation, .. }
            | AwsError::Service { operation, .. } => operation,
        }
    }

    /// AWS's id for the failed request, when AWS answered at all.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            AwsError::Invalid { .. } => None,
            AwsError::Throttled { request_id, .. }
            | AwsError::NotFound { request_id, .. }
            | AwsError::Rejected { request_id, .. }
            | AwsError::AccessDenied { request_id, .. }
            | AwsError::Transport { request_id, .. }
            | AwsError::Service { request_id, .. } => request_id.as_deref(),
        }
    }

    /// Whether the same call may succeed later unchanged (throttling, network trouble,
    /// server errors). The SDK has already retried; this is for the caller's next pass.
    pub fn is_transient(&self) -> bool {
        matches!(self, AwsError::Throttled { .. } | AwsError::Transport { .. } | AwsError::Service { .. })
    }

    pub(crate) fn invalid(operation: &'static str, problem: InvalidRequest) -> AwsError {
        AwsError::Invalid { operation, problem }
    }

    /// Sorts an SDK error. Called only once the SDK's retry layer has given up, so a
    /// throttling code here means the retries are exhausted.
    pub(crate) fn from_sdk<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> AwsError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let request_id = error.request_id().map(str::to_string);
        let kind = match &error {
            SdkError::ServiceError(service) => {
                let request_id = request_id.or_else(|| service.err().meta().request_id().map(str::to_string));
                let code = service.err().code().unwrap_or("Unknown").to_string();
                let message = service.err().message().unwrap_or_default().to_string();
                return from_code(operation, code, message, request_id);
            }
            SdkError::DispatchFailure(_) if credentials_failure(&error).is_some() => {
                // Credentials that could not be loaded (a role another account refused to let
                // patchd assume, an expired SSO session) are a permission problem, not a
                // network one: say so, with the provider's own reason.
                let message = credentials_failure(&error).unwrap_or_default();
                return AwsError::AccessDenied {
                    operation,
                    code: "CredentialsNotLoaded".into(),
                    message,
                    request_id,
                };
            }
            SdkError::ConstructionFailure(_) => TransportKind::Construction,
            SdkError::TimeoutError(_) => TransportKind::Timeout,
            SdkError::DispatchFailure(_) => TransportKind::Dispatch,
            SdkError::ResponseError(_) => TransportKind::Response,
            _ => TransportKind::Dispatch,
        };
        AwsError::Transport { operation, kind, request_id, source: Box::new(error) }
    }
}

/// The reason the credential provider gave, when loading credentials is what failed: the
/// error chain from the provider's message down.
fn credentials_failure(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    let start = chain.iter().position(|text| text.contains("loading credentials"))?;
    Some(chain[start..].join(": "))
}

fn from_code(operation: &'static str, code: String, message: String, request_id: Option<String>) -> AwsError {
    match classify(&code) {
        Class::Throttled => AwsError::Throttled { operation, code, request_id },
        Class::NotFound => AwsError::NotFound { operation, code, message, request_id },
        Class::Rejected => AwsError::Rejected { operation, code, message, request_id },
        Class::AccessDenied => AwsError::AccessDenied { operation, code, message, request_id },
        Class::Other => AwsError::Service { operation, code, message, request_id },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Throttled,
    NotFound,
    Rejected,
    AccessDenied,
    Other,
}

/// The codes AWS SDKs treat as throttling (the same list the SDK's retry classifier uses),
/// so what the SDK retried as throttling is what we report as throttling.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

const NOT_FOUND_CODES: &[&str] = &[
    "InvalidCommandId",
    "InvalidInstanceId",
    "InvalidResourceId",
    "InvalidDocument",
    "DoesNotExistException",
    "InvocationDoesNotExist",
    "ResourceNotFoundException",
];

const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "OptInRequired",
];

fn classify(code: &str) -> Class {
    if THROTTLING_CODES.contains(&code) {
        Class::Throttled
    } else if NOT_FOUND_CODES.contains(&code) || code.ends_with(".NotFound") {
        Class::NotFound
    } else if ACCESS_DENIED_CODES.contains(&code) {
        Class::AccessDenied
    } else if code.starts_with("Invalid")
        || code.contains("Validation")
        || code.starts_with("Duplicate")
        || code.starts_with("Missing")
        || code.starts_with("Unsupported")
    {
        // SSM names its request problems Invalid*, Duplicate*, Unsupported*; EC2 adds
        // InvalidParameterValue and friends, and Invalid<Thing>.Malformed for bad ids.
        Class::Rejected
    } else {
        Class::Other
    }
}

/// Why a call got no service answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// The request could not be built or signed (e.g. no region, no credentials).
    Construction,
    /// Connecting or sending failed.
    Dispatch,
    /// The call timed out.
    Timeout,
    /// An answer came but could not be read.
    Response,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Construction => "request could not be built",
            TransportKind::Dispatch => "request could not be sent",
            TransportKind::Timeout => "timed out",
            TransportKind::Response => "unreadable response",
        })
    }
}

/// A request refused before it reached AWS, with the limit it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRequest {
    #[error("no instance ids given; pass at least one")]
    NoInstances,
    #[error("{count} instance ids given, at most {max} per call; send them in batches of {max}")]
    TooManyInstances { count: usize, max: usize },
    #[error("instance id {id} is listed twice; list each instance once")]
    DuplicateInstance { id: String },
    #[error("the comment is {chars} characters, at most {max}; shorten the run id")]
    CommentTooLong { chars: usize, max: usize },
    #[error("timeout_seconds is {seconds}, SSM accepts {min} to {max}; pick a value in that range")]
    TimeoutOutOfRange { seconds: u32, min: u32, max: u32 },
    #[error(
        "{parameter} {value} is out of range; use a count (at least 1 for MaxConcurrency) or 1% to 100%"
    )]
    LimitOutOfRange { parameter: &'static str, value: String },
    #[error("the request is incomplete: {detail}; this is a bug in patchd, please report it")]
    Incomplete { detail: String },
}

struct RequestIdSuffix<'a>(&'a Option<String>);

impl fmt::Display for RequestIdSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, " (request id {id})"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sort_into_what_the_caller_does_next() {
        for (code, class) in [
            ("ThrottlingException", Class::Throttled),
            ("RequestLimitExceeded", Class::Throttled),
            ("InvalidCommandId", Class::NotFound),
            ("InvalidInstanceId", Class::NotFound),
            ("InvalidInstanceID.NotFound", Class::NotFound),
            ("DoesNotExistException", Class::NotFound),
            ("ValidationException", Class::Rejected),
            ("InvalidParameters", Class::Rejected),
            ("InvalidParameterValue", Class::Rejected),
            ("InvalidInstanceID.Malformed", Class::Rejected),
            ("DuplicateInstanceId", Class::Rejected),
            ("AccessDeniedException", Class::AccessDenied),
            ("UnauthorizedOperation", Class::AccessDenied),
            ("InternalServerError", Class::Other),
            ("InternalError", Class::Other),
        ] {
            assert_eq!(classify(code), class, "{code}");
        }
    }

    #[test]
    fn messages_name_the_operation_and_request_id() {
        let error = from_code(
            "SendCommand",
            "ThrottlingException".into(),
            "Rate exceeded".into(),
            Some("abc-123".into()),
        );
        assert!(matches!(error, AwsError::Throttled { .. }));
        assert!(error.is_transient());
        assert_eq!(error.request_id(), Some("abc-123"));
        let text = error.to_string();
        assert!(text.starts_with("SendCommand was throttled"), "{text}");
        assert!(text.contains("(request id abc-123)"), "{text}");
        let local = AwsError::invalid("SendCommand", InvalidRequest::TooManyInstances { count: 51, max: 50 });
        assert_eq!(local.request_id(), None);
        assert!(!local.is_transient());
        assert_eq!(
            local.to_string(),
            "SendCommand: 51 instance ids given, at most 50 per call; send them in batches of 50"
        );
    }
}
