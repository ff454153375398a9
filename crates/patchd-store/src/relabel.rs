//! Giving records made before patchd knew its account id their real scope.
//!
//! Before multi-account support, patchd labelled the account of the default credential chain
//! `default` (and migration 0005 labelled older window runs' region `default` where no
//! instance told it). The first time a newer patchd starts, it learns the home account's
//! 12-digit id and region, and relabels those records, so that history continues under the
//! real account instead of splitting into a `default` fleet that never reports again.

use crate::db::{Query, TxKind};
use crate::{Store, StoreError};

/// The label pre-multi-account patchd gave the home account.
pub const LEGACY_ACCOUNT: &str = "default";

/// What [`Store::relabel_legacy_scope`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relabelled {
    pub instances: u64,
    pub window_runs: u64,
    pub announcements: u64,
}

impl Relabelled {
    pub fn is_empty(&self) -> bool {
        *self == Relabelled::default()
    }
}

// A record whose real-scope twin already exists (recorded after the upgrade) keeps its legacy
// label rather than collide with it: both stay readable, and nothing is merged by guess.
const INSTANCES: &str = "UPDATE instances SET account = $1 WHERE account = 'default' \
    AND NOT EXISTS (SELECT 1 FROM instances j WHERE j.account = $1 \
      AND j.region = instances.region AND j.instance_id = instances.instance_id)";
const RUN_REGIONS: &str =
    "UPDATE window_runs SET region = $1 WHERE account = 'default' AND region = 'default' \
    AND NOT EXISTS (SELECT 1 FROM window_runs j WHERE j.account = 'default' AND j.region = $1 \
      AND j.window_name = window_runs.window_name AND j.scheduled_start = window_runs.scheduled_start)";
const RUN_ACCOUNTS: &str = "UPDATE window_runs SET account = $1 WHERE account = 'default' \
    AND NOT EXISTS (SELECT 1 FROM window_runs j WHERE j.account = $1 AND j.region = window_runs.region \
      AND j.window_name = window_runs.window_name AND j.scheduled_start = window_runs.scheduled_start)";
// Subjects are `<account>/<region>/...`: `default/` is 8 characters.
const ANNOUNCEMENTS: &str = "UPDATE event_announcements SET subject = $1 || substr(subject, 8) \
    WHERE subject LIKE 'default/%' AND NOT EXISTS (SELECT 1 FROM event_announcements j \
      WHERE j.kind = event_announcements.kind AND j.subject = $1 || substr(event_announcements.subject, 8))";

impl Store {
    /// Relabels records of the legacy `default` account as `account_id`, and window runs of
    /// unknown region as `home_region`, in one transaction. Idempotent: a second call changes
    /// nothing.
    pub async fn relabel_legacy_scope(
        &self,
        account_id: &str,
        home_region: &str,
    ) -> Result<Relabelled, StoreError> {
        if account_id.is_empty() || account_id == LEGACY_ACCOUNT || home_region.is_empty() {
            return Err(StoreError::InvalidInput(format!(
                "relabelling needs a real account id and region (got `{account_id}`, `{home_region}`)"
            )));
        }
        let mut tx = self.db.begin(TxKind::Exclusive).await?;
        let instances = tx.execute(Query::new(INSTANCES).bind(account_id)).await?;
        tx.execute(Query::new(RUN_REGIONS).bind(home_region)).await?;
        let window_runs = tx.execute(Query::new(RUN_ACCOUNTS).bind(account_id)).await?;
        let announcements = tx.execute(Query::new(ANNOUNCEMENTS).bind(account_id)).await?;
        tx.commit().await?;
        Ok(Relabelled { instances, window_runs, announcements })
    }
}
