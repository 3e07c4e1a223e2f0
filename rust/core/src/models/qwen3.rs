//! Qwen3: Llama's block with an RMSNorm over each head of q and k before the rotation
//! (`q_norm` / `k_norm`), an explicit `head_dim` (class default 128, not hidden / heads), biases
//! on q, k, v and o only with `attention_bias`, none in the feed-forward; sliding-window layers as
//! Qwen2's config describes them.

use serde_json::Value;

use super::config_checks::{get_bool, get_usize, parse_object, positive};
use super::llama::{windows_from_layer_types, LlamaConfig, LlamaDefaults};
use super::registry::{ModelConfig, LLAMA_DEFAULTS};
use crate::error::Result;

const DEFAULTS: LlamaDefaults = LlamaDefaults {
    vocab_size: 151936,
    intermediate_size: 22016,
    num_key_value_heads: Some(32),
    head_dim: Some(128),
    max_position_embeddings: 32768,
    ..LLAMA_DEFAULTS
};

pub fn config(arch: &str, json: &str) -> Result<Box<dyn ModelConfig>> {
    let mut cfg = LlamaConfig::from_json(arch, json, &DEFAULTS)?;
    let v = parse_object(json)?;
    cfg.layer_windows = qwen_layer_windows(&v, cfg.num_hidden_layers)?;
    cfg.qk_norm = true;
    // Qwen3MLP has no biases (`mlp_bias` is not one of its config's keys).
    cfg.mlp_bias = false;
    Ok(Box::new(cfg))
}

/// Qwen2's and Qwen3's windows: `sliding_window` (default 4096) only with `use_sliding_window`,
/// on the layers `layer_types` names `sliding_attention` (by default those from
/// `max_window_layers` on, default 28).
pub fn qwen_layer_windows(v: &Value, layers: usize) -> Result<Vec<Option<usize>>> {
    let window = if get_bool(v, "use_sliding_window")?.unwrap_or(false) {
        match v.get("sliding_window") {
            None => Some(4096),
            Some(_) => get_usize(v, "sliding_window")?
                .map(|w| positive("sliding_window", w))
                .transpose()?,
        }
    } else {
        None
    };
    let first_sliding = get_usize(v, "max_window_layers")?.unwrap_or(28);
    windows_from_layer_types(v, layers, window, |i| {
        window.is_some() && i >= first_sliding
    })
}
