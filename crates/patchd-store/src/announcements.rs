//! Event announcements: which event patchd published about which subject, and at what level,
//! so that an event about a lasting condition (an SLA breach, a coverage gap) goes out once,
//! not on every sync. The caller claims an announcement before publishing it: a claim that
//! succeeds is the one permission to publish, even with several writers.

use chrono::{DateTime, Utc};

use crate::db::{Query, TxKind};
use crate::types::micros;
use crate::{Store, StoreError};

/// An announcement to claim: `subject` of `kind` reached `level` (in state `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement<'a> {
    /// `sla`, `coverage-gap`, ...
    pub kind: &'a str,
    /// What it is about, e.g. `<account>/<region>/<instance>/<patch>`.
    pub subject: &'a str,
    /// Higher levels supersede lower ones (SLA: 1 due-soon, 2 breached). At least 1.
    pub level: u32,
    pub state: &'a str,
}

/// An announcement as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncementRecord {
    pub kind: String,
    pub subject: String,
    pub level: u32,
    pub state: String,
    pub announced_at: DateTime<Utc>,
}

/// Records the announcement unless its subject was announced at this level or higher.
const CLAIM: &str = "INSERT INTO event_announcements AS a (kind, subject, level, state, announced_at) \
    VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (kind, subject) DO UPDATE SET level = excluded.level, state = excluded.state, \
      announced_at = excluded.announced_at \
    WHERE a.level < excluded.level";

impl Store {
    /// Claims announcements in one transaction: each is recorded, and claimed (`true` at its
    /// index), unless its subject was already announced at its level or higher. Publish the
    /// claimed ones only; a claim is never handed out twice.
    pub async fn claim_announcements(
        &self,
        items: &[Announcement<'_>],
        at: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(bad) = items.iter().find(|a| a.kind.is_empty() || a.subject.is_empty() || a.level == 0) {
            return Err(StoreError::InvalidInput(format!(
                "an announcement needs a kind, a subject and a level of at least 1 (got {bad:?})"
            )));
        }
        let at = micros(at);
        let mut tx = self.db.begin(TxKind::Exclusive).await?;
        let mut claimed = Vec::with_capacity(items.len());
        for item in items {
            let query = Query::new(CLAIM)
                .bind(item.kind)
                .bind(item.subject)
                .bind(i64::from(item.level))
                .bind(item.state)
                .bind(at);
            claimed.push(tx.execute(query).await? > 0);
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Forgets the announcements of `kind` about the given instances (`subject_prefixes`, each
    /// `<account>/<region>/<instance>/`) whose subject is not in `keep`: a condition that ended
    /// (a finding remediated) is announced again if it comes back. Returns how many were
    /// forgotten.
    pub async fn retire_announcements(
        &self,
        kind: &str,
        subject_prefixes: &[String],
        keep: &[String],
    ) -> Result<u64, StoreError> {
        if subject_prefixes.is_empty() {
            return Ok(0);
        }
        let prefixes = serde_json::Value::from(subject_prefixes.to_vec()).to_string();
        let keep = serde_json::Value::from(keep.to_vec()).to_string();
        let d = self.db.dialect();
        // A prefix compared with substr, not LIKE: `_` in an id is not a wildcard.
        let sql = format!(
            "DELETE FROM event_announcements WHERE kind = $1 \
             AND EXISTS (SELECT 1 FROM ({}) p WHERE substr(subject, 1, length(p.value)) = p.value) \
             AND subject NOT IN ({})",
            d.json_texts("$2"),
            d.json_texts("$3")
        );
        self.db.execute(Query::new(sql).bind(kind).bind(prefixes).bind(keep)).await
    }

    /// Every announcement of `kind`, by subject.
    pub async fn announcements(&self, kind: &str) -> Result<Vec<AnnouncementRecord>, StoreError> {
        let query = Query::new(
            "SELECT kind, subject, level, state, announced_at FROM event_announcements \
             WHERE kind = $1 ORDER BY subject",
        )
        .bind(kind);
        let rows = self.db.fetch_all(query).await?;
        rows.iter()
            .map(|r| {
                Ok(AnnouncementRecord {
                    kind: r.text("kind")?,
                    subject: r.text("subject")?,
                    level: u32::try_from(r.int("level")?).unwrap_or(0),
                    state: r.text("state")?,
                    announced_at: r.time("announced_at")?,
                })
            })
            .collect()
    }
}
