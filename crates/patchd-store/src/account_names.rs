//! Account names: which 12-digit account id each configured account name stood for when
//! patchd last connected to it. Reports run offline, from the database alone; they need this
//! to turn `--account home` into the id the records carry.

use chrono::{DateTime, Utc};

use crate::db::{Query, TxKind};
use crate::types::micros;
use crate::{Store, StoreError};

/// A name's account id, as last learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountName {
    pub name: String,
    pub account_id: String,
    pub learned_at: DateTime<Utc>,
}

const REMEMBER: &str = "INSERT INTO account_names (name, account_id, learned_at) VALUES ($1, $2, $3) \
    ON CONFLICT (name) DO UPDATE SET account_id = excluded.account_id, learned_at = excluded.learned_at";

impl Store {
    /// Records that each `(name, account_id)` holds as of `at`, in one transaction. A name
    /// that pointed at another account before now points at this one.
    pub async fn remember_account_names(
        &self,
        names: &[(&str, &str)],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some((name, id)) = names
            .iter()
            .find(|(name, id)| name.is_empty() || id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(StoreError::InvalidInput(format!(
                "an account name needs a name and a 12-digit account id (got `{name}` = `{id}`)"
            )));
        }
        if names.is_empty() {
            return Ok(());
        }
        let at = micros(at);
        let mut tx = self.db.begin(TxKind::Exclusive).await?;
        for (name, id) in names {
            tx.execute(Query::new(REMEMBER).bind(*name).bind(*id).bind(at)).await?;
        }
        tx.commit().await
    }

    /// The account id `name` stood for when patchd last connected to it, if it ever did.
    pub async fn account_named(&self, name: &str) -> Result<Option<AccountName>, StoreError> {
        let query =
            Query::new("SELECT name, account_id, learned_at FROM account_names WHERE name = $1").bind(name);
        let row = self.db.fetch_optional(query).await?;
        row.map(|r| {
            Ok(AccountName {
                name: r.text("name")?,
                account_id: r.text("account_id")?,
                learned_at: r.time("learned_at")?,
            })
        })
        .transpose()
    }
}
