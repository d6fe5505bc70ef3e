//! Patterns a key's kinds and queues are limited to: literal text where `*` stands for
//! any run of characters (`order.*`, `*.send`, `emails`).

use serde::{Deserialize, Serialize};

/// A validated pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Glob(String);

impl Glob {
    /// Parses a pattern: 1 to 128 characters of `a-z A-Z 0-9 . _ - *`.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 128 {
            return Err(format!("{text:?} must be 1 to 128 characters"));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*')))
        {
            return Err(format!(
                "{text:?} may hold only letters, digits, '.', '_', '-' and the wildcard '*', not {c:?}"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// Parses a comma-separated list (`order.*,billing.*`); empty entries are refused.
    ///
    /// # Errors
    /// The first bad pattern.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        text.split(',').map(|p| Self::parse(p.trim())).collect()
    }

    /// The pattern.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        fn go(pattern: &[u8], text: &[u8]) -> bool {
            match pattern.split_first() {
                None => text.is_empty(),
                Some((b'*', rest)) => (0..=text.len()).any(|i| go(rest, &text[i..])),
                Some((c, rest)) => text.first() == Some(c) && go(rest, &text[1..]),
            }
        }
        go(self.0.as_bytes(), text.as_bytes())
    }

    /// The same pattern for SQL `LIKE` (backslash escapes `_` and `%`).
    pub fn like_pattern(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 4);
        for c in self.0.chars() {
            match c {
                '*' => out.push('%'),
                '_' | '%' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        out
    }
}

impl TryFrom<String> for Glob {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<Glob> for String {
    fn from(glob: Glob) -> Self {
        glob.0
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_any_run_and_literals_match_exactly() {
        let orders = Glob::parse("order.*").unwrap();
        assert!(orders.matches("order.process"));
        assert!(orders.matches("order."));
        assert!(!orders.matches("email.send"));
        assert!(!orders.matches("xorder.process"));
        let sends = Glob::parse("*.send").unwrap();
        assert!(sends.matches("email.send"));
        assert!(!sends.matches("email.sender"));
        assert!(Glob::parse("noop").unwrap().matches("noop"));
        assert!(!Glob::parse("noop").unwrap().matches("noops"));
    }

    #[test]
    fn like_patterns_escape_what_like_would_read_as_wildcards() {
        assert_eq!(Glob::parse("order.*").unwrap().like_pattern(), "order.%");
        assert_eq!(Glob::parse("a_b*").unwrap().like_pattern(), "a\\_b%");
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(Glob::parse("").is_err());
        assert!(Glob::parse("order.%").unwrap_err().contains("'%'"));
        assert_eq!(Glob::parse_list("order.*, email.send").unwrap().len(), 2);
        assert!(Glob::parse_list("order.*,,x").is_err());
    }
}
