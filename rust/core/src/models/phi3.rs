//! Phi-3 / Phi-3.5 / Phi-4-mini: Llama's block with q, k, v fused into one `qkv_proj` and gate, up
//! into one `gate_up_proj`, no biases; `partial_rotary_factor` (only the leading dimensions of a
//! head rotate), LongRoPE (`longrope`, or its old names `su` and `yarn`, which `Phi3Config`
//! renames) and a top-level `original_max_position_embeddings` (default 4096) that LongRoPE takes
//! over its own; every layer windowed when `sliding_window` is set.

use super::config_checks::{get_usize, parse_object, positive};
use super::llama::{LlamaConfig, LlamaDefaults};
use super::registry::{ModelConfig, LLAMA_DEFAULTS};
use crate::error::Result;

const DEFAULTS: LlamaDefaults = LlamaDefaults {
    vocab_size: 32064,
    hidden_size: 3072,
    intermediate_size: 8192,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    original_max_position_embeddings: Some(4096),
    partial_rotary: true,
    rope_type_aliases: &[("su", "longrope"), ("yarn", "longrope")],
    ..LLAMA_DEFAULTS
};

pub fn config(arch: &str, json: &str) -> Result<Box<dyn ModelConfig>> {
    let mut cfg = LlamaConfig::from_json(arch, json, &DEFAULTS)?;
    let v = parse_object(json)?;
    let window = get_usize(&v, "sliding_window")?
        .map(|w| positive("sliding_window", w))
        .transpose()?;
    cfg.layer_windows = vec![window; cfg.num_hidden_layers];
    cfg.fused_projections = true;
    // Phi3Attention and Phi3MLP have no biases (`attention_bias` is not one of its keys).
    cfg.qkv_bias = false;
    cfg.o_bias = false;
    cfg.mlp_bias = false;
    Ok(Box::new(cfg))
}
