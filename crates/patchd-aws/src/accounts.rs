//! Reaching other accounts and regions: clients in another region with the same credentials,
//! clients whose credentials come from assuming a role (STS AssumeRole, through aws-config's
//! provider, which refreshes them before they expire), and the 12-digit id of the account a
//! set of credentials belongs to (STS GetCallerIdentity).

use aws_config::sts::AssumeRoleProvider;
use aws_config::Region;
use aws_sdk_ssm::config::{IdentityCache, SharedCredentialsProvider};
use tracing::instrument;

use crate::{AwsClients, AwsError};

/// A role to assume in another account.
#[derive(Debug, Clone, Copy)]
pub struct RoleToAssume<'a> {
    pub role_arn: &'a str,
    /// The shared secret the role's trust policy may require (`sts:ExternalId`).
    pub external_id: Option<&'a str>,
    /// Shows in the other account's CloudTrail as the assumed-role session: see [`session_name`].
    pub session_name: &'a str,
}

/// STS's limit on a role session name.
const MAX_SESSION_NAME: usize = 64;

/// `patchd-<host>`: the session name patchd assumes roles under, so the other account's
/// CloudTrail names the host that acted. Characters STS refuses become `-`, and the name is
/// cut to STS's 64 characters.
pub fn session_name(host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) { c } else { '-' })
        .collect();
    let host = if host.is_empty() { "unknown-host".to_string() } else { host };
    let mut name = format!("patchd-{host}");
    name.truncate(MAX_SESSION_NAME);
    name
}

impl AwsClients {
    /// The same credentials, endpoint and retry settings, in another region.
    pub fn in_region(&self, region: &str) -> AwsClients {
        let shared = self.shared.clone().into_builder().region(Region::new(region.to_string())).build();
        self.sibling(shared)
    }

    /// Clients in `region` whose credentials are the role's, assumed with these clients'
    /// credentials. Nothing is called here: the first call assumes the role, and the
    /// credentials are cached and renewed before they expire, for all three clients at once.
    /// A refused AssumeRole surfaces on that first call as an access-denied transport error
    /// naming the role.
    pub async fn assuming(&self, role: &RoleToAssume<'_>, region: &str) -> AwsClients {
        let region = Region::new(region.to_string());
        let mut provider = AssumeRoleProvider::builder(role.role_arn)
            .session_name(role.session_name)
            .region(region.clone())
            .configure(&self.shared);
        if let Some(external_id) = role.external_id {
            provider = provider.external_id(external_id);
        }
        let provider = provider.build().await;
        let shared = self
            .shared
            .clone()
            .into_builder()
            .region(region)
            .credentials_provider(SharedCredentialsProvider::new(provider))
            // One cache for the SSM, EC2, EventBridge and STS clients built from this
            // configuration: one AssumeRole per session, not one per client.
            .identity_cache(IdentityCache::lazy().build())
            .build();
        self.sibling(shared)
    }

    /// The 12-digit id of the account these clients' credentials belong to. Needs no IAM
    /// permission (GetCallerIdentity cannot be denied), so it also proves the credentials work.
    #[instrument(skip(self), err(Display))]
    pub async fn account_id(&self) -> Result<String, AwsError> {
        const OPERATION: &str = "GetCallerIdentity";
        let identity =
            self.sts.get_caller_identity().send().await.map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        identity.account.filter(|a| !a.is_empty()).ok_or_else(|| AwsError::Service {
            operation: OPERATION,
            code: "MissingAccount".into(),
            message: "the answer carries no account id".into(),
            request_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_what_sts_accepts() {
        assert_eq!(session_name("admin-1.example.com"), "patchd-admin-1.example.com");
        assert_eq!(session_name("höst name"), "patchd-h-st-name");
        assert_eq!(session_name(""), "patchd-unknown-host");
        let long = session_name(&"a".repeat(100));
        assert_eq!(long.len(), MAX_SESSION_NAME);
        assert!(long.starts_with("patchd-aaa"));
    }
}
