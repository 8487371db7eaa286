//! Reading JSON request bodies of the account and admin APIs strictly: every field is typed and bounded,
//! unknown fields are refused, and each refusal is a 400 that names the field (`param`).

use crate::error::ApiError;
use crate::model::FitPolicy;
use crate::model::keys::{MAX_ALLOWED_MODELS, MAX_MODEL_ID_BYTES};
use serde_json::{Map, Value};

/// Largest ngonka amount the store can hold (`i64`).
pub const MAX_NGONKA: u64 = i64::MAX as u64;
/// Highest requests-per-minute limit accepted.
pub const MAX_RPM: u64 = 10_000_000;

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message, Some(field))
}

/// The members of a JSON object body, taken one by one.
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    /// An empty body counts as `{}`.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self { map: Map::new() });
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Self { map }),
            Ok(_) => Err(ApiError::bad_request("The request body must be a JSON object.", None)),
            Err(e) => Err(ApiError::bad_request(format!("The request body is not valid JSON: {e}"), None)),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// A name: a string of 1–100 characters (not only whitespace).
    pub fn name(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n == 0 || n > 100 || s.trim().is_empty() {
                    Err(bad(key, format!("`{key}` must be 1 to 100 characters.")))
                } else if s.chars().any(char::is_control) {
                    Err(bad(key, format!("`{key}` must not contain control characters.")))
                } else {
                    Ok(Some(s))
                }
            }
            Some(_) => Err(bad(key, format!("`{key}` must be a string."))),
        }
    }

    pub fn required_name(&mut self, key: &str) -> Result<String, ApiError> {
        self.name(key)?.ok_or_else(|| bad(key, format!("`{key}` is required.")))
    }

    /// A short free-form string (a reference): 1–200 characters.
    pub fn text(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 200 => Ok(Some(s)),
            Some(_) => Err(bad(key, format!("`{key}` must be a string of 1 to 200 characters."))),
        }
    }

    /// An ngonka amount: a decimal string (or integer) from 0 to [`MAX_NGONKA`]. `Some(None)` for null.
    pub fn amount(&mut self, key: &str) -> Result<Option<Option<u64>>, ApiError> {
        let err = || {
            bad(key, format!("`{key}` must be a non-negative integer amount of ngonka, as a decimal string."))
        };
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => {
                if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                let v: u64 = s.parse().map_err(|_| err())?;
                if v > MAX_NGONKA { Err(err()) } else { Ok(Some(Some(v))) }
            }
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v <= MAX_NGONKA => Ok(Some(Some(v))),
                _ => Err(err()),
            },
            Some(_) => Err(err()),
        }
    }

    /// A signed ngonka amount (a credit or, negative, an adjustment): a decimal string (or integer) that
    /// fits `i64`, not `i64::MIN`.
    pub fn signed_amount(&mut self, key: &str) -> Result<Option<i64>, ApiError> {
        let err = || {
            bad(
                key,
                format!(
                    "`{key}` must be an integer amount of ngonka, as a decimal string (negative: taken back)."
                ),
            )
        };
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => {
                let digits = s.strip_prefix('-').unwrap_or(&s);
                if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                match s.parse::<i64>() {
                    Ok(v) if v != i64::MIN => Ok(Some(v)),
                    _ => Err(err()),
                }
            }
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if v != i64::MIN => Ok(Some(v)),
                _ => Err(err()),
            },
            Some(_) => Err(err()),
        }
    }

    /// `true` or `false`.
    pub fn boolean(&mut self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(bad(key, format!("`{key}` must be true or false."))),
        }
    }

    /// A requests-per-minute limit: an integer from 1 to [`MAX_RPM`]. `Some(None)` for null.
    pub fn rpm(&mut self, key: &str) -> Result<Option<Option<u32>>, ApiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_RPM).contains(&n) => Ok(Some(Some(n as u32))),
                _ => Err(bad(key, format!("`{key}` must be an integer from 1 to {MAX_RPM}."))),
            },
        }
    }

    /// A future time in RFC 3339, as Unix seconds. `Some(None)` for null.
    pub fn future_time(&mut self, key: &str, now_unix: i64) -> Result<Option<Option<i64>>, ApiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => match crate::time::parse_rfc3339(&s) {
                Some(t) if t > now_unix => Ok(Some(Some(t))),
                Some(_) => Err(bad(key, format!("`{key}` must be in the future."))),
                None => {
                    Err(bad(key, format!("`{key}` must be an RFC 3339 time, like 2027-01-31T00:00:00Z.")))
                }
            },
            Some(_) => Err(bad(key, format!("`{key}` must be an RFC 3339 time string."))),
        }
    }

    /// One of `allowed` strings.
    pub fn choice(&mut self, key: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s)),
            Some(_) => Err(bad(key, format!("`{key}` must be one of: {}.", allowed.join(", ")))),
        }
    }

    /// Refuses whatever was not taken.
    /// A key's fit policy: `"unset"`, `"always"` or `"never"`; `null` = back to the config's default.
    pub fn fit_policy(&mut self, key: &str) -> Result<Option<Option<FitPolicy>>, ApiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) if FitPolicy::parse(&s).is_some() => Ok(Some(FitPolicy::parse(&s))),
            Some(_) => Err(bad(key, format!("`{key}` must be \"unset\", \"always\", \"never\" or null."))),
        }
    }

    /// A key's model list: an array of 1 to [`MAX_ALLOWED_MODELS`] model ids (or aliases), each 1 to
    /// [`MAX_MODEL_ID_BYTES`] bytes without control characters; `Some(None)` for null (every model).
    /// Whether each names a model is the control plane's check.
    pub fn model_list(&mut self, key: &str) -> Result<Option<Option<Vec<String>>>, ApiError> {
        let err = || {
            bad(
                key,
                format!(
                    "`{key}` must be null or an array of 1 to {MAX_ALLOWED_MODELS} model ids, each a string \
                     of 1 to {MAX_MODEL_ID_BYTES} bytes."
                ),
            )
        };
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::Array(items)) if (1..=MAX_ALLOWED_MODELS).contains(&items.len()) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s)
                            if !s.is_empty()
                                && s.len() <= MAX_MODEL_ID_BYTES
                                && !s.chars().any(char::is_control) =>
                        {
                            out.push(s);
                        }
                        _ => return Err(err()),
                    }
                }
                Ok(Some(Some(out)))
            }
            Some(_) => Err(err()),
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        match self.map.keys().next() {
            Some(k) => Err(bad(k, format!("Unknown field `{k}`."))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Fields {
        Fields::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn amounts() {
        assert_eq!(f(r#"{"a":"500"}"#).amount("a").unwrap(), Some(Some(500)));
        assert_eq!(f(r#"{"a":500}"#).amount("a").unwrap(), Some(Some(500)));
        assert_eq!(f(r#"{"a":null}"#).amount("a").unwrap(), Some(None));
        assert_eq!(f("{}").amount("a").unwrap(), None);
        for bad in
            [r#""-1""#, r#""1.5""#, r#""""#, r#""9223372036854775808""#, "-1", "1.5", "true", r#""1e3""#]
        {
            let e = f(&format!(r#"{{"a":{bad}}}"#)).amount("a").unwrap_err();
            assert_eq!(e.param(), Some("a"), "{bad}");
        }
        assert_eq!(f(r#"{"a":"9223372036854775807"}"#).amount("a").unwrap(), Some(Some(i64::MAX as u64)));
    }

    #[test]
    fn signed_amounts() {
        assert_eq!(f(r#"{"a":"-500"}"#).signed_amount("a").unwrap(), Some(-500));
        assert_eq!(f(r#"{"a":"9223372036854775807"}"#).signed_amount("a").unwrap(), Some(i64::MAX));
        assert_eq!(f(r#"{"a":-7}"#).signed_amount("a").unwrap(), Some(-7));
        for bad in [r#""-""#, r#""+1""#, r#""1.5""#, r#""-9223372036854775809""#, r#""--1""#, "true", "1.5"] {
            assert!(f(&format!(r#"{{"a":{bad}}}"#)).signed_amount("a").is_err(), "{bad}");
        }
        assert!(f(r#"{"p":"yes"}"#).boolean("p").is_err());
        assert_eq!(f(r#"{"p":true}"#).boolean("p").unwrap(), Some(true));
    }

    #[test]
    fn names_and_unknown_fields() {
        assert!(f(r#"{"name":""}"#).name("name").is_err());
        assert!(f(&format!(r#"{{"name":"{}"}}"#, "x".repeat(101))).name("name").is_err());
        assert_eq!(
            f(&format!(r#"{{"name":"{}"}}"#, "é".repeat(100))).name("name").unwrap().unwrap().chars().count(),
            100
        );
        let mut x = f(r#"{"name":"ok","nmae":"typo"}"#);
        x.required_name("name").unwrap();
        assert_eq!(x.finish().unwrap_err().param(), Some("nmae"));
    }

    #[test]
    fn model_lists() {
        assert_eq!(
            f(r#"{"m":["a/b","c"]}"#).model_list("m").unwrap(),
            Some(Some(vec!["a/b".into(), "c".into()]))
        );
        assert_eq!(f(r#"{"m":null}"#).model_list("m").unwrap(), Some(None));
        assert_eq!(f("{}").model_list("m").unwrap(), None);
        let long = format!(r#"{{"m":["{}"]}}"#, "x".repeat(MAX_MODEL_ID_BYTES + 1));
        let many = format!(r#"{{"m":[{}]}}"#, vec![r#""a""#; MAX_ALLOWED_MODELS + 1].join(","));
        for bad in [
            r#"{"m":[]}"#,
            r#"{"m":[""]}"#,
            r#"{"m":[1]}"#,
            r#"{"m":"a"}"#,
            r#"{"m":["a\u0000"]}"#,
            &long,
            &many,
        ] {
            assert_eq!(f(bad).model_list("m").unwrap_err().param(), Some("m"), "{bad}");
        }
    }

    #[test]
    fn rpm_and_times() {
        assert_eq!(f(r#"{"r":60}"#).rpm("r").unwrap(), Some(Some(60)));
        assert!(f(r#"{"r":0}"#).rpm("r").is_err());
        assert!(f(r#"{"r":"60"}"#).rpm("r").is_err());
        assert_eq!(
            f(r#"{"t":"2030-01-01T00:00:00Z"}"#).future_time("t", 0).unwrap(),
            Some(Some(1_893_456_000))
        );
        assert!(f(r#"{"t":"2020-01-01T00:00:00Z"}"#).future_time("t", 1_800_000_000).is_err());
        assert!(f(r#"{"t":"soon"}"#).future_time("t", 0).is_err());
        assert!(Fields::parse(b"[1]").is_err());
        assert!(Fields::parse(b"").unwrap().finish().is_ok());
    }
}
