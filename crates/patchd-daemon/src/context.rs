//! What every part of the engine works with.

use patchd_aws::AwsClients;
use patchd_store::{InstanceKey, Store};

use crate::events::Publisher;

/// The account and region the clients talk to: every stored record carries them, since
/// instance ids are unique only within one account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// An account label. Until multi-account support lands (one `[[aws.account]]` per
    /// role), the account of the default credential chain is labelled `default`.
    pub account: String,
    pub region: String,
}

impl Scope {
    pub fn key<'a>(&'a self, instance_id: &'a str) -> InstanceKey<'a> {
        InstanceKey { account: &self.account, region: &self.region, instance_id }
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
