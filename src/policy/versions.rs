//! `GET /_matrix/client/versions` filter (TIM Matrix v1.11 baseline): advertise only spec
//! versions up to v1.11 and no unstable features, so clients do not use APIs the proxy does
//! not route.

use serde_json::Value;

/// Highest version advertised.
pub const MAX_VERSION: (u64, u64, u64) = (1, 11, 0);

/// `r0.6.1` / `v1.11` / `v1.2.3` → (major, minor, patch); `None` for unparsable strings.
pub fn parse_version(s: &str) -> Option<(u64, u64, u64)> {
    let rest = s.strip_prefix(['r', 'v']).unwrap_or(s);
    let mut parts = rest.splitn(3, '.');
    let num = |p: Option<&str>| -> Option<u64> {
        let p = p?;
        let digits: &str = &p[..p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len())];
        digits.parse().ok()
    };
    let major = num(parts.next())?;
    let minor = num(parts.next())?;
    let patch = match parts.next() {
        Some(p) => num(Some(p)).unwrap_or(0),
        None => 0,
    };
    Some((major, minor, patch))
}

/// Rewrite a `/versions` body: versions ≤ v1.11 sorted numerically, unparsable ones dropped,
/// `unstable_features` emptied; other fields kept. `None` if the body is not a JSON object
/// (then it is relayed untouched).
pub fn filter_versions(body: &[u8]) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let obj = value.as_object_mut()?;
    if let Some(Value::Array(versions)) = obj.get("versions") {
        let mut kept: Vec<((u64, u64, u64), Value)> = versions
            .iter()
            .filter_map(|v| {
                let parsed = parse_version(v.as_str()?)?;
                (parsed <= MAX_VERSION).then(|| (parsed, v.clone()))
            })
            .collect();
        kept.sort_by_key(|(parsed, _)| *parsed);
        obj.insert(
            "versions".to_owned(),
            Value::Array(kept.into_iter().map(|(_, v)| v).collect()),
        );
    }
    obj.insert(
        "unstable_features".to_owned(),
        Value::Object(serde_json::Map::new()),
    );
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_versions_above_v1_11_and_sorts_numerically() {
        let body = json!({"versions":["v1.12","v1.2","r0.6.1","v1.11","v1.10","v2.0","garbage"],
                          "unstable_features":{"org.matrix.msc3814":true},"extra":1});
        let out: Value =
            serde_json::from_slice(&filter_versions(body.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"versions":["r0.6.1","v1.2","v1.10","v1.11"],"unstable_features":{},"extra":1})
        );
    }

    #[test]
    fn non_object_bodies_are_left_alone() {
        assert_eq!(filter_versions(b"[1]"), None);
        assert_eq!(filter_versions(b"not json"), None);
    }
}
