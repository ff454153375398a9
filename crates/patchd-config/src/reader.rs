//! Typed reads from a parsed TOML tree that record a diagnostic instead of stopping at the
//! first problem. Every read marks its key as known; `finish` then reports the unknown ones.

use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::diagnostic::{did_you_mean, Diagnostics, Located, Origin};

/// One configuration file's text, with a line index to turn byte offsets into line:column.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) path: Arc<PathBuf>,
    pub(crate) text: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub(crate) fn new(path: PathBuf, text: String) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Source { path: Arc::new(path), text, line_starts }
    }

    pub(crate) fn origin_at(&self, offset: usize) -> Origin {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset).max(1);
        let line_start = self.line_starts[line - 1];
        // Columns count characters, not bytes, so editors land on the right spot.
        let col = self.text.get(line_start..offset).map_or(1, |s| s.chars().count() + 1);
        Origin { file: Arc::clone(&self.path), line: line as u32, col: col as u32 }
    }

    pub(crate) fn origin(&self, span: &Range<usize>) -> Origin {
        self.origin_at(span.start)
    }
}

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// A table being read. `what` names it in messages, e.g. "[[window]]" or "[[window.task]]".
pub(crate) struct TableReader<'a, 'i> {
    pub(crate) src: &'a Source,
    table: &'a DeTable<'i>,
    pub(crate) origin: Origin,
    pub(crate) what: String,
    known: Vec<&'static str>,
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'a, 'i> TableReader<'a, 'i> {
    pub(crate) fn new(
        src: &'a Source,
        table: &'a DeTable<'i>,
        span: &Range<usize>,
        what: impl Into<String>,
    ) -> Self {
        TableReader { src, table, origin: src.origin(span), what: what.into(), known: Vec::new() }
    }

    pub(crate) fn get(&mut self, key: &'static str) -> Option<&'a Value<'i>> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.table.iter().find(|(k, _)| k.get_ref().as_ref() == key).map(|(_, v)| v)
    }

    pub(crate) fn origin_of(&self, value: &Value<'_>) -> Origin {
        self.src.origin(&value.span())
    }

    fn type_error(&self, d: &mut Diagnostics, key: &str, value: &Value<'_>, expected: &str, example: &str) {
        d.error(
            &self.origin_of(value),
            format!("`{key}` in {} must be {expected}, found {}", self.what, type_name(value.get_ref())),
            Some(format!("write it like `{key} = {example}`")),
        );
    }

    pub(crate) fn string(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        example: &str,
    ) -> Option<Located<String>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Located { value: s.to_string(), origin: self.origin_of(value) }),
            _ => {
                self.type_error(d, key, value, "a string", example);
                None
            }
        }
    }

    /// A string that must not be empty and is required.
    pub(crate) fn required_string(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        example: &str,
    ) -> Option<Located<String>> {
        let found = self.string(d, key, example);
        match &found {
            None if self.get(key).is_none() => d.error(
                &self.origin,
                format!("{} is missing the required key `{key}`", self.what),
                Some(format!("add `{key} = {example}`")),
            ),
            Some(s) if s.value.trim().is_empty() => {
                d.error(&s.origin, format!("`{key}` in {} must not be empty", self.what), None);
                return None;
            }
            _ => {}
        }
        found
    }

    pub(crate) fn bool(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<bool> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(d, key, value, "true or false", "true");
                None
            }
        }
    }

    pub(crate) fn integer(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        range: RangeInclusive<i64>,
        example: &str,
    ) -> Option<Located<i64>> {
        let value = self.get(key)?;
        let origin = self.origin_of(value);
        let DeValue::Integer(int) = value.get_ref() else {
            self.type_error(d, key, value, "an integer", example);
            return None;
        };
        match i64::from_str_radix(int.as_str(), int.radix()) {
            Ok(n) if range.contains(&n) => Some(Located { value: n, origin }),
            _ => {
                d.error(
                    &origin,
                    format!(
                        "`{key}` in {} must be between {} and {}, found {int}",
                        self.what,
                        range.start(),
                        range.end()
                    ),
                    None,
                );
                None
            }
        }
    }

    /// An array of strings; a lone string is accepted too, because `values = "x"` is what
    /// people write when there is one value.
    pub(crate) fn string_list(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        example: &str,
    ) -> Option<Vec<Located<String>>> {
        let value = self.get(key)?;
        self.strings_of(d, key, value, example)
    }

    pub(crate) fn strings_of(
        &self,
        d: &mut Diagnostics,
        key: &str,
        value: &Value<'_>,
        example: &str,
    ) -> Option<Vec<Located<String>>> {
        match value.get_ref() {
            DeValue::String(s) => Some(vec![Located { value: s.to_string(), origin: self.origin_of(value) }]),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => {
                            out.push(Located { value: s.to_string(), origin: self.origin_of(item) })
                        }
                        _ => self.type_error(d, key, item, "a list of strings", example),
                    }
                }
                Some(out)
            }
            _ => {
                self.type_error(d, key, value, "a list of strings", example);
                None
            }
        }
    }

    pub(crate) fn datetime(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        example: &str,
    ) -> Option<Located<toml::value::Datetime>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Datetime(dt) => Some(Located { value: *dt, origin: self.origin_of(value) }),
            _ => {
                let hint = format!("TOML dates are written without quotes: `{key} = {example}`");
                d.error(
                    &self.origin_of(value),
                    format!("`{key}` in {} must be a date, found {}", self.what, type_name(value.get_ref())),
                    Some(hint),
                );
                None
            }
        }
    }

    /// A value of one of SSM's enums, matched as [`TableReader::choice`] matches.
    pub(crate) fn spelled<T: patchd_model::Spelled>(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
    ) -> Option<Located<T>> {
        let found = self.choice(d, key, T::NAMES)?;
        let value = T::parse(found.value).expect("choice returns one of the enum's own spellings");
        Some(Located { value, origin: found.origin })
    }

    /// One of a fixed set of words. Matching ignores case so that `install` and `Install` both
    /// work, but the canonical spelling is what the caller gets back.
    pub(crate) fn choice(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        allowed: &[&'static str],
    ) -> Option<Located<&'static str>> {
        let found = self.string(d, key, &format!("\"{}\"", allowed[0]))?;
        if let Some(canonical) = allowed.iter().find(|a| a.eq_ignore_ascii_case(&found.value)) {
            return Some(Located { value: canonical, origin: found.origin });
        }
        let hint = did_you_mean(&found.value, allowed.iter().copied())
            .unwrap_or_else(|| format!("use one of: {}", allowed.join(", ")));
        d.error(
            &found.origin,
            format!("`{key}` in {} has an unknown value `{}`", self.what, found.value),
            Some(hint),
        );
        None
    }

    pub(crate) fn table(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        what: impl Into<String>,
    ) -> Option<TableReader<'a, 'i>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Table(t) => Some(TableReader::new(self.src, t, &value.span(), what)),
            _ => {
                d.error(
                    &self.origin_of(value),
                    format!("`{key}` in {} must be a table, found {}", self.what, type_name(value.get_ref())),
                    Some(format!("write it as a section: `[{key}]`")),
                );
                None
            }
        }
    }

    /// `[[key]]` sections: an array of tables.
    pub(crate) fn tables(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        what: &str,
    ) -> Vec<TableReader<'a, 'i>> {
        let Some(value) = self.get(key) else { return Vec::new() };
        let wrong = |d: &mut Diagnostics, v: &Value<'_>| {
            d.error(
                &self.origin_of(v),
                format!("`{key}` must be written as `{what}` sections, found {}", type_name(v.get_ref())),
                Some(format!("start each entry with a `{what}` line")),
            );
        };
        match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .filter_map(|item| match item.get_ref() {
                    DeValue::Table(t) => Some(TableReader::new(self.src, t, &item.span(), what)),
                    _ => {
                        wrong(d, item);
                        None
                    }
                })
                .collect(),
            _ => {
                wrong(d, value);
                Vec::new()
            }
        }
    }

    /// Every key/value pair, for free-form tables such as tag selectors.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (Located<String>, &'a Value<'i>)> + '_ {
        self.table
            .iter()
            .map(|(k, v)| (Located { value: k.get_ref().to_string(), origin: self.src.origin(&k.span()) }, v))
    }

    /// Reports keys that no read asked for: almost always a typo, so suggest the closest known key.
    pub(crate) fn finish(self, d: &mut Diagnostics) {
        for (key, _) in self.table.iter() {
            let name = key.get_ref().as_ref();
            // Credentials are reported, with where they belong, by `credentials::check`.
            if self.known.contains(&name) || crate::secrets::is_credential_key(name) {
                continue;
            }
            let hint = did_you_mean(name, self.known.iter().copied())
                .unwrap_or_else(|| format!("known keys here: {}", self.known.join(", ")));
            d.error(
                &self.src.origin(&key.span()),
                format!("unknown key `{name}` in {}", self.what),
                Some(hint),
            );
        }
    }
}
