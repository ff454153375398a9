//! Reading AWS JSON 1.1 request bodies with AWS's validation errors.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The request body of an SSM operation (a JSON object).
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    fields: &'a Map<String, Value>,
}

fn serialization(key: &str, expected: &str) -> ApiError {
    ApiError::new("SerializationException", format!("{key}: expected {expected}"))
}

/// AWS names members in validation messages in lowerCamelCase.
pub fn member_name(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl<'a> Body<'a> {
    pub fn new(value: &'a Value) -> Result<Body<'a>, ApiError> {
        match value.as_object() {
            Some(fields) => Ok(Body { fields }),
            None => Err(ApiError::new("SerializationException", "the request body must be a JSON object")),
        }
    }

    pub fn empty() -> Body<'static> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        Body { fields: EMPTY.get_or_init(Map::new) }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.fields.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(serialization(key, "a string")),
        }
    }

    pub fn required_str(&self, key: &str) -> Result<&'a str, ApiError> {
        self.str(key)?
            .ok_or_else(|| ApiError::constraint("null", &member_name(key), "Member must not be null"))
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| serialization(key, "an integer")),
            Some(_) => Err(serialization(key, "an integer")),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(serialization(key, "a boolean")),
        }
    }

    pub fn list(&self, key: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(serialization(key, "a list")),
        }
    }

    pub fn object(&self, key: &str) -> Result<Option<Body<'a>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(fields)) => Ok(Some(Body { fields })),
            Some(_) => Err(serialization(key, "a structure")),
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.fields.iter()
    }

    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.get(key)
    }

    /// A list of strings, checked against the model's length bounds.
    pub fn strings(&self, key: &str, max_items: Option<usize>) -> Result<Option<Vec<&'a str>>, ApiError> {
        let Some(items) = self.list(key)? else { return Ok(None) };
        check_list_length(key, items, max_items)?;
        items
            .iter()
            .map(|item| item.as_str().ok_or_else(|| serialization(key, "a list of strings")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A list of structures.
    pub fn objects(&self, key: &str, max_items: Option<usize>) -> Result<Vec<Body<'a>>, ApiError> {
        let Some(items) = self.list(key)? else { return Ok(Vec::new()) };
        check_list_length(key, items, max_items)?;
        items
            .iter()
            .map(|item| match item {
                Value::Object(fields) => Ok(Body { fields }),
                _ => Err(serialization(key, "a list of structures")),
            })
            .collect()
    }

    /// `MaxResults` within the model's range, or the default.
    pub fn page_size(&self, min: i64, max: i64, default: usize) -> Result<usize, ApiError> {
        match self.int("MaxResults")? {
            None => Ok(default),
            Some(value) if value < min => Err(ApiError::constraint(
                value,
                "maxResults",
                &format!("Member must have value greater than or equal to {min}"),
            )),
            Some(value) if value > max => Err(ApiError::constraint(
                value,
                "maxResults",
                &format!("Member must have value less than or equal to {max}"),
            )),
            Some(value) => Ok(value as usize),
        }
    }
}

/// The model's bound on a list's length: more than `max_items` items is a ValidationException
/// naming the member and showing the first items.
fn check_list_length(key: &str, items: &[Value], max_items: Option<usize>) -> Result<(), ApiError> {
    match max_items {
        Some(max) if items.len() > max => Err(ApiError::constraint(
            list_preview(items),
            &member_name(key),
            &format!("Member must have length less than or equal to {max}"),
        )),
        _ => Ok(()),
    }
}

