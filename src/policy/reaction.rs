//! A_26228-01: a reaction (`m.reaction`) key is exactly one emoji. Counted in grapheme
//! clusters, so flags, skin tones and ZWJ sequences are one emoji each.

use serde_json::Value;
use unicode_segmentation::UnicodeSegmentation;

use crate::error::MatrixError;

pub const RULE: &str = "A_26228-01";
pub const RULE_REL_TYPE: &str = "reaction-rel-type";
pub const EVENT_TYPE: &str = "m.reaction";

fn is_emoji_grapheme(g: &str) -> bool {
    if emojis::get(g).is_some() {
        return true;
    }
    // Variants the emoji table may lack (e.g. without/with VS16): retry without selectors.
    let stripped: String = g
        .chars()
        .filter(|c| *c != '\u{FE0F}' && *c != '\u{FE0E}')
        .collect();
    !stripped.is_empty() && emojis::get(&stripped).is_some()
}

/// The key of a reaction, when it has a non-blank one (blank keys are not checked, like the
/// reference).
fn key(content: &Value) -> Option<&str> {
    content
        .get("m.relates_to")
        .and_then(|r| r.get("key"))
        .and_then(Value::as_str)
        .filter(|k| !k.trim().is_empty())
}

/// A_26228-01: the key is exactly one emoji.
pub fn check_key(content: &Value) -> Result<(), MatrixError> {
    let Some(key) = key(content) else {
        return Ok(());
    };
    if key.graphemes(true).count() != 1 {
        return Err(MatrixError::bad_json(
            "Reaction key must not be longer than one emoji \u{2013} see A_26228-01",
            RULE,
        ));
    }
    if !is_emoji_grapheme(key) {
        return Err(MatrixError::bad_json("Key must only contain emoji", RULE));
    }
    Ok(())
}

/// `reaction-rel-type` (reference behaviour): a keyed reaction is an `m.annotation`.
pub fn check_rel_type(content: &Value) -> Result<(), MatrixError> {
    if key(content).is_none() {
        return Ok(());
    }
    let rel_type = content
        .get("m.relates_to")
        .and_then(|r| r.get("rel_type"))
        .and_then(Value::as_str);
    if rel_type != Some("m.annotation") {
        return Err(MatrixError::bad_json(
            "RelType must be 'm.annotation'",
            RULE_REL_TYPE,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check_reaction(content: &Value) -> Result<(), MatrixError> {
        check_key(content)?;
        check_rel_type(content)
    }

    fn reaction(key: &str) -> Value {
        json!({"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":key}})
    }

    #[test]
    fn single_emoji_including_sequences_allowed() {
        for key in ["👍", "👍🏽", "🇩🇪", "👨‍👩‍👧", "❤️"] {
            assert!(check_reaction(&reaction(key)).is_ok(), "{key}");
        }
    }

    #[test]
    fn several_emojis_or_text_refused() {
        assert!(
            check_reaction(&reaction("👍👍"))
                .unwrap_err()
                .error
                .contains("longer than one emoji")
        );
        assert_eq!(
            check_reaction(&reaction("a")).unwrap_err().error,
            "Key must only contain emoji"
        );
        assert_eq!(
            check_reaction(&reaction("1")).unwrap_err().error,
            "Key must only contain emoji"
        );
    }

    #[test]
    fn wrong_rel_type_refused_blank_key_ignored() {
        let err = check_reaction(&json!({"m.relates_to":{"rel_type":"m.reference","key":"👍"}}))
            .unwrap_err();
        assert_eq!(err.error, "RelType must be 'm.annotation'");
        assert!(check_reaction(&json!({"m.relates_to":{"key":" "}})).is_ok());
    }
}
