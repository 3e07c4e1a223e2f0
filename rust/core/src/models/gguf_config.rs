//! transformers' config.json for a GGUF file, from its metadata: the mapping transformers applies
//! when it loads one (`GGUF_CONFIG_MAPPING`). Hyper-parameters sit under the architecture's name
//! (`{arch}.block_count`, ...), special token ids under `tokenizer.ggml.*`.

use serde_json::{json, Map, Value};

use super::registry::GgufArchitecture;
use crate::error::Result;
use crate::format_err;
use crate::formats::gguf::{GgufFile, MetaValue};

/// A metadata value as JSON (numbers keep their integer or float kind; arrays are not needed).
fn to_json(v: &MetaValue) -> Value {
    match v {
        MetaValue::F32(x) => json!(f64::from(*x)),
        MetaValue::F64(x) => json!(x),
        MetaValue::Bool(x) => json!(x),
        MetaValue::String(s) => json!(s),
        MetaValue::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        other => match (other.as_u64(), other.as_i64()) {
            (Some(u), _) => json!(u),
            (None, Some(i)) => json!(i),
            (None, None) => Value::Null,
        },
    }
}

/// The Llama layout's hyper-parameters (llama.cpp's "llama" and "qwen2").
pub fn llama_family(file: &GgufFile, gguf: &GgufArchitecture) -> Result<Value> {
    let arch = gguf.name;
    let key = |name: &str| file.get(&format!("{arch}.{name}")).map(to_json);
    let required = |name: &str| {
        key(name).ok_or_else(|| {
            format_err!(
                "{}: GGUF metadata lacks {arch}.{name}",
                file.path().display()
            )
        })
    };
    let heads = required("attention.head_count")?;
    let hidden = required("embedding_length")?;
    // transformers: head_dim = hidden_size // num_attention_heads unless the file says otherwise.
    let split_head_dim = match (hidden.as_u64(), heads.as_u64()) {
        (Some(h), Some(n)) if n > 0 => json!(h / n),
        _ => Value::Null,
    };
    let intermediate_size = required("feed_forward_length")?;
    let num_hidden_layers = required("block_count")?;
    let token_count = file
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array)
        .map_or(0, <[MetaValue]>::len);
    let vocab_size = key("vocab_size")
        .or((token_count > 0).then(|| json!(token_count)))
        .ok_or_else(|| {
            format_err!(
                "{}: GGUF metadata gives no vocabulary size",
                file.path().display()
            )
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
        key("attention.head_count_kv").unwrap_or(heads.clone()),
    );
    set("num_attention_heads", heads);
    set(
        "head_dim",
        key("attention.key_length")
            .or(key("rope.dimension_count"))
            .unwrap_or(split_head_dim),
    );
    set(
        "rms_norm_eps",
        key("attention.layer_norm_rms_epsilon").unwrap_or(json!(1e-6)),
    );
    set(
        "rope_theta",
        key("rope.freq_base").unwrap_or(json!(10000.0)),
    );
    set(
        "max_position_embeddings",
        key("context_length").unwrap_or(json!(2048)),
    );
    set("vocab_size", vocab_size);
    // The loader falls back to the embedding when output.weight is absent.
    set("tie_word_embeddings", json!(false));
    match key("rope.scaling.type") {
        None => {}
        Some(Value::String(s)) if s == "none" => {}
        Some(kind) => set(
            "rope_scaling",
            json!({
                "rope_type": kind,
                "factor": key("rope.scaling.factor").unwrap_or(json!(1.0)),
                "original_max_position_embeddings":
                    key("rope.scaling.original_context_length").unwrap_or(Value::Null),
            }),
        ),
    }
    for name in ["bos", "eos", "pad", "unk"] {
        if let Some(id) = file.get(&format!("tokenizer.ggml.{name}_token_id")) {
            set(&format!("{name}_token_id"), to_json(id));
        }
    }
    Ok(Value::Object(config))
}
