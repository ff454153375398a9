//! EventBridge `PutEvents` (AWS JSON 1.1, `X-Amz-Target: AWSEvents.PutEvents`), on the same
//! endpoint as SSM: entries are validated as EventBridge does, recorded, and answered with an
//! event id each. A fault knob fails the next N entries (`InternalFailure`), so a client's
//! partial-failure handling (`FailedEntryCount`) can be tested.
//!
//! Inferred rather than documented: the order of the checks, and the error texts.

use serde::Serialize;

use crate::error::ApiError;

/// The EventBridge operations the simulator answers.
pub const OPERATIONS: &[&str] = &["PutEvents"];
/// PutEvents takes 1 to 10 entries.
pub const MAX_ENTRIES: usize = 10;
/// EventBridge's limit on a whole PutEvents request.
const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// One event PutEvents accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedEvent {
    pub event_id: String,
    pub source: String,
    pub detail_type: String,
    /// `Detail`, parsed.
    pub detail: serde_json::Value,
    /// `EventBusName`, when given (the default bus otherwise).
    pub event_bus_name: Option<String>,
    pub resources: Vec<String>,
    /// `Time`, as sent (epoch seconds), when given.
    pub time: Option<f64>,
    /// The caller's account and region (from its credentials): one bus list records them all.
    pub account_id: String,
    pub region: String,
}

/// The recorded events and the fault knob.
#[derive(Debug, Default)]
pub(crate) struct EventBus {
    pub(crate) events: Vec<RecordedEvent>,
    /// Entries still to fail with `InternalFailure`, whatever they hold.
    pub(crate) fail_entries: u32,
    next_id: u64,
}

impl EventBus {
    /// Answers one PutEvents body, or the error EventBridge would send for the whole request.
    pub(crate) fn put_events(
        &mut self,
        body: &serde_json::Value,
        size: usize,
        (account_id, region): (&str, &str),
    ) -> Result<String, ApiError> {
        if size > MAX_REQUEST_BYTES {
            return Err(ApiError::validation(format!(
                "the request is {size} bytes; PutEvents takes at most {MAX_REQUEST_BYTES}"
            )));
        }
        let entries = body
            .get("Entries")
            .and_then(|v| v.as_array())
            .ok_or_else(|| ApiError::validation("1 validation error detected: Entries must not be null"))?;
        if entries.is_empty() || entries.len() > MAX_ENTRIES {
            return Err(ApiError::constraint(
                entries.len(),
                "entries",
                "Member must have length less than or equal to 10 and greater than or equal to 1",
            ));
        }
        let mut answers = Vec::with_capacity(entries.len());
        let mut failed = 0;
        for entry in entries {
            if self.fail_entries > 0 {
                self.fail_entries -= 1;
                failed += 1;
                answers.push(serde_json::json!({
                    "ErrorCode": "InternalFailure",
                    "ErrorMessage": "injected by fleet-sim",
                }));
                continue;
            }
            match parse_entry(entry) {
                Ok(mut event) => {
                    self.next_id += 1;
                    event.event_id = format!("{:08x}-0000-4000-8000-{:012x}", self.next_id, self.next_id);
                    event.account_id = account_id.to_string();
                    event.region = region.to_string();
                    answers.push(serde_json::json!({ "EventId": event.event_id }));
                    self.events.push(event);
                }
                Err((code, message)) => {
                    failed += 1;
                    answers.push(serde_json::json!({ "ErrorCode": code, "ErrorMessage": message }));
                }
            }
        }
        Ok(serde_json::json!({ "FailedEntryCount": failed, "Entries": answers }).to_string())
    }
}

/// An entry, or the per-entry error code and message EventBridge answers for it.
fn parse_entry(entry: &serde_json::Value) -> Result<RecordedEvent, (&'static str, String)> {
    let text = |key: &str| entry.get(key).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let source = text("Source").ok_or((
        "MalformedDetail",
        "Source is not valid. Reason: Source is a required argument.".to_string(),
    ))?;
    let detail_type = text("DetailType").ok_or((
        "MalformedDetail",
        "DetailType is not valid. Reason: DetailType is a required argument.".to_string(),
    ))?;
    let detail_text = text("Detail").ok_or((
        "MalformedDetail",
        "Detail is not valid. Reason: Detail is a required argument.".to_string(),
    ))?;
    let detail: serde_json::Value = serde_json::from_str(detail_text)
        .map_err(|e| ("MalformedDetail", format!("Detail is malformed: {e}")))?;
    if !detail.is_object() {
        return Err(("MalformedDetail", "Detail is malformed: it must be a JSON object".to_string()));
    }
    let resources = match entry.get("Resources") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => {
            items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
        }
        Some(_) => return Err(("MalformedDetail", "Resources must be a list of strings".to_string())),
    };
    Ok(RecordedEvent {
        event_id: String::new(),
        source: source.to_string(),
        detail_type: detail_type.to_string(),
        detail,
        event_bus_name: text("EventBusName").map(str::to_string),
        resources,
        time: entry.get("Time").and_then(|v| v.as_f64()),
        account_id: String::new(),
        region: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: (&str, &str) = ("123456789012", "us-east-1");

    fn entry(detail: &str) -> serde_json::Value {
        serde_json::json!({ "Source": "patchd", "DetailType": "Test", "Detail": detail })
    }

    #[test]
    fn entries_are_validated_one_by_one() {
        let mut bus = EventBus::default();
        let body =
            serde_json::json!({ "Entries": [entry("{\"a\":1}"), entry("not json"), { "Source": "x" }] });
        let answer: serde_json::Value =
            serde_json::from_str(&bus.put_events(&body, 10, ORIGIN).unwrap()).unwrap();
        assert_eq!(answer["FailedEntryCount"], 2);
        assert!(answer["Entries"][0]["EventId"].is_string());
        assert_eq!(answer["Entries"][1]["ErrorCode"], "MalformedDetail");
        assert_eq!(bus.events.len(), 1);
        assert_eq!(bus.events[0].detail["a"], 1);
    }

    #[test]
    fn whole_requests_are_refused_outside_one_to_ten() {
        let mut bus = EventBus::default();
        assert!(bus.put_events(&serde_json::json!({ "Entries": [] }), 10, ORIGIN).is_err());
        let eleven: Vec<_> = (0..11).map(|_| entry("{}")).collect();
        let error = bus.put_events(&serde_json::json!({ "Entries": eleven }), 10, ORIGIN).unwrap_err();
        assert_eq!(error.code, "ValidationException");
        assert!(bus.put_events(&serde_json::json!({}), 10, ORIGIN).is_err());
    }

    #[test]
    fn the_fault_knob_fails_the_next_entries() {
        let mut bus = EventBus { fail_entries: 2, ..EventBus::default() };
        let body = serde_json::json!({ "Entries": [entry("{}"), entry("{}"), entry("{}")] });
        let answer: serde_json::Value =
            serde_json::from_str(&bus.put_events(&body, 10, ORIGIN).unwrap()).unwrap();
        assert_eq!(answer["FailedEntryCount"], 2);
        assert_eq!(answer["Entries"][0]["ErrorCode"], "InternalFailure");
        assert!(answer["Entries"][2]["EventId"].is_string());
        assert_eq!(bus.events.len(), 1);
        assert_eq!(bus.fail_entries, 0);
    }
}