fn list_preview(items: &[Value]) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(3)
        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
        .collect();
    if items.len() > 3 {
        format!("[{}, ...]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

/// Checks a string's length against the model.
pub fn check_length(value: &str, key: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let length = value.chars().count();
    if length < min {
        return Err(ApiError::constraint(
            value,
            &member_name(key),
            &format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if length > max {
        return Err(ApiError::constraint(
            value,
            &member_name(key),
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

pub fn pattern_error(value: &str, key: &str, pattern: &str) -> ApiError {
    ApiError::constraint(
        value,
        &member_name(key),
        &format!("Member must satisfy regular expression pattern: {pattern}"),
    )
}

pub fn enum_error(value: &str, key: &str, allowed: &[&str]) -> ApiError {
    ApiError::constraint(
        value,
        &member_name(key),
        &format!("Member must satisfy enum value set: [{}]", allowed.join(", ")),
    )
}

pub const INSTANCE_ID_PATTERN: &str = r"(^i-(\w{8}|\w{17})$)|(^mi-\w{17}$)";

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `(^i-(\w{8}|\w{17})$)|(^mi-\w{17}$)`
pub fn is_instance_id(id: &str) -> bool {
    if let Some(rest) = id.strip_prefix("mi-") {
        return rest.len() == 17 && rest.chars().all(is_word);
    }
    match id.strip_prefix("i-") {
        Some(rest) => (rest.len() == 8 || rest.len() == 17) && rest.chars().all(is_word),
        None => false,
    }
}

pub fn check_instance_id(id: &str, key: &str) -> Result<(), ApiError> {
    if is_instance_id(id) {
        Ok(())
    } else {
        Err(pattern_error(id, key, INSTANCE_ID_PATTERN))
    }
}

/// `^[a-zA-Z0-9_\-:/]{20,128}$`
pub fn check_baseline_id(id: &str) -> Result<(), ApiError> {
    let valid = (20..=128).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '/'));
    if valid {
        Ok(())
    } else {
        Err(pattern_error(id, "BaselineId", r"^[a-zA-Z0-9_\-:/]{20,128}$"))
    }
}

/// Tag keys and values, patch groups: `^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`
pub fn is_tag_text(text: &str) -> bool {
    text.chars().all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
}

pub fn check_patch_group(group: &str) -> Result<(), ApiError> {
    check_length(group, "PatchGroup", 1, 256)?;
    if is_tag_text(group) {
        Ok(())
    } else {
        Err(pattern_error(group, "PatchGroup", r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$"))
    }
}

/// A GUID, optionally in braces (AWS-RunPatchBaseline's SnapshotId).
pub fn is_guid(text: &str) -> bool {
    let inner = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(text);
    let groups: Vec<&str> = inner.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_reads() {
        let value = json!({"A": "x", "B": 3, "C": true, "D": ["p", "q"], "E": null, "F": 1.5});
        let body = Body::new(&value).expect("object");
        assert_eq!(body.str("A"), Ok(Some("x")));
        assert_eq!(body.int("B"), Ok(Some(3)));
        assert_eq!(body.bool("C"), Ok(Some(true)));
        assert_eq!(body.strings("D", Some(2)), Ok(Some(vec!["p", "q"])));
        assert_eq!(body.str("E"), Ok(None), "null is absent");
        assert_eq!(body.int("F").map_err(|e| e.code), Err("SerializationException".into()));
        assert_eq!(body.str("B").map_err(|e| e.code), Err("SerializationException".into()));
        let too_many = body.strings("D", Some(1)).expect_err("too long");
        assert!(too_many.message.contains("at 'd'"), "{}", too_many.message);
        assert!(body.required_str("Z").expect_err("missing").message.contains("Member must not be null"));
        assert!(Body::new(&json!([1])).is_err());
    }

    #[test]
    fn page_sizes() {
        let value = json!({"MaxResults": 51});
        let error = Body::new(&value).and_then(|b| b.page_size(1, 50, 10)).expect_err("out of range");
        assert_eq!(error.code, "ValidationException");
        assert!(error.message.contains("less than or equal to 50"), "{}", error.message);
        assert_eq!(Body::empty().page_size(1, 50, 10), Ok(10));
    }

    #[test]
    fn patterns() {
        for (id, valid) in [
            ("i-0123456789abcdef0", true),
            ("i-01234567", true),
            ("mi-0123456789abcdef0", true),
            ("i-0123", false),
            ("x-0123456789abcdef0", false),
            ("i-0123456789abcdef0 ", false),
        ] {
            assert_eq!(is_instance_id(id), valid, "{id}");
        }
        assert!(is_guid("3f4c1b2a-1111-2222-3333-444455556666"));
        assert!(is_guid("{3f4c1b2a-1111-2222-3333-444455556666}"));
        assert!(!is_guid("3f4c1b2a-1111-2222-3333"));
        assert!(check_baseline_id("pb-0123456789abcdef0").is_ok());
        assert!(check_baseline_id("pb-short").is_err());
        assert!(check_patch_group("web prod").is_ok());
        assert!(check_patch_group("bad#group").is_err());
        assert!(check_patch_group("").is_err());
    }
}
