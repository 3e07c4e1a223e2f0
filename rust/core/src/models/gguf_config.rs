//! transformers' config.json for a GGUF file, from its metadata: the mapping transformers applies
//! when it loads one (`GGUF_CONFIG_MAPPING`). Hyper-parameters sit under the architecture's name
//! (`{arch}.block_count`, ...), special token ids under `tokenizer.ggml.*`.
//!
//! Every value is read with the type its key needs (a count is a non-negative integer of any
//! integer type, an epsilon any number, ...); any other type is a format error naming the key,
//! so a string or float where a count belongs never reaches the model's config.

use serde_json::{json, Map, Value};

use super::registry::GgufArchitecture;
use crate::error::{Error, Result};
use crate::format_err;
use crate::formats::gguf::{GgufFile, MetaValue};

/// Reads typed metadata values of one file, for one architecture's keys.
struct Keys<'f> {
    file: &'f GgufFile,
    arch: &'static str,
}

impl<'f> Keys<'f> {
    /// `key`'s value converted by `convert` (absent: `None`), or an error naming the key and
    /// saying what it should have been.
    fn typed<T>(
        &self,
        key: &str,
        expected: &str,
        convert: impl Fn(MetaValue<'f>) -> Option<T>,
    ) -> Result<Option<T>> {
        let Some(v) = self.file.get(key) else {
            return Ok(None);
        };
        convert(v).map(Some).ok_or_else(|| {
            let shown = match v {
                MetaValue::Array(a) => format!("an array of {} {}", a.len(), a.elem_type_name()),
                MetaValue::String(s) if s.len() > 40 => format!("a {}-byte string", s.len()),
                other => format!("{} {other:?}", other.type_name()),
            };
            format_err!(
                "{}: GGUF metadata {key} must be {expected}, got {shown}",
                self.file.path().display()
            )
        })
    }

    fn int(&self, key: &str) -> Result<Option<Value>> {
        Ok(self
            .typed(key, "a non-negative integer", MetaValue::as_u64)?
            .map(|v| json!(v)))
    }

    fn float(&self, key: &str) -> Result<Option<Value>> {
        Ok(self
            .typed(key, "a number", MetaValue::as_f64)?
            .map(|v| json!(v)))
    }

    fn string(&self, key: &str) -> Result<Option<Value>> {
        Ok(self
            .typed(key, "a string", MetaValue::as_str)?
            .map(|v| json!(v)))
    }

    /// `{arch}.{name}`: an architecture hyper-parameter.
    fn arch_key(&self, name: &str) -> String {
        format!("{}.{name}", self.arch)
    }

    fn arch_int(&self, name: &str) -> Result<Option<Value>> {
        self.int(&self.arch_key(name))
    }

    fn arch_float(&self, name: &str) -> Result<Option<Value>> {
        self.float(&self.arch_key(name))
    }

    fn required_int(&self, name: &str) -> Result<Value> {
        self.arch_int(name)?.ok_or_else(|| {
            format_err!(
                "{}: GGUF metadata lacks {}",
                self.file.path().display(),
                self.arch_key(name)
            )
        })
    }
}

/// The Llama layout's hyper-parameters (llama.cpp's "llama" and "qwen2").
pub fn llama_family(file: &GgufFile, gguf: &GgufArchitecture) -> Result<Value> {
    let keys = Keys {
        file,
        arch: gguf.name,
    };
    let heads = keys.required_int("attention.head_count")?;
    let hidden = keys.required_int("embedding_length")?;
    // transformers: head_dim = hidden_size // num_attention_heads unless the file says otherwise.
    let split_head_dim = match (hidden.as_u64(), heads.as_u64()) {
        (Some(h), Some(n)) if n > 0 => json!(h / n),
        _ => Value::Null,
    };
    let intermediate_size = keys.required_int("feed_forward_length")?;
    let num_hidden_layers = keys.required_int("block_count")?;
    // Every layer stores tensors of its own: a count beyond the file's tensors is corrupt, and
    // believing it would size per-layer tables for it (15 GB for 973 million layers, found by the
    // gguf_model fuzz target) before any missing tensor is noticed.
    let tensor_count = file.tensors().len();
    if num_hidden_layers
        .as_u64()
        .is_some_and(|n| n > tensor_count as u64)
    {
        return Err(format_err!(
            "{}: block_count {num_hidden_layers} but the file holds only {tensor_count} tensors",
            file.path().display()
        ));
    }
    let token_count = file
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array)
        .map_or(0, |a| a.len());
    let vocab_size = keys
        .arch_int("vocab_size")?
        .or((token_count > 0).then(|| json!(token_count)))
        .ok_or_else(|| {
            Error::Format(format!(
                "{}: GGUF metadata gives no vocabulary size",
                file.path().display()
            ))
        })?;
    let mut config = Map::new();
    let mut set = |k: &str, v: Value| {
        config.insert(k.to_string(), v);
    };
    set("hidden_size", hidden);
    set("intermediate_size", intermediate_size);
    set("num_hidden_layers", num_hidden_layers);
    set(
        "num_key_value_heads",
        keys.arch_int("attention.head_count_kv")?
            .unwrap_or(heads.clone()),
    );
    set("num_attention_heads", heads);
    set(
        "head_dim",
        match keys.arch_int("attention.key_length")? {
            Some(v) => v,
            None => keys
                .arch_int("rope.dimension_count")?
                .unwrap_or(split_head_dim),
        },
    );
    set(
        "rms_norm_eps",
        keys.arch_float("attention.layer_norm_rms_epsilon")?
            .unwrap_or(json!(1e-6)),
    );
    set(
        "rope_theta",
        keys.arch_float("rope.freq_base")?.unwrap_or(json!(10000.0)),
    );
    set(
        "max_position_embeddings",
        keys.arch_int("context_length")?.unwrap_or(json!(2048)),
    );
    set("vocab_size", vocab_size);
    // The loader falls back to the embedding when output.weight is absent.
    set("tie_word_embeddings", json!(false));
    match keys.string(&keys.arch_key("rope.scaling.type"))? {
        None => {}
        Some(Value::String(s)) if s == "none" => {}
        Some(kind) => set(
            "rope_scaling",
            json!({
                "rope_type": kind,
                "factor": keys.arch_float("rope.scaling.factor")?.unwrap_or(json!(1.0)),
                "original_max_position_embeddings":
                    keys.arch_int("rope.scaling.original_context_length")?.unwrap_or(Value::Null),
            }),
        ),
    }
    for name in ["bos", "eos", "pad", "unk"] {
        if let Some(id) = keys.int(&format!("tokenizer.ggml.{name}_token_id"))? {
            set(&format!("{name}_token_id"), id);
        }
    }
    Ok(Value::Object(config))
}

