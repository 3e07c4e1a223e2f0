//! Reading config.json values that size or shape a model, refusing the meaningless ones.
//!
//! A config comes from whoever published the model, so every value is checked before use: each
//! refusal names config.json, the key and the value. Sizes are multiplied here, with overflow
//! checked, because a product that wraps can land exactly on the real weights' shapes (heads
//! `2**62 + 6` x head_dim 12 wraps to 72) and then pass the load-time shape checks, only to index
//! out of bounds when the model runs. Once [`product`] accepted a config's products, the models
//! multiply the same sizes unchecked.

use serde_json::Value;

use crate::error::Result;
use crate::format_err;

/// config.json's text as its top-level object.
pub fn parse_object(json: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(json).map_err(|e| format_err!("config.json: {e}"))?;
    if !v.is_object() {
        return Err(format_err!("config.json: expected a JSON object"));
    }
    Ok(v)
}

/// `key` as a non-negative integer; `None` when absent or null (the caller's default applies).
pub fn get_usize(v: &Value, key: &str) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                format_err!("config.json: {key} must be a non-negative integer, got {x}")
            }),
    }
}

pub fn get_f64(v: &Value, key: &str) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| format_err!("config.json: {key} must be a number, got {x}")),
    }
}

pub fn get_bool(v: &Value, key: &str) -> Result<Option<bool>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_bool()
            .map(Some)
            .ok_or_else(|| format_err!("config.json: {key} must be true or false, got {x}")),
    }
}

pub fn get_str<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_str()
            .map(Some)
            .ok_or_else(|| format_err!("config.json: {key} must be a string, got {x}")),
    }
}

/// A count or size of which a model needs at least one (layers, heads, vocabulary, widths).
pub fn positive(key: &str, n: usize) -> Result<usize> {
    if n == 0 {
        return Err(format_err!("config.json: {key} must be positive, got 0"));
    }
    Ok(n)
}

/// The product of config sizes `(key, value)`, refused when it does not fit a `usize`.
pub fn product(factors: &[(&str, usize)]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &(_, n)| acc.checked_mul(n))
        .ok_or_else(|| {
            let terms: Vec<String> = factors.iter().map(|(k, n)| format!("{k} ({n})")).collect();
            format_err!(
                "config.json: {} overflows: the sizes are not those of a real model",
                terms.join(" x ")
            )
        })
}

/// A scale that must be strictly positive: rotary bases and scaling factors. The models compute in
/// f32, so the value must also be finite there.
pub fn positive_real(key: &str, x: f64) -> Result<f64> {
    if !(x > 0.0 && (x as f32).is_finite() && x as f32 > 0.0) {
        return Err(format_err!(
            "config.json: {key} must be a positive number, got {x}"
        ));
    }
    Ok(x)
}

/// A norm epsilon: added to a mean of squares before its square root, so a negative one makes NaNs.
pub fn epsilon(key: &str, x: f64) -> Result<f64> {
    if !(x >= 0.0 && (x as f32).is_finite()) {
        return Err(format_err!(
            "config.json: {key} must be a non-negative number, got {x}"
        ));
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_that_wrap_are_refused_with_their_keys() {
        assert_eq!(product(&[("a", 6), ("b", 12)]).unwrap(), 72);
        let err = product(&[("num_attention_heads", (1 << 62) + 6), ("head_dim", 12)])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("config.json")
                && err.contains("num_attention_heads (4611686018427387910)")
                && err.contains("head_dim (12)"),
            "{err}"
        );
    }

    #[test]
    fn getters_name_the_key_of_a_mistyped_value() {
        let v: Value = serde_json::json!({"n": -1, "x": "a", "b": 3, "s": 1, "z": null});
        let err = get_usize(&v, "n").err().unwrap().to_string();
        assert!(
            err.contains("config.json: n must be a non-negative integer, got -1"),
            "{err}"
        );
        assert!(get_f64(&v, "x")
            .err()
            .unwrap()
            .to_string()
            .contains("x must be a number"));
        assert!(get_bool(&v, "b")
            .err()
            .unwrap()
            .to_string()
            .contains("b must be true or false"));
        assert!(get_str(&v, "s")
            .err()
            .unwrap()
            .to_string()
            .contains("s must be a string"));
        assert_eq!(get_usize(&v, "z").unwrap(), None);
        assert_eq!(get_usize(&v, "absent").unwrap(), None);
    }

    #[test]
    fn meaningless_reals_are_refused() {
        assert!(positive_real("rope_theta", 10000.0).is_ok());
        for bad in [0.0, -1.0, 1e300, 1e-300] {
            assert!(positive_real("rope_theta", bad).is_err(), "{bad}");
        }
        assert!(epsilon("rms_norm_eps", 0.0).is_ok());
        assert!(epsilon("rms_norm_eps", 1e-6).is_ok());
        let err = epsilon("rms_norm_eps", -1.0).err().unwrap().to_string();
        assert!(err.contains("rms_norm_eps") && err.contains("-1"), "{err}");
        assert!(positive("vocab_size", 0).is_err());
    }
}
