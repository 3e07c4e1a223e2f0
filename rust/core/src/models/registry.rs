//! Every architecture fasttx runs, in one table ([`ARCHITECTURES`]): the `model_type` names
//! transformers gives it, the GGUF files it reads, its config defaults, and how to build it. The
//! loader ([`super::load`]) and the Python side (through `fasttx._native.architectures()` and
//! `gguf_config()`) ask this table; nothing else lists architectures.
//!
//! Adding an architecture is one model file (its config, its [`ModelConfig`], its layer stack
//! under [`super::decoder`] or [`super::encoder_decoder`]) and one entry here.

use std::sync::Arc;

use super::gemma::{GemmaConfig, GemmaVersion};
use super::llama::{LlamaConfig, LlamaDefaults};
use super::{bart, gguf_config, gpt2, mistral, phi3, qwen3, smollm3, t5, Model};
use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use crate::formats::WeightSource;

/// A parsed config.json: what the loader needs before and after it opens the weights.
pub trait ModelConfig {
    /// `(query heads, key/value heads)`: undoing llama.cpp's per-head q/k permutation needs them.
    fn attention_heads(&self) -> (usize, usize);

    /// Builds the model from its weights, running on `threads` threads.
    fn build(&self, weights: &dyn WeightSource, threads: usize) -> Result<Arc<dyn Model>>;
}

/// How the GGUF files of one llama.cpp architecture are read.
pub struct GgufArchitecture {
    /// llama.cpp's `general.architecture`.
    pub name: &'static str,
    /// llama.cpp's converter permuted the rows of the q/k projections per head (it does for its
    /// "llama" architecture, so that ggml rotates adjacent pairs); loading undoes it.
    pub permuted_qk: bool,
    /// transformers' config.json for the file, from its metadata.
    pub config: fn(&GgufFile, &GgufArchitecture) -> Result<serde_json::Value>,
}

/// One architecture, as transformers names it by `model_type`.
pub struct Architecture {
    /// transformers' `model_type` (config.json).
    pub model_type: &'static str,
    pub encoder_decoder: bool,
    /// The GGUF architecture whose files load as this model type (`None`: safetensors only).
    pub gguf: Option<GgufArchitecture>,
    /// Parses config.json (the model type's class defaults filling what it leaves out).
    pub config: fn(model_type: &str, json: &str) -> Result<Box<dyn ModelConfig>>,
}

/// transformers' `LlamaConfig()` defaults; Mistral and Qwen2 differ where their entries say.
pub(crate) const LLAMA_DEFAULTS: LlamaDefaults = LlamaDefaults {
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: None,
    max_position_embeddings: 2048,
    rope_theta: 10000.0,
    head_dim: None,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: false,
    fixed_qkv_bias: false,
    original_max_position_embeddings: None,
    partial_rotary: false,
    rope_type_aliases: &[],
};

pub static ARCHITECTURES: &[Architecture] = &[
    Architecture {
        model_type: "t5",
        encoder_decoder: true,
        gguf: None,
        config: |_, json| Ok(Box::new(t5::T5Config::from_json(json)?)),
    },
    Architecture {
        model_type: "llama",
        encoder_decoder: false,
        gguf: Some(GgufArchitecture {
            name: "llama",
            permuted_qk: true,
            config: gguf_config::llama_family,
        }),
        config: |arch, json| {
            Ok(Box::new(LlamaConfig::from_json(
                arch,
                json,
                &LLAMA_DEFAULTS,
            )?))
        },
    },
    Architecture {
        model_type: "mistral",
        encoder_decoder: false,
        gguf: None,
        config: mistral::config,
    },
    Architecture {
        model_type: "qwen2",
        encoder_decoder: false,
        gguf: Some(GgufArchitecture {
            name: "qwen2",
            permuted_qk: false,
            config: gguf_config::llama_family,
        }),
        config: |arch, json| {
            let defaults = LlamaDefaults {
                vocab_size: 151936,
                intermediate_size: 22016,
                num_key_value_heads: Some(32),
                max_position_embeddings: 32768,
                fixed_qkv_bias: true,
                ..LLAMA_DEFAULTS
            };
            let mut cfg = LlamaConfig::from_json(arch, json, &defaults)?;
            let v = crate::models::config_checks::parse_object(json)?;
            cfg.layer_windows = qwen3::qwen_layer_windows(&v, cfg.num_hidden_layers)?;
            Ok(Box::new(cfg))
        },
    },
    Architecture {
        model_type: "gpt2",
        encoder_decoder: false,
        gguf: None,
        config: |_, json| Ok(Box::new(gpt2::Gpt2Config::from_json(json)?)),
    },
    Architecture {
        model_type: "qwen3",
        encoder_decoder: false,
        gguf: Some(GgufArchitecture {
            name: "qwen3",
            permuted_qk: false,
            config: gguf_config::llama_family,
        }),
        config: qwen3::config,
    },
    Architecture {
        model_type: "smollm3",
        encoder_decoder: false,
        gguf: None,
        config: smollm3::config,
    },
    Architecture {
        model_type: "phi3",
        encoder_decoder: false,
        gguf: Some(GgufArchitecture {
            name: "phi3",
            permuted_qk: false,
            config: gguf_config::phi3,
        }),
        config: phi3::config,
    },
    Architecture {
        model_type: "gemma2",
        encoder_decoder: false,
        gguf: Some(GgufArchitecture {
            name: "gemma2",
            permuted_qk: false,
            config: gguf_config::gemma_family,
        }),
        config: |_, json| {
            Ok(Box::new(GemmaConfig::from_json(
                GemmaVersion::Gemma2,
                json,
            )?))
        },
    },
    Architecture {
        // Gemma 3's text model (`Gemma3ForCausalLM`); llama.cpp's "gemma3" files hold only it.
        model_type: "gemma3_text",
        encoder_decoder: false,
        gguf: Some(GgufArchitecture {
            name: "gemma3",
            permuted_qk: false,
            config: gguf_config::gemma_family,
        }),
        config: |_, json| {
            Ok(Box::new(GemmaConfig::from_json(
                GemmaVersion::Gemma3,
                json,
            )?))
        },
    },
    // The BART family (models/bart.rs): one layer stack, the model type choosing its variant.
    Architecture {
        model_type: "bart",
        encoder_decoder: true,
        gguf: None,
        config: |arch, json| Ok(Box::new(bart::BartConfig::from_json(arch, json)?)),
    },
    Architecture {
        model_type: "mbart",
        encoder_decoder: true,
        gguf: None,
        config: |arch, json| Ok(Box::new(bart::BartConfig::from_json(arch, json)?)),
    },
    Architecture {
        model_type: "marian",
        encoder_decoder: true,
        gguf: None,
        config: |arch, json| Ok(Box::new(bart::BartConfig::from_json(arch, json)?)),
    },
    Architecture {
        // M2M100 and NLLB (whose checkpoints are `m2m_100` models).
        model_type: "m2m_100",
        encoder_decoder: true,
        gguf: None,
        config: |arch, json| Ok(Box::new(bart::BartConfig::from_json(arch, json)?)),
    },
];