/// llama.cpp's "phi3": the Llama layout's keys, except that `rope.dimension_count` is the number of
/// rotating dimensions (Phi-4-mini rotates 3/4 of each head), not the head size; and LongRoPE
/// models carry their factors as the tensors `rope_factors_short` / `rope_factors_long`, with
/// `rope.scaling.original_context_length` and `rope.scaling.attn_factor`. (transformers' GGUF
/// loader reads neither: it would rotate whole heads without the factors.)
pub fn phi3(file: &GgufFile, gguf: &GgufArchitecture) -> Result<Value> {
    use crate::formats::WeightSource;

    let keys = Keys {
        file,
        arch: gguf.name,
    };
    let mut config = llama_family(file, gguf)?;
    let (hidden, heads) = (
        keys.required_int("embedding_length")?,
        keys.required_int("attention.head_count")?,
    );
    let head_dim = match keys.arch_int("attention.key_length")? {
        Some(v) => v.as_u64(),
        None => hidden
            .as_u64()
            .zip(heads.as_u64())
            .and_then(|(h, n)| h.checked_div(n)),
    }
    .unwrap_or(0);
    config["head_dim"] = json!(head_dim);
    if let Some(rotary) = keys
        .arch_int("rope.dimension_count")?
        .and_then(|v| v.as_u64())
    {
        if rotary != head_dim && head_dim > 0 {
            config["partial_rotary_factor"] = json!(rotary as f64 / head_dim as f64);
        }
    }
    let (short, long) = ("rope_factors_short.weight", "rope_factors_long.weight");
    if file.contains(short) || file.contains(long) {
        let original = keys
            .arch_int("rope.scaling.original_context_length")?
            .ok_or_else(|| {
                format_err!(
                    "{}: GGUF has LongRoPE factors but no {}",
                    file.path().display(),
                    keys.arch_key("rope.scaling.original_context_length")
                )
            })?;
        let mut scaling = json!({
            "rope_type": "longrope",
            "short_factor": file.tensor(short)?.data(),
            "long_factor": file.tensor(long)?.data(),
        });
        if let Some(f) = keys.arch_float("rope.scaling.attn_factor")? {
            scaling["attention_factor"] = f;
        }
        config["rope_scaling"] = scaling;
        config["original_max_position_embeddings"] = original;
    }
    Ok(config)
}

