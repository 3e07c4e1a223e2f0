//! Mistral: Llama's block without any biases, every layer's attention limited to the last
//! `sliding_window` positions (`MistralConfig`'s default 4096; `null`: unlimited), as transformers'
//! `create_sliding_window_causal_mask` does.

use super::config_checks::{get_usize, parse_object, positive};
use super::llama::{LlamaConfig, LlamaDefaults};
use super::registry::{ModelConfig, LLAMA_DEFAULTS};
use crate::error::Result;

const DEFAULTS: LlamaDefaults = LlamaDefaults {
    intermediate_size: 14336,
    num_key_value_heads: Some(8),
    max_position_embeddings: 4096 * 32,
    ..LLAMA_DEFAULTS
};

pub fn config(arch: &str, json: &str) -> Result<Box<dyn ModelConfig>> {
    let mut cfg = LlamaConfig::from_json(arch, json, &DEFAULTS)?;
    let v = parse_object(json)?;
    // Absent: the class default; null: no window.
    let window = match v.get("sliding_window") {
        None => Some(4096),
        Some(_) => get_usize(&v, "sliding_window")?
            .map(|w| positive("sliding_window", w))
            .transpose()?,
    };
    cfg.layer_windows = vec![window; cfg.num_hidden_layers];
    // MistralAttention and MistralMLP have no biases, whatever `attention_bias` says.
    cfg.qkv_bias = false;
    cfg.o_bias = false;
    cfg.mlp_bias = false;
    Ok(Box::new(cfg))
}
