//! AWS-RunPatchBaseline's install override list: the YAML file `InstallOverrideList` names.
//!
//! AWS documents one shape, a top-level `patches:` list of maps with a required `id` and an
//! optional `title`. There is no YAML crate in the tree, so this reads exactly that subset,
//! strictly, and names the line of anything else: block mappings and sequences (the item's
//! first key on the dash's line, or on the lines after a bare dash), plain, single- and
//! double-quoted scalars, `#` comments, an optional `---` first line, and `patches: []`.

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPatch {
    pub id: String,
    pub title: Option<String>,
}

/// A parse error: the 1-based line and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn error(line: usize, message: impl Into<String>) -> ListError {
    ListError { line, message: message.into() }
}

/// A line with content: its number, its indentation and its text without the comment.
struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

/// Cuts a `#` comment (at the start or after a blank) that is not inside quotes.
fn strip_comment(text: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (position, c) in text.char_indices() {
        match quote {
            Some('\'') if c == '\'' => quote = None,
            Some('"') if c == '"' && previous != '\\' => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && (previous == ' ' || previous == '\t') => return &text[..position],
            None => {}
        }
        previous = c;
    }
    text
}

fn lines(text: &str) -> Result<Vec<Line<'_>>, ListError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed_start = raw.trim_start_matches(' ');
        if trimmed_start.starts_with('#') {
            continue;
        }
        let content = strip_comment(trimmed_start).trim_end();
        if content.is_empty() {
            continue;
        }
        if content.starts_with('\t') {
            return Err(error(number, "tabs cannot indent YAML; use spaces"));
        }
        if out.is_empty() && content == "---" {
            continue;
        }
        out.push(Line { number, indent: raw.len() - trimmed_start.len(), text: content });
    }
    Ok(out)
}

/// A scalar: plain, 'single' ('' is a quote) or "double" (with backslash escapes).
fn scalar(text: &str, line: usize) -> Result<String, ListError> {
    let text = text.trim();
    if let Some(inner) = text.strip_prefix('\'') {
        let Some(inner) = inner.strip_suffix('\'') else {
            return Err(error(line, format!("unterminated single-quoted string {text}")));
        };
        if inner.replace("''", "").contains('\'') {
            return Err(error(line, format!("unexpected text after a single-quoted string: {text}")));
        }
        return Ok(inner.replace("''", "'"));
    }
    if let Some(inner) = text.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.chars();
        loop {
            match chars.next() {
                None => return Err(error(line, format!("unterminated double-quoted string {text}"))),
                Some('"') => break,
                Some('\\') => {
                    let escaped = match chars.next() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('0') => '\0',
                        Some(' ') => ' ',
                        Some('u') => {
                            let digits: String = chars.by_ref().take(4).collect();
                            u32::from_str_radix(&digits, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| error(line, format!("bad \\u escape in {text}")))?
                        }
                        other => {
                            return Err(error(
                                line,
                                format!(
                                    "unknown escape \\{} in {text}",
                                    other.map(String::from).unwrap_or_default()
                                ),
                            ))
                        }
                    };
                    out.push(escaped);
                }
                Some(c) => out.push(c),
            }
        }
        if !chars.as_str().trim().is_empty() {
            return Err(error(line, format!("unexpected text after a double-quoted string: {text}")));
        }
        return Ok(out);
    }
    if let Some(first) = text.chars().next() {
        if "[]{}&*!|>%@`,".contains(first) {
            return Err(error(
                line,
                format!("{text} is not a plain scalar (flow collections, anchors, tags and block scalars are not supported)"),
            ));
        }
    }
    if text.contains(": ") || text.ends_with(':') {
        return Err(error(line, format!("{text}: a mapping where a string was expected")));
    }
    Ok(text.to_string())
}

/// `key: value` (value possibly empty).
fn key_value(text: &str, line: usize) -> Result<(&str, &str), ListError> {
    let (key, value) = match text.split_once(": ") {
        Some((key, value)) => (key, value),
        None => match text.strip_suffix(':') {
            Some(key) => (key, ""),
            None => return Err(error(line, format!("expected `key: value`, found {text}"))),
        },
    };
    let key = key.trim();
    let key = key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')).unwrap_or(key);
    let key = key.strip_prefix('"').and_then(|k| k.strip_suffix('"')).unwrap_or(key);
    Ok((key, value.trim()))
}

/// Reads the list; every problem names its line.
pub fn parse(text: &str) -> Result<Vec<ListedPatch>, ListError> {
    let lines = lines(text)?;
    let Some(first) = lines.first() else {
        return Err(error(1, "the list is empty; expected a top-level `patches:` list"));
    };
    let mut patches = None;
    let mut position = 0;
    while position < lines.len() {
        let line = &lines[position];
        if line.indent != 0 {
            return Err(error(line.number, "expected a top-level key at column 1"));
        }
        if line.text.starts_with("- ") || line.text == "-" {
            return Err(error(
                line.number,
                "the top level must be a mapping with a `patches:` key, not a list",
            ));
        }
        let (key, value) = key_value(line.text, line.number)?;
        if key != "patches" {
            return Err(error(
                line.number,
                format!("unknown top-level key {key:?}; only `patches` is allowed"),
            ));
        }
        if patches.is_some() {
            return Err(error(line.number, "`patches` appears twice"));
        }
        position += 1;
        match value {
            "" => {
                let (items, next) = sequence(&lines, position)?;
                patches = Some(items);
                position = next;
            }
            "[]" => patches = Some(Vec::new()),
            other => {
                return Err(error(
                    line.number,
                    format!("`patches` must be a list of patches, found {other}"),
                ));
            }
        }
    }
    patches.ok_or_else(|| error(first.number, "no top-level `patches:` key"))
}

