//! XML text escaping for the replies of the Query and REST-XML protocols (EC2, STS, S3) and the
//! vendor feeds: the one rule every XML document the simulator writes shares.

/// `text` safe as XML character data or as an attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
    out
}
