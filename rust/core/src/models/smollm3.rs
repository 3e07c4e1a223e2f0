//! SmolLM3: Llama's block, with rotary embeddings only on the layers whose `no_rope_layers` entry
//! is nonzero (by default every layer but each `no_rope_layer_interval`-th), tied embeddings and
//! rope_theta 2e6 by default; sliding windows where `layer_types` (by default: the no-rope
//! layers, with `use_sliding_window` and a `sliding_window`) says.

use serde_json::Value;

use super::config_checks::{get_bool, get_usize, parse_object, positive};
use super::llama::{windows_from_layer_types, LlamaConfig, LlamaDefaults};
use super::registry::{ModelConfig, LLAMA_DEFAULTS};
use crate::error::Result;
use crate::format_err;

const DEFAULTS: LlamaDefaults = LlamaDefaults {
    vocab_size: 128256,
    hidden_size: 2048,
    num_hidden_layers: 36,
    num_attention_heads: 16,
    num_key_value_heads: Some(4),
    max_position_embeddings: 32768,
    rope_theta: 2_000_000.0,
    tie_word_embeddings: true,
    ..LLAMA_DEFAULTS
};

pub fn config(arch: &str, json: &str) -> Result<Box<dyn ModelConfig>> {
    let mut cfg = LlamaConfig::from_json(arch, json, &DEFAULTS)?;
    let v = parse_object(json)?;
    let layers = cfg.num_hidden_layers;
    let rope = rope_layers(&v, layers)?;
    // The sliding mask reads `sliding_window` whatever `use_sliding_window` says; only the
    // default layer types depend on the latter.
    let window = get_usize(&v, "sliding_window")?
        .map(|w| positive("sliding_window", w))
        .transpose()?;
    let use_window = get_bool(&v, "use_sliding_window")?.unwrap_or(false);
    cfg.layer_windows = windows_from_layer_types(&v, layers, window, |i| {
        use_window && window.is_some() && !rope[i]
    })?;
    cfg.layer_rope = rope;
    Ok(Box::new(cfg))
}

/// transformers' `no_rope_layers`: layer `i` rotates iff its entry is nonzero; by default iff
/// `(i + 1) % no_rope_layer_interval != 0`.
fn rope_layers(v: &Value, layers: usize) -> Result<Vec<bool>> {
    match v.get("no_rope_layers").filter(|x| !x.is_null()) {
        None => {
            let interval = positive(
                "no_rope_layer_interval",
                get_usize(v, "no_rope_layer_interval")?.unwrap_or(4),
            )?;
            Ok((0..layers).map(|i| (i + 1) % interval != 0).collect())
        }
        Some(list) => {
            let list = list.as_array().filter(|l| l.len() == layers).ok_or_else(|| {
                format_err!("config.json: no_rope_layers must be a list of {layers} integers, got {list}")
            })?;
            list.iter()
                .map(|x| match (x.as_i64(), x.as_bool()) {
                    (Some(n), _) => Ok(n != 0),
                    (None, Some(b)) => Ok(b),
                    _ => Err(format_err!(
                        "config.json: no_rope_layers entries must be integers, got {x}"
                    )),
                })
                .collect()
        }
    }
}
