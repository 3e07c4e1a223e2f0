//! config.json text, parsed as every architecture's config; then, for a `model_type` with a
//! fixture, the model built from that fixture's real weights and run for one step. The weights
//! are fixed and only the config is fuzzed: sizes whose products wrap around to match the real
//! tensors (e.g. `num_attention_heads = 2**62 + 6`) get past the shape checks and fail later.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use fasttx_core::models::{self, registry::ARCHITECTURES};
use libfuzzer_sys::fuzz_target;

/// One small fixture model per architecture (mistral reads Llama weights).
fn weights(model_type: &str) -> Option<PathBuf> {
    static LLAMA: OnceLock<PathBuf> = OnceLock::new();
    static QWEN2: OnceLock<PathBuf> = OnceLock::new();
    static GPT2: OnceLock<PathBuf> = OnceLock::new();
    static T5: OnceLock<PathBuf> = OnceLock::new();
    // Written once per process and never rewritten, so models may keep them mapped.
    let (cell, name, bytes): (_, _, &[u8]) = match model_type {
        "llama" | "mistral" => (
            &LLAMA,
            "llama.safetensors",
            include_bytes!("../../tests/fixtures/llama_untied/model.safetensors"),
        ),
        "qwen2" => (
            &QWEN2,
            "qwen2.safetensors",
            include_bytes!("../../tests/fixtures/qwen2/model.safetensors"),
        ),
        "gpt2" => (
            &GPT2,
            "gpt2.safetensors",
            include_bytes!("../../tests/fixtures/gpt2_scaled/model.safetensors"),
        ),
        "t5" => (
            &T5,
            "t5.safetensors",
            include_bytes!("../../tests/fixtures/variants/t5_gated_silu/model.safetensors"),
        ),
        _ => return None,
    };
    Some(
        cell.get_or_init(|| fasttx_fuzz::scratch_file(name, bytes))
            .clone(),
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    for arch in ARCHITECTURES {
        if let Ok(config) = (arch.config)(arch.model_type, json) {
            let _ = config.attention_heads();
        }
    }
    let Some(model_type) = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("model_type")?.as_str().map(str::to_owned))
    else {
        return;
    };
    let Some(path) = weights(&model_type) else {
        return;
    };
    if let Ok(model) = models::load(&model_type, json, &[path], "auto", 1) {
        fasttx_fuzz::run_one_step(model.as_ref());
    }
});
