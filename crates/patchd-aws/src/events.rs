//! EventBridge `PutEvents`: patchd's events onto a bus, 10 entries a call, source `patchd`.
//!
//! The SDK retries a call that failed as a whole (throttling, transport, server errors), as it
//! does for every other call. PutEvents can also succeed while refusing some of its entries
//! (`FailedEntryCount`, an `ErrorCode` per entry): the SDK does not retry those, so this module
//! resends only the refused entries, with its own short exponential backoff and a bounded
//! number of rounds ([`EntryRetry`]). Entries refused as malformed are not resent: sending
//! them again cannot help.

use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use chrono::{DateTime, Utc};
use tracing::instrument;

use crate::client::AwsClients;
use crate::error::{AwsError, InvalidRequest};

/// The `source` of every event patchd publishes.
pub const EVENT_SOURCE: &str = "patchd";
/// PutEvents takes at most 10 entries a call.
pub const MAX_ENTRIES_PER_PUT: usize = 10;
/// Per-entry error codes that resending cannot fix.
const PERMANENT_ENTRY_ERRORS: &[&str] = &["MalformedDetail", "ValidationException", "AccessDeniedException"];

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEntry {
    /// EventBridge's `DetailType`, e.g. `Window Run Completed`.
    pub detail_type: String,
    /// The event's `detail`: a JSON object, as text.
    pub detail: String,
    /// ARNs the event is about (instances), when known.
    pub resources: Vec<String>,
    pub time: Option<DateTime<Utc>>,
}

/// How refused entries are resent: at most `rounds` resends, waiting `initial`, doubling, at
/// most `max` between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRetry {
    pub rounds: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for EntryRetry {
    fn default() -> EntryRetry {
        EntryRetry { rounds: 3, initial: Duration::from_millis(200), max: Duration::from_secs(2) }
    }
}

/// An entry EventBridge still refused after the resends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEntry {
    pub detail_type: String,
    pub error_code: String,
    pub error_message: String,
}

/// What [`AwsClients::put_events`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutEventsOutcome {
    /// Entries EventBridge accepted, with their event ids.
    pub event_ids: Vec<String>,
    /// Entries refused for good.
    pub failed: Vec<FailedEntry>,
    /// PutEvents calls made (SDK retries of a whole call not counted).
    pub calls: usize,
    /// Entries resent after a partial failure.
    pub resent: usize,
}

impl AwsClients {
    /// Publishes `entries` to `bus` (a name or an ARN), [`MAX_ENTRIES_PER_PUT`] a call, with
    /// source [`EVENT_SOURCE`]. Refused entries are resent per `retry`; those still refused are
    /// in the outcome's `failed`. An error means a call failed as a whole after the SDK's
    /// retries; the entries of earlier calls were published.
    #[instrument(skip(self, entries), fields(entries = entries.len()), err(Display))]
    pub async fn put_events(
        &self,
        bus: &str,
        entries: &[EventEntry],
        retry: EntryRetry,
    ) -> Result<PutEventsOutcome, AwsError> {
        const OPERATION: &str = "PutEvents";
        if bus.is_empty() {
            return Err(AwsError::invalid(
                OPERATION,
                InvalidRequest::Incomplete { detail: "no event bus named".into() },
            ));
        }
        let mut outcome = PutEventsOutcome::default();
        for chunk in entries.chunks(MAX_ENTRIES_PER_PUT) {
            let mut pending: Vec<&EventEntry> = chunk.iter().collect();
            let mut round = 0;
            loop {
                let request: Vec<PutEventsRequestEntry> =
                    pending.iter().map(|e| request_entry(bus, e)).collect();
                outcome.calls += 1;
                let output = self
                    .events
                    .put_events()
                    .set_entries(Some(request))
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
                let answers = output.entries();
                let mut retryable = Vec::new();
                for (index, entry) in pending.iter().enumerate() {
                    let answer = answers.get(index);
                    match (answer.and_then(|a| a.event_id()), answer.and_then(|a| a.error_code())) {
                        (Some(id), None) => outcome.event_ids.push(id.to_string()),
                        (_, code) => {
                            let code = code.unwrap_or("MissingEntryResult");
                            let message = answer.and_then(|a| a.error_message()).unwrap_or_default();
                            if PERMANENT_ENTRY_ERRORS.contains(&code) || round >= retry.rounds {
                                outcome.failed.push(FailedEntry {
                                    detail_type: entry.detail_type.clone(),
                                    error_code: code.to_string(),
                                    error_message: message.to_string(),
                                });
                            } else {
                                retryable.push(*entry);
                            }
                        }
                    }
                }
                if retryable.is_empty() {
                    break;
                }
                tracing::debug!(failed = retryable.len(), round, "PutEvents refused entries; resending them");
                tokio::time::sleep(backoff(retry, round)).await;
                round += 1;
                outcome.resent += retryable.len();
                pending = retryable;
            }
        }
        if !outcome.failed.is_empty() {
            tracing::warn!(failed = outcome.failed.len(), code = %outcome.failed[0].error_code,
                "EventBridge refused events");
        }
        Ok(outcome)
    }
}

fn request_entry(bus: &str, entry: &EventEntry) -> PutEventsRequestEntry {
    let mut builder = PutEventsRequestEntry::builder()
        .source(EVENT_SOURCE)
        .detail_type(&entry.detail_type)
        .detail(&entry.detail)
        .event_bus_name(bus)
        .set_resources((!entry.resources.is_empty()).then(|| entry.resources.clone()));
    if let Some(time) = entry.time {
        builder =
            builder.time(aws_sdk_eventbridge::primitives::DateTime::from_millis(time.timestamp_millis()));
    }
    builder.build()
}

/// The wait before resend `round` (0-based): `initial * 2^round`, at most `max`.
fn backoff(retry: EntryRetry, round: u32) -> Duration {
    retry.initial.saturating_mul(1u32 << round.min(16)).min(retry.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry =
            EntryRetry { rounds: 5, initial: Duration::from_millis(100), max: Duration::from_millis(350) };
        let waits: Vec<u128> = (0..4).map(|r| backoff(retry, r).as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
    }
}
