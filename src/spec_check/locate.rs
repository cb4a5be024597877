//! Map findings back to `line:col` in the source text.
//!
//! Syntax errors carry exact positions from serde_json / serde_norway. Semantic findings are
//! made on a parsed tree that has no positions, so they are located by scanning the text for
//! the key path: each key is searched for after the previous one, as a JSON string followed
//! by `:` or as a YAML mapping key. This is a heuristic (a key that also appears in an earlier
//! string value can attract the position), which is good enough to point a reader at the right
//! line; the message always names the key itself.

/// A 1-based position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Finds keys and values in one document's text.
#[derive(Debug)]
pub struct Locator<'t> {
    text: &'t str,
}

impl<'t> Locator<'t> {
    pub fn new(text: &'t str) -> Self {
        Self { text }
    }

    /// Line and column (in characters) of a byte offset.
    pub fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Pos { line, column }
    }

    /// Byte offset of the key path `keys` (each key searched after the previous one).
    /// Returns the offset of the deepest key found, or `None` when not even the first is.
    pub fn find_path(&self, keys: &[&str]) -> Option<usize> {
        let mut from = 0;
        let mut found = None;
        for key in keys {
            match self.find_key(key, from, 0) {
                Some(at) => {
                    found = Some(at);
                    from = at + key.len();
                }
                None => break,
            }
        }
        found
    }

    /// Position of `find_path`, for a diagnostic.
    pub fn locate(&self, keys: &[&str]) -> Option<Pos> {
        self.find_path(keys).map(|at| self.pos(at))
    }

    /// Offset of the `nth` (0-based) occurrence of `key` as a mapping key at or after `from`.
    pub fn find_key(&self, key: &str, from: usize, nth: usize) -> Option<usize> {
        if key.is_empty() {
            return None;
        }
        let mut seen = 0;
        let mut start = from;
        while let Some(rel) = self.text.get(start..)?.find(key) {
            let at = start + rel;
            if self.is_key_at(at, key) {
                if seen == nth {
                    return Some(self.quote_start(at));
                }
                seen += 1;
            }
            start = at + key.len();
        }
        None
    }

    /// Offset of the first occurrence of the string value `value` (quoted or bare) after `from`.
    pub fn find_value(&self, value: &str, from: usize) -> Option<usize> {
        if value.is_empty() {
            return None;
        }
        let mut start = from;
        while let Some(rel) = self.text.get(start..)?.find(value) {
            let at = start + rel;
            let before = self.text[..at].chars().next_back();
            let after = self.text[at + value.len()..].chars().next();
            let bounded = |c: Option<char>| {
                c.is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | ':')))
            };
            if bounded(before) && bounded(after) {
                return Some(self.quote_start(at));
            }
            start = at + value.len();
        }
        None
    }

    /// Include an opening quote in the reported column.
    fn quote_start(&self, at: usize) -> usize {
        match self.text[..at].chars().next_back() {
            Some('"' | '\'') => at - 1,
            _ => at,
        }
    }

    /// `key` at `at` is a mapping key: optionally quoted, then optional blanks and `:`; before
    /// it (and its quote) only blanks since the line start, or `{`, `,` or `- `.
    fn is_key_at(&self, at: usize, key: &str) -> bool {
        let before = &self.text[..at];
        let after = &self.text[at + key.len()..];
        let (before, after) = match (before.chars().next_back(), after.chars().next()) {
            (Some(q @ ('"' | '\'')), Some(q2)) if q == q2 => {
                (&before[..before.len() - 1], &after[1..])
            }
            (Some('"' | '\''), _) => return false,
            (_, Some('"' | '\'')) => return false,
            _ => (before, after),
        };
        if !after.trim_start_matches([' ', '\t']).starts_with(':') {
            return false;
        }
        let line_before = before.rsplit('\n').next().unwrap_or("");
        let trimmed = line_before.trim_end_matches([' ', '\t']);
        trimmed.is_empty()
            || trimmed.ends_with('{')
            || trimmed.ends_with(',')
            || trimmed
                .trim_start_matches([' ', '\t'])
                .chars()
                .all(|c| c == '-' || c == ' ')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_json_key_is_found_after_its_parent() {
        let text = "{\n  \"a\": {\"x\": 1},\n  \"b\": {\n    \"x\": 2\n  }\n}";
        let loc = Locator::new(text);
        assert_eq!(loc.locate(&["b", "x"]), Some(Pos { line: 4, column: 5 }));
        assert_eq!(loc.locate(&["a", "x"]), Some(Pos { line: 2, column: 9 }));
    }

    #[test]
    fn yaml_keys_and_values_in_text_are_told_apart() {
        let text = "description: paths are nice\npaths:\n  /a:\n    get: {}\n";
        let loc = Locator::new(text);
        assert_eq!(loc.locate(&["paths"]), Some(Pos { line: 2, column: 1 }));
        assert_eq!(
            loc.locate(&["paths", "/a", "get"]),
            Some(Pos { line: 4, column: 5 })
        );
        assert_eq!(loc.locate(&["nothere"]), None);
    }

    #[test]
    fn second_occurrence_and_values() {
        let text = "{\"k\": 1, \"k\": 2, \"v\": \"hs1.test\"}";
        let loc = Locator::new(text);
        assert_eq!(loc.find_key("k", 0, 1), Some(9));
        assert_eq!(loc.find_value("hs1.test", 0), Some(22));
        assert_eq!(loc.find_value("hs1", 0), None);
    }
}
