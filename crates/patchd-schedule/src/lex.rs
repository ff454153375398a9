//! Tokens that remember where they start in the source, so that every
//! parse error can point at a byte offset.

/// A token and the byte offset where it starts in the whole source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    pub(crate) offset: usize,
    pub(crate) text: &'a str,
}

impl<'a> Token<'a> {
    /// Splits at the first `separator`, returning the parts before and after.
    pub(crate) fn split_once(self, separator: char) -> Option<(Token<'a>, Token<'a>)> {
        let at = self.text.find(separator)?;
        let after = at + separator.len_utf8();
        Some((
            Token { offset: self.offset, text: &self.text[..at] },
            Token { offset: self.offset + after, text: &self.text[after..] },
        ))
    }

    pub(crate) fn split(self, separator: char) -> impl Iterator<Item = Token<'a>> {
        let mut start = 0;
        self.text.split(separator).map(move |part| {
            let token = Token { offset: self.offset + start, text: part };
            start += part.len() + separator.len_utf8();
            token
        })
    }

    pub(crate) fn upper(self) -> String {
        self.text.to_ascii_uppercase()
    }
}

/// Whitespace-separated tokens of `text`, which starts at byte `base` of the
/// source.
pub(crate) fn tokens(text: &str, base: usize) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push(Token { offset: base + s, text: &text[s..i] });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Token { offset: base + s, text: &text[s..] });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_track_offsets_across_multiple_spaces() {
        let found: Vec<(usize, &str)> = tokens("  0  2\t? ", 10).iter().map(|t| (t.offset, t.text)).collect();
        assert_eq!(found, [(12, "0"), (15, "2"), (17, "?")]);
    }

    #[test]
    fn split_keeps_offsets() {
        let token = Token { offset: 5, text: "1,22,,3" };
        let parts: Vec<(usize, &str)> = token.split(',').map(|t| (t.offset, t.text)).collect();
        assert_eq!(parts, [(5, "1"), (7, "22"), (10, ""), (11, "3")]);
    }
}
