//! A_26228-01: a reaction (`m.reaction`) key is exactly one emoji. Counted in grapheme
//! clusters, so flags, skin tones and ZWJ sequences are one emoji each.

use serde_json::Value;
use unicode_segmentation::UnicodeSegmentation;

use crate::error::MatrixError;

pub const RULE: &str = "A_26228-01";
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

pub fn check_reaction(content: &Value) -> Result<(), MatrixError> {
    let relates = content.get("m.relates_to");
    let key = relates.and_then(|r| r.get("key")).and_then(Value::as_str);
    let Some(key) = key.filter(|k| !k.trim().is_empty()) else {
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
    let rel_type = relates
        .and_then(|r| r.get("rel_type"))
        .and_then(Value::as_str);
    if rel_type != Some("m.annotation") {
        return Err(MatrixError::bad_json(
            "RelType must be 'm.annotation'",
            "reaction-rel-type",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
