//! Simulated CloudWatch alarms, only as far as Run Command's alarm gate reads them: a name and
//! a state per partition, set through the control API. There is no CloudWatch API and no
//! metric behind an alarm.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::{to_datetime, Millis};

/// CloudWatch's `StateValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AlarmState {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "ALARM")]
    Alarm,
    #[serde(rename = "INSUFFICIENT_DATA")]
    InsufficientData,
}

impl AlarmState {
    pub const NAMES: [&'static str; 3] = ["OK", "ALARM", "INSUFFICIENT_DATA"];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }

    pub fn parse(text: &str) -> Option<AlarmState> {
        match text {
            "OK" => Some(AlarmState::Ok),
            "ALARM" => Some(AlarmState::Alarm),
            "INSUFFICIENT_DATA" => Some(AlarmState::InsufficientData),
            _ => None,
        }
    }
}

/// An alarm as `GET /_sim/alarms` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmView {
    pub name: String,
    pub state: AlarmState,
    /// By the simulated clock.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Copy)]
struct Alarm {
    state: AlarmState,
    updated_ms: Millis,
}

/// One partition's alarms, by name.
#[derive(Debug, Clone, Default)]
pub struct Alarms {
    by_name: BTreeMap<String, Alarm>,
}

/// CloudWatch's alarm name bounds (1 to 255 characters), and SSM's rule that a name is not
/// blank.
pub fn alarm_name_problem(name: &str) -> Option<String> {
    let length = name.chars().count();
    if name.trim().is_empty() {
        Some("an alarm name must not be empty or blank".into())
    } else if length > 255 {
        Some(format!("the alarm name has {length} characters; use at most 255"))
    } else {
        None
    }
}

impl Alarms {
    /// Creates the alarm or changes its state; `updated_at` moves only when the state does, as
    /// CloudWatch's StateUpdatedTimestamp does.
    pub fn set(&mut self, name: &str, state: AlarmState, now: Millis) -> Result<(), String> {
        if let Some(problem) = alarm_name_problem(name) {
            return Err(problem);
        }
        let alarm = self.by_name.entry(name.to_string()).or_insert(Alarm { state, updated_ms: now });
        if alarm.state != state {
            alarm.state = state;
            alarm.updated_ms = now;
        }
        Ok(())
    }

    /// An alarm nobody created has no data yet, which does not stop anything.
    pub fn state(&self, name: &str) -> AlarmState {
        self.by_name.get(name).map_or(AlarmState::InsufficientData, |a| a.state)
    }

    pub fn views(&self) -> Vec<AlarmView> {
        self.by_name
            .iter()
            .map(|(name, alarm)| AlarmView {
                name: name.clone(),
                state: alarm.state,
                updated_at: to_datetime(alarm.updated_ms),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_names_and_timestamps() {
        let mut alarms = Alarms::default();
        assert_eq!(alarms.state("nobody-made-me"), AlarmState::InsufficientData);
        alarms.set("cpu", AlarmState::Ok, 1_000).expect("valid");
        alarms.set("cpu", AlarmState::Ok, 2_000).expect("valid");
        assert_eq!(alarms.views()[0].updated_at, to_datetime(1_000), "the same state keeps its timestamp");
        alarms.set("cpu", AlarmState::Alarm, 3_000).expect("valid");
        assert_eq!(
            (alarms.state("cpu"), alarms.views()[0].updated_at),
            (AlarmState::Alarm, to_datetime(3_000))
        );
        assert!(alarms.set("  ", AlarmState::Ok, 0).is_err());
        assert!(alarms.set(&"x".repeat(256), AlarmState::Ok, 0).is_err());
        assert!(AlarmState::NAMES.iter().all(|n| AlarmState::parse(n).is_some_and(|s| s.as_str() == *n)));
        assert_eq!(AlarmState::parse("alarm"), None);
    }
}