/// Gemma 2 and Gemma 3 (llama.cpp's "gemma2" and "gemma3"): the Llama layout's keys, and what
/// llama.cpp reads beside them. transformers' GGUF loader maps only the sliding window of these;
/// the rest it leaves at its class defaults, which are the values of the released models where
/// llama.cpp agrees with them, so the file's own values are taken here, as llama.cpp takes them:
///
/// * the attention scale: llama.cpp's `1/sqrt(head_dim)`, except for the 27B models
///   (Gemma 2: 46 blocks; Gemma 3: 62), scaled by `hidden/heads`: as `query_pre_attn_scalar`;
/// * Gemma 2's `attn_logit_softcapping` / `final_logit_softcapping` (defaults 50 / 30, as in
///   both);
/// * Gemma 3's local rotary base (`rope.freq_base_swa`, else 10000 in both), its global rotary
///   scaling (`rope.scaling.*`), and a `attention.sliding_window_pattern` (a period, or one flag
///   per layer) where a file gives one (else every 6th layer is global, in both).
pub fn gemma_family(file: &GgufFile, gguf: &GgufArchitecture) -> Result<Value> {
    let mut config = llama_family(file, gguf)?;
    let keys = Keys {
        file,
        arch: gguf.name,
    };
    let gemma2 = gguf.name == "gemma2";
    let big = if gemma2 { 46 } else { 62 };
    let per_head = |c: &Value| -> Option<u64> {
        let (h, n) = (
            c["hidden_size"].as_u64()?,
            c["num_attention_heads"].as_u64()?,
        );
        (n > 0).then(|| h / n)
    };
    let scalar = if config["num_hidden_layers"].as_u64() == Some(big) {
        per_head(&config).map(|v| json!(v))
    } else {
        Some(config["head_dim"].clone())
    };
    let mut set = |k: &str, v: Value| {
        config[k] = v;
    };
    if let Some(scalar) = scalar {
        set("query_pre_attn_scalar", scalar);
    }
    if let Some(w) = keys.arch_int("attention.sliding_window")? {
        set("sliding_window", w);
    }
    if let Some(cap) = keys.float(&keys.arch_key("attn_logit_softcapping"))? {
        if gemma2 {
            set("attn_logit_softcapping", cap);
        }
    }
    if let Some(cap) = keys.float(&keys.arch_key("final_logit_softcapping"))? {
        set("final_logit_softcapping", cap);
    }
    if !gemma2 {
        if let Some(base) = keys.arch_float("rope.freq_base_swa")? {
            set("rope_local_base_freq", base);
        }
        let pattern_key = keys.arch_key("attention.sliding_window_pattern");
        match file.get(&pattern_key) {
            None => {}
            Some(MetaValue::Array(flags)) => {
                let types = (0..flags.len())
                    .map(|i| match flags.get(i).and_then(MetaValue::as_bool) {
                        Some(true) => Ok(json!("sliding_attention")),
                        Some(false) => Ok(json!("full_attention")),
                        None => Err(format_err!(
                            "{}: GGUF metadata {pattern_key} must hold booleans",
                            file.path().display()
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                set("layer_types", Value::Array(types));
            }
            Some(_) => {
                let period = keys.int(&pattern_key)?;
                set("sliding_window_pattern", period.unwrap_or(Value::Null));
            }
        }
    }
    Ok(config)
}
