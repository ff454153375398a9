//! IANA timezone names.

use chrono_tz::{Tz, TZ_VARIANTS};

use crate::ParseError;

/// Parses an IANA timezone name such as `Europe/Berlin` or `UTC`.
///
/// Names are case-sensitive, as in the tz database and in SSM; a name that
/// only differs in case is rejected with a hint naming the right spelling.
pub fn parse_timezone(name: &str) -> Result<Tz, ParseError> {
    if let Ok(tz) = name.parse::<Tz>() {
        return Ok(tz);
    }
    let trimmed = name.trim();
    let error = ParseError::new(format!("unknown timezone `{name}`"), 0);
    if trimmed.is_empty() {
        return Err(ParseError::new("timezone is empty", 0)
            .hint("use an IANA name such as \"UTC\" or \"Europe/Berlin\""));
    }
    let same_but_case = TZ_VARIANTS.iter().find(|tz| tz.name().eq_ignore_ascii_case(trimmed));
    Err(match same_but_case {
        Some(tz) => error.hint(format!("did you mean \"{}\"?", tz.name())),
        None => error.hint("use an IANA name such as \"UTC\" or \"Europe/Berlin\""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_parse() {
        assert_eq!(parse_timezone("UTC"), Ok(Tz::UTC));
        assert_eq!(parse_timezone("Europe/Berlin"), Ok(Tz::Europe__Berlin));
        assert_eq!(parse_timezone("Australia/Lord_Howe"), Ok(Tz::Australia__Lord_Howe));
    }

    #[test]
    fn wrong_case_suggests_the_right_spelling() {
        let err = parse_timezone("europe/berlin").err();
        assert_eq!(err.as_ref().map(|e| e.message.as_str()), Some("unknown timezone `europe/berlin`"));
        assert_eq!(err.and_then(|e| e.hint), Some("did you mean \"Europe/Berlin\"?".to_owned()));
    }

    #[test]
    fn unknown_names_suggest_examples() {
        let err = parse_timezone("Mars/Olympus").err();
        assert_eq!(err.as_ref().map(|e| e.offset), Some(0));
        assert!(err.and_then(|e| e.hint).is_some_and(|h| h.contains("Europe/Berlin")));
        assert!(parse_timezone("").is_err());
        assert!(parse_timezone(" UTC").is_err());
    }
}
