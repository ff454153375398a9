//! AWS-RunShellScript and AWS-RunPatchBaselineWithHooks's hook documents on simulated
//! machines: nothing runs, so what a script or hook does is decided by outcome rules the
//! scenario or the control API sets, first match wins, exit code 0 when none matches.

use serde::{Deserialize, Serialize};

use crate::request::is_instance_id;

/// One outcome rule (`PUT /_sim/hook-outcomes`, or `[[hooks.outcomes]]` in a scenario).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookRule {
    /// Matches when this is a substring of the command's `commands`, joined with newlines (of
    /// a hook, its document's name); an empty text matches every script.
    #[serde(default)]
    pub contains: String,
    /// Matches only these instances; every instance when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_ids: Option<Vec<String>>,
    /// The script's exit status: 0 succeeds, anything else fails with it as ResponseCode.
    #[serde(default)]
    pub exit_code: i64,
    /// Standard output after the echoed commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl HookRule {
    fn matches(&self, script: &str, instance_id: &str) -> bool {
        script.contains(&self.contains)
            && self.instance_ids.as_ref().is_none_or(|ids| ids.iter().any(|id| id == instance_id))
    }
}

/// Shell-script settings of a scenario (`[hooks]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// How long an AWS-RunShellScript invocation runs, in simulated seconds, spread by the
    /// timing's jitter. Apart from `[timing]` because callers build `Timing` field by field.
    pub script_seconds: f64,
    pub outcomes: Vec<HookRule>,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks { script_seconds: 5.0, outcomes: Vec::new() }
    }
}

/// What a script run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptOutcome {
    pub exit_code: i64,
    pub output: Option<String>,
}

/// Everything wrong with a list of rules, one line each.
pub fn rule_problems(rules: &[HookRule]) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if !(0..=255).contains(&rule.exit_code) {
            problems.push(format!(
                "rule {index}: exit_code {} is not a shell exit status; use 0 to 255",
                rule.exit_code
            ));
        }
        for id in rule.instance_ids.iter().flatten() {
            if !is_instance_id(id) {
                problems.push(format!(
                    "rule {index}: instance_ids holds {id:?}; use instance ids such as i-0123456789abcdef0"
                ));
            }
        }
    }
    problems
}

impl Hooks {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.script_seconds.is_finite() && self.script_seconds >= 0.0) {
            problems
                .push(format!("hooks.script_seconds is {}; use a number of at least 0", self.script_seconds));
        }
        problems.extend(rule_problems(&self.outcomes).into_iter().map(|p| format!("hooks.outcomes {p}")));
        problems
    }

    /// The outcome of `commands` on `instance_id` under the rules in force.
    pub fn outcome(&self, commands: &[String], instance_id: &str) -> ScriptOutcome {
        let script = commands.join("\n");
        match self.outcomes.iter().find(|rule| rule.matches(&script, instance_id)) {
            Some(rule) => ScriptOutcome { exit_code: rule.exit_code, output: rule.output.clone() },
            None => ScriptOutcome { exit_code: 0, output: None },
        }
    }
}

/// A rule list from the control API: a JSON array of rules, or `{"rules": [...]}`.
pub fn rules_from_json(body: &serde_json::Value) -> Result<Vec<HookRule>, Vec<String>> {
    let list = match body {
        serde_json::Value::Array(_) => body.clone(),
        serde_json::Value::Object(fields) if fields.len() == 1 && fields.contains_key("rules") => {
            fields["rules"].clone()
        }
        _ => {
            return Err(vec![
                "give a list of rules, [{\"contains\": \"drain\", \"exit_code\": 1}], or {\"rules\": [...]}"
                    .into(),
            ])
        }
    };
    let rules: Vec<HookRule> =
        serde_json::from_value(list).map_err(|e| vec![format!("a rule is malformed: {e}")])?;
    let problems = rule_problems(&rules);
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_matching_rule_decides() {
        let rules = rules_from_json(&json!([
            {"contains": "drain", "instance_ids": ["i-0123456789abcdef0"], "exit_code": 3, "output": "busy"},
            {"contains": "drain", "exit_code": 1},
        ]))
        .expect("valid");
        let hooks = Hooks { outcomes: rules, ..Hooks::default() };
        let script = vec!["echo start".to_string(), "lb drain --now".to_string()];
        assert_eq!(
            hooks.outcome(&script, "i-0123456789abcdef0"),
            ScriptOutcome { exit_code: 3, output: Some("busy".into()) }
        );
        assert_eq!(hooks.outcome(&script, "i-0fffffffffffffff0").exit_code, 1);
        assert_eq!(hooks.outcome(&["uptime".to_string()], "i-0fffffffffffffff0").exit_code, 0);
        let wrapped = rules_from_json(&json!({"rules": [{"contains": "", "exit_code": 2}]})).expect("valid");
        assert_eq!(wrapped.len(), 1);
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(rules_from_json(&json!({"contains": "x"})).is_err());
        assert!(rules_from_json(&json!([{"contains": "x", "bogus": 1}])).is_err());
        let problems = rules_from_json(&json!([{"exit_code": 256}, {"instance_ids": ["web-1"]}]))
            .expect_err("out of range and not an id");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(Hooks { script_seconds: -1.0, ..Hooks::default() }.problems().len(), 1);
    }
}
