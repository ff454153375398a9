//! What every part of the engine works with.

use chrono::{DateTime, Utc};
use patchd_aws::AwsClients;
use patchd_store::{AuditEntry, InstanceKey, Store, StoreError};

use crate::events::Publisher;

/// The account and region the clients talk to: every stored record carries them, since
/// instance ids are unique only within one account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The account's name in the configuration (`[aws] name`, `[[aws.account]] name`): what
    /// groups and windows are scoped by.
    pub name: String,
    /// The 12-digit account id, as STS reports it: what the store records.
    pub account: String,
    pub region: String,
}

impl Scope {
    pub fn key<'a>(&'a self, instance_id: &'a str) -> InstanceKey<'a> {
        InstanceKey { account: &self.account, region: &self.region, instance_id }
    }

    /// Whether a group or window scoped this way reaches this account and region.
    pub fn admitted_by(&self, scoping: &patchd_config::Scoping) -> bool {
        scoping.admits(&self.name, &self.region)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}) {}", self.name, self.account, self.region)
    }
}

/// Clients, store and identity. Cheap to clone (the clients and the store pool are shared).
#[derive(Debug, Clone)]
pub struct Context {
    pub aws: AwsClients,
    pub store: Store,
    pub scope: Scope,
    /// Who acts, for the audit log: `daemon`, or `cli:<user>` for manual runs.
    pub actor: String,
    /// Where events go (`[events]`); `Publisher::default()` publishes nothing.
    pub events: Publisher,
}

impl Context {
    /// Appends an audit entry by this context's actor about `target`. Commands are audited
    /// where they are sent, with their command and request ids; everything else comes here.
    pub async fn audit(
        &self,
        at: DateTime<Utc>,
        action: &str,
        target: &str,
        details: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let entry = AuditEntry {
            at,
            actor: &self.actor,
            action,
            target: Some(target),
            command_id: None,
            request_id: None,
            details: Some(details),
        };
        self.store.append_audit(&entry).await.map(|_| ())
    }
}