fn names(names: impl Iterator<Item = &'static str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// The entry of transformers' `model_type`.
pub fn architecture(model_type: &str) -> Result<&'static Architecture> {
    ARCHITECTURES
        .iter()
        .find(|a| a.model_type == model_type)
        .ok_or_else(|| {
            Error::Format(format!(
                "unsupported architecture '{model_type}'; fasttx supports: {}",
                names(ARCHITECTURES.iter().map(|a| a.model_type))
            ))
        })
}

/// The entries whose GGUF files fasttx reads.
pub fn gguf_architectures(
) -> impl Iterator<Item = (&'static Architecture, &'static GgufArchitecture)> {
    ARCHITECTURES
        .iter()
        .filter_map(|a| a.gguf.as_ref().map(|g| (a, g)))
}

/// The model type a GGUF file loads as, and transformers' config.json for it (what transformers
/// builds when it loads a GGUF file).
pub fn gguf_config(file: &GgufFile) -> Result<(&'static str, serde_json::Value)> {
    let name = file.architecture();
    let (arch, gguf) = gguf_architectures()
        .find(|(_, g)| Some(g.name) == name)
        .ok_or_else(|| {
            Error::Format(format!(
                "{}: unsupported GGUF architecture {}; fasttx runs {}",
                file.path().display(),
                name.map_or("(none given)".to_string(), |n| format!("'{n}'")),
                names(gguf_architectures().map(|(_, g)| g.name))
            ))
        })?;
    let mut config = (gguf.config)(file, gguf)?;
    config["model_type"] = arch.model_type.into();
    Ok((arch.model_type, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        for (i, a) in ARCHITECTURES.iter().enumerate() {
            assert!(
                ARCHITECTURES[..i]
                    .iter()
                    .all(|b| b.model_type != a.model_type),
                "model_type '{}' listed twice",
                a.model_type
            );
            let gguf_twice = a.gguf.as_ref().is_some_and(|g| {
                gguf_architectures()
                    .filter(|(_, other)| other.name == g.name)
                    .count()
                    > 1
            });
            assert!(
                !gguf_twice,
                "GGUF architecture of '{}' listed twice",
                a.model_type
            );
        }
    }

    #[test]
    fn each_model_type_parses_an_empty_config_with_its_defaults() {
        for a in ARCHITECTURES {
            let cfg = (a.config)(a.model_type, "{}").unwrap();
            let (heads, kv_heads) = cfg.attention_heads();
            assert!(heads > 0 && kv_heads > 0 && heads % kv_heads == 0);
        }
    }

    #[test]
    fn sizes_whose_products_wrap_are_refused_naming_the_keys() {
        // Each wraps to the fixtures' real projection sizes: unchecked, they would pass the
        // load-time shape checks and index out of bounds at the first step.
        for (model_type, json, key) in [
            (
                "llama",
                r#"{"num_attention_heads": 4611686018427387910, "num_key_value_heads": 2, "head_dim": 12}"#,
                "num_attention_heads (4611686018427387910) x head_dim (12) overflows",
            ),
            (
                "t5",
                r#"{"d_kv": 4611686018427387916}"#,
                "num_heads (8) x d_kv",
            ),
            (
                "gpt2",
                r#"{"n_embd": 4611686018427387904, "n_head": 1}"#,
                "n_embd (4611686018427387904) overflows",
            ),
        ] {
            let entry = architecture(model_type).unwrap();
            let err = (entry.config)(model_type, json).err().unwrap().to_string();
            assert!(
                err.starts_with("config.json: ") && err.contains(key),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_model_types_name_the_supported_ones() {
        let err = architecture("bert").err().unwrap().to_string();
        assert!(
            err.contains("'bert'") && err.contains("t5, llama, mistral, qwen2, gpt2"),
            "{err}"
        );
    }
}
