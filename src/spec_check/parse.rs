//! Parsing documents into one tree type (`serde_json::Value`) with syntax-error positions,
//! plus the one check a `Value` cannot express: duplicate keys in JSON objects (serde_json
//! silently keeps the last one, so a permission config with a key twice means something
//! else than its author may think).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::locate::Pos;

/// A syntax error with its position when the parser reports one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Option<Pos>,
    pub message: String,
}

/// Does the text look like JSON (first non-blank character `{` or `[`)?
pub fn looks_like_json(text: &str) -> bool {
    matches!(text.trim_start().chars().next(), Some('{' | '['))
}

pub fn parse_json(text: &str) -> Result<Value, SyntaxError> {
    serde_json::from_str(text).map_err(|e| SyntaxError {
        pos: (e.line() > 0).then(|| Pos {
            line: e.line(),
            column: e.column().max(1),
        }),
        message: strip_position_suffix(&e.to_string()),
    })
}

/// Parse YAML (a superset of JSON) and convert it to a JSON tree; non-string mapping keys
/// (OpenAPI response codes such as `200:`) become their YAML text.
pub fn parse_yaml(text: &str) -> Result<Value, SyntaxError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| SyntaxError {
        pos: e.location().map(|l| Pos {
            line: l.line(),
            column: l.column(),
        }),
        message: strip_position_suffix(&e.to_string()),
    })?;
    Ok(yaml_to_json(value))
}

/// JSON by its first character, else YAML.
pub fn parse_any(text: &str) -> Result<Value, SyntaxError> {
    if looks_like_json(text) {
        parse_json(text)
    } else {
        parse_yaml(text)
    }
}

/// serde_json and serde_norway append " at line L column C"; the diagnostic prefix says it.
fn strip_position_suffix(message: &str) -> String {
    match message.find(" at line ") {
        Some(idx) => message[..idx].to_owned(),
        None => message.to_owned(),
    }
}

fn yaml_to_json(value: serde_yaml::Value) -> Value {
    match value {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else {
                n.as_f64()
                    .and_then(Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => {
            Value::Array(items.into_iter().map(yaml_to_json).collect())
        }
        serde_yaml::Value::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    serde_yaml::Value::String(s) => s,
                    other => serde_yaml::to_string(&other)
                        .map(|s| s.trim_end().to_owned())
                        .unwrap_or_default(),
                };
                out.insert(key, yaml_to_json(v));
            }
            Value::Object(out)
        }
        serde_yaml::Value::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// A key that occurs more than once in one JSON object: the path of the object and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub parent: Vec<String>,
    pub key: String,
}

/// Every duplicate key of a JSON text (empty if the text is not valid JSON; syntax errors are
/// reported by [`parse_json`]).
pub fn duplicate_keys(text: &str) -> Vec<DuplicateKey> {
    let found = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Scan {
        path: Vec::new(),
        found: &found,
    };
    if seed.deserialize(&mut de).is_err() {
        return Vec::new();
    }
    found.into_inner()
}

struct Scan<'a> {
    path: Vec<String>,
    found: &'a RefCell<Vec<DuplicateKey>>,
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let mut path = self.path.clone();
            path.push(format!("[{index}]"));
            let seed = Scan {
                path,
                found: self.found,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                self.found.borrow_mut().push(DuplicateKey {
                    parent: self.path.clone(),
                    key: key.clone(),
                });
            }
            let mut path = self.path.clone();
            path.push(key.clone());
            keys.push(key);
            map.next_value_seed(Scan {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_found_with_their_parent_path() {
        let dups = duplicate_keys(r#"{"a":{"x":1,"x":2},"b":[{"y":1,"y":1}],"a":0}"#);
        assert_eq!(
            dups,
            vec![
                DuplicateKey {
                    parent: vec!["a".into()],
                    key: "x".into()
                },
                DuplicateKey {
                    parent: vec!["b".into(), "[0]".into()],
                    key: "y".into()
                },
                DuplicateKey {
                    parent: vec![],
                    key: "a".into()
                },
            ]
        );
        assert!(duplicate_keys(r#"{"a":1}"#).is_empty());
    }

    #[test]
    fn syntax_errors_carry_positions() {
        let err = parse_json("{\n  \"a\": ,\n}").unwrap_err();
        assert_eq!(err.pos, Some(Pos { line: 2, column: 8 }));
        assert!(!err.message.contains(" at line "));
        let err = parse_yaml("a: [1, 2\n").unwrap_err();
        assert!(err.pos.is_some());
    }

    #[test]
    fn yaml_integer_keys_become_strings() {
        let v = parse_yaml("responses:\n  200: {description: ok}\n").unwrap();
        assert!(v["responses"]["200"].is_object());
    }
}