/// The block sequence starting at `start` (its items indented at least as the dash of the
/// first one; a sequence under a top-level key may start at column 1). Returns the items and
/// the first line after it.
fn sequence(lines: &[Line<'_>], start: usize) -> Result<(Vec<ListedPatch>, usize), ListError> {
    let mut items = Vec::new();
    let Some(first) = lines.get(start) else { return Ok((items, start)) };
    let is_item = |line: &Line<'_>| line.text == "-" || line.text.starts_with("- ");
    if !is_item(first) {
        if first.indent == 0 {
            // The next top-level key: `patches:` with nothing under it is an empty list.
            return Ok((items, start));
        }
        return Err(error(first.number, format!("expected a list item (`- id: ...`), found {}", first.text)));
    }
    let dash = first.indent;
    let mut position = start;
    while let Some(line) = lines.get(position) {
        if line.indent < dash || (line.indent == 0 && !is_item(line)) {
            break;
        }
        if line.indent != dash || !is_item(line) {
            return Err(error(
                line.number,
                format!("expected a list item at column {}, found {}", dash + 1, line.text),
            ));
        }
        let item_line = line.number;
        let mut fields: Vec<(String, String, usize)> = Vec::new();
        let rest = line.text[1..].trim_start_matches(' ');
        let mut column = None;
        if rest.starts_with('{') || rest.starts_with('[') {
            return Err(error(
                line.number,
                "flow collections ({...}, [...]) are not supported; write the entry as a block",
            ));
        }
        if !rest.is_empty() {
            column = Some(line.indent + line.text.len() - rest.len());
            let (key, value) = key_value(rest, line.number)?;
            fields.push((key.to_string(), value.to_string(), line.number));
        }
        position += 1;
        while let Some(field) = lines.get(position) {
            if field.indent <= dash {
                break;
            }
            let expected = *column.get_or_insert(field.indent);
            if field.indent != expected {
                return Err(error(
                    field.number,
                    format!("bad indentation: the item's keys start at column {}", expected + 1),
                ));
            }
            if is_item(field) {
                return Err(error(field.number, "a nested list is not allowed in a patch entry"));
            }
            let (key, value) = key_value(field.text, field.number)?;
            fields.push((key.to_string(), value.to_string(), field.number));
            position += 1;
        }
        items.push(entry(fields, item_line)?);
    }
    Ok((items, position))
}

fn entry(fields: Vec<(String, String, usize)>, item_line: usize) -> Result<ListedPatch, ListError> {
    let mut id = None;
    let mut title = None;
    for (key, value, line) in fields {
        if value.is_empty() {
            return Err(error(line, format!("`{key}` has no value")));
        }
        let slot = match key.as_str() {
            "id" => &mut id,
            "title" => &mut title,
            other => {
                return Err(error(
                    line,
                    format!("unknown key {other:?} in a patch entry; use `id` and `title`"),
                ))
            }
        };
        if slot.is_some() {
            return Err(error(line, format!("`{key}` appears twice in one patch entry")));
        }
        let text = scalar(&value, line)?;
        if text.is_empty() {
            return Err(error(line, format!("`{key}` is empty")));
        }
        *slot = Some(text);
    }
    let id = id.ok_or_else(|| error(item_line, "a patch entry without `id`"))?;
    Ok(ListedPatch { id, title })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, title: Option<&str>) -> ListedPatch {
        ListedPatch { id: id.into(), title: title.map(str::to_string) }
    }

    #[test]
    fn both_block_styles_and_every_scalar_style() {
        let text = "---\n# install these\npatches:\n  - id: 'ALAS2-2026-001'\n    title: 'It''s a kernel fix'\n  -\n      id: \"KB5031234\"   # windows\n      title: \"a \\\"quoted\\\" title\"\n  - id: plain-id\n";
        assert_eq!(
            parse(text),
            Ok(vec![
                listed("ALAS2-2026-001", Some("It's a kernel fix")),
                listed("KB5031234", Some("a \"quoted\" title")),
                listed("plain-id", None),
            ])
        );
        assert_eq!(parse("patches:\n- id: X\n  title: Y # c\n"), Ok(vec![listed("X", Some("Y"))]));
        assert_eq!(parse("patches: []\n"), Ok(vec![]));
        assert_eq!(parse("patches:\n"), Ok(vec![]));
        assert_eq!(parse("patches:\r\n  - id: 'A#1'\r\n"), Ok(vec![listed("A#1", None)]));
    }

    #[test]
    fn errors_name_their_line() {
        let cases = [
            ("", 1, "empty"),
            ("patch:\n  - id: X\n", 1, "unknown top-level key"),
            ("patches:\n  - id: X\n    titel: Y\n", 3, "unknown key"),
            ("patches:\n  - title: Y\n", 2, "without `id`"),
            ("patches:\n  - id: X\n     title: Y\n", 3, "bad indentation"),
            ("patches:\n  - id: 'X\n", 2, "unterminated"),
            ("patches:\n  - id: X\n  id: Y\n", 3, "expected a list item"),
            ("patches:\n  - id: X\n    id: Y\n", 3, "appears twice"),
            ("patches:\n  - {id: X}\n", 2, "flow collections"),
            ("patches: KB1\n", 1, "must be a list"),
            ("patches:\n  - id: [a]\n", 2, "not a plain scalar"),
            ("patches:\n\tx\n", 2, "tabs"),
            ("- id: X\n", 1, "not a list"),
            ("patches:\n  - id:\n", 2, "no value"),
        ];
        for (text, line, fragment) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(error.to_string().contains(fragment), "{text:?}: {error}");
        }
    }
}
