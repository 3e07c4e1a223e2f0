//! The Llama family's decoder: Llama 2/3, SmolLM2/3, TinyLlama, Mistral, Qwen2/3 and Phi-3.
//!
//! Mirrors `transformers/models/llama/modeling_llama.py`: pre-norm blocks with RMSNorm; attention
//! with rotary positions (`rotate_half`), grouped-query heads (`num_key_value_heads`), scaled by
//! `1/sqrt(head_dim)`; SwiGLU feed-forward `down(silu(gate x) * up x)`; a final norm and the head
//! (the embedding when `tie_word_embeddings`). Qwen2 is the same with biases on q, k and v.
//!
//! The variants differ only in options of this one block, set by their own files (qwen3.rs,
//! smollm3.rs, mistral.rs, phi3.rs): per-head q/k RMSNorm before the rotation (Qwen3), layers
//! without rotary embeddings (SmolLM3), a sliding window per layer (Mistral, Qwen2/3, SmolLM3),
//! partial rotary and LongRoPE (Phi-3), and fused `qkv_proj` / `gate_up_proj` weights (Phi-3).

use std::sync::Arc;

use serde_json::Value;

use super::attention::Attention;
use super::checkpoint::{linear, tensor};
use super::config_checks::{
    epsilon, get_bool, get_f64, get_str, get_usize, parse_object, positive, positive_real, product,
};
use super::decoder::{DecoderModel, DecoderStack};
use super::decoder_block::{stacked_projections, GatedMlp, MlpScratch, QkNorm, SelfAttention};
use super::kv_cache::KvCache;
use super::registry::ModelConfig;
use super::rope::{Rope, RopeAngles, RopeScaling};
use super::session::StepBuffers;
use super::{add, projection, Model, StepInput};
use crate::error::Result;
use crate::format_err;
use crate::formats::WeightSource;
use crate::kernels::quant::QuantFormat;
use crate::kernels::{activation::silu, norm::rms_norm};
use crate::tensor::{Linear, Tensor, Weight};
use crate::threading::build_pool;

#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on the q, k, v projections (Qwen2 always; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on the output projection (Llama with `attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Qwen3: an RMSNorm over each head of q and of k (`q_norm` / `k_norm`, `[head_dim]`), before
    /// the rotation.
    pub qk_norm: bool,
    /// The leading dimensions of each head that rotate (`head_dim` unless Phi-3's
    /// `partial_rotary_factor` says less).
    pub rotary_dim: usize,
    /// Per layer: its attention's sliding window (`None`: it sees every earlier position).
    pub layer_windows: Vec<Option<usize>>,
    /// Per layer: whether it rotates q and k (SmolLM3's `no_rope_layers` turns some off).
    pub layer_rope: Vec<bool>,
    /// Phi-3: q, k, v stored as one `qkv_proj` and gate, up as one `gate_up_proj`.
    pub fused_projections: bool,
}

/// What one `model_type` of the family leaves unsaid in config.json: its transformers config
/// class's defaults, and whether it fixes the attention biases (the registry holds one per
/// model type).
#[derive(Clone, Copy, Debug)]
pub struct LlamaDefaults {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// `None`: as many as `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    /// `None`: `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    /// Biases on q, k and v always, none on o, whatever `attention_bias` says (Qwen2).
    pub fixed_qkv_bias: bool,
    /// A config class with its own top-level `original_max_position_embeddings` (Phi-3's,
    /// default 4096), which transformers puts into LongRoPE's parameters over theirs.
    pub original_max_position_embeddings: Option<usize>,
    /// `partial_rotary_factor` honoured (Phi-3); elsewhere a value other than 1 is refused.
    pub partial_rotary: bool,
    /// Old rope type names the config class renames (Phi-3: `su` and `yarn` mean `longrope`).
    pub rope_type_aliases: &'static [(&'static str, &'static str)],
}

impl LlamaConfig {
    /// Parses a transformers `config.json` of `model_type` `arch`, whose class defaults are
    /// `defaults`.
    pub fn from_json(arch: &str, json: &str, defaults: &LlamaDefaults) -> Result<Self> {
        let v = parse_object(json)?;
        let LlamaDefaults {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            max_position_embeddings: max_pos,
            rope_theta: theta,
            head_dim: class_head_dim,
            rms_norm_eps: eps,
            tie_word_embeddings: tied,
            fixed_qkv_bias,
            original_max_position_embeddings: class_original,
            partial_rotary,
            rope_type_aliases,
        } = *defaults;
        let hidden_size = positive(
            "hidden_size",
            get_usize(&v, "hidden_size")?.unwrap_or(hidden),
        )?;
        let num_attention_heads = positive(
            "num_attention_heads",
            get_usize(&v, "num_attention_heads")?.unwrap_or(heads),
        )?;
        let num_key_value_heads = positive(
            "num_key_value_heads",
            get_usize(&v, "num_key_value_heads")?
                .or(kv)
                .unwrap_or(num_attention_heads),
        )?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(format_err!(
                "config.json: num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads ({num_key_value_heads})"
            ));
        }
        let head_dim = positive(
            "head_dim",
            get_usize(&v, "head_dim")?
                .or(class_head_dim)
                .unwrap_or(hidden_size / num_attention_heads),
        )?;
        if head_dim % 2 != 0 {
            return Err(format_err!(
                "config.json: head_dim must be even (rotary embeddings rotate pairs), got {head_dim}"
            ));
        }
        // The q projection's row count (the k and v ones divide it); the model multiplies these
        // sizes unchecked from here on.
        product(&[
            ("num_attention_heads", num_attention_heads),
            ("head_dim", head_dim),
        ])?;
        let attention_bias = get_bool(&v, "attention_bias")?.unwrap_or(false);
        let act = get_str(&v, "hidden_act")?.unwrap_or("silu");
        if act != "silu" && act != "swish" {
            return Err(format_err!(
                "config.json: hidden_act '{act}' is not supported for {arch} (only silu)"
            ));
        }
        // transformers 5.x saves `rope_parameters`; Hub configs carry `rope_theta` / `rope_scaling`.
        let params = v.get("rope_parameters").filter(|p| p.is_object());
        let rope_theta = match params {
            Some(p) => get_f64(p, "rope_theta")?,
            None => None,
        }
        .or(get_f64(&v, "rope_theta")?)
        .unwrap_or(theta);
        let max_position_embeddings = positive(
            "max_position_embeddings",
            get_usize(&v, "max_position_embeddings")?.unwrap_or(max_pos),
        )?;
        // `partial_rotary_factor` at the top level or among the rope parameters (transformers
        // moves the former into the latter).
        let (section, scaling) = match (v.get("rope_scaling").filter(|s| s.is_object()), params) {
            (Some(s), _) => ("rope_scaling", Some(s)),
            (None, Some(p)) => ("rope_parameters", Some(p)),
            (None, None) => ("rope_parameters", None),
        };
        let factor = match scaling {
            Some(s) => get_f64(s, "partial_rotary_factor")?,
            None => None,
        }
        .or(get_f64(&v, "partial_rotary_factor")?)
        .unwrap_or(1.0);
        if factor != 1.0 && !partial_rotary {
            return Err(format_err!(
                "config.json: partial_rotary_factor ({factor}) is not supported for {arch} (fasttx rotates whole heads there)"
            ));
        }
        // transformers: int(head_dim * partial_rotary_factor).
        let rotary_dim = (head_dim as f64 * factor) as usize;
        if !(factor > 0.0 && factor <= 1.0) || rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
            return Err(format_err!(
                "config.json: partial_rotary_factor ({factor}) must leave an even, nonzero number of rotating dimensions of head_dim ({head_dim}), got {rotary_dim}"
            ));
        }
        let context = RopeContext {
            max_position_embeddings,
            original_max_position_embeddings: get_usize(&v, "original_max_position_embeddings")?
                .or(class_original),
            rope_type_aliases,
        };
        let rope_scaling = match scaling {
            Some(s) => parse_rope_scaling(section, s, &context)?,
            None => RopeScaling::None,
        };
        let layers = positive(
            "num_hidden_layers",
            get_usize(&v, "num_hidden_layers")?.unwrap_or(layers),
        )?;
        let cfg = LlamaConfig {
            vocab_size: positive("vocab_size", get_usize(&v, "vocab_size")?.unwrap_or(vocab))?,
            hidden_size,
            intermediate_size: positive(
                "intermediate_size",
                get_usize(&v, "intermediate_size")?.unwrap_or(inter),
            )?,
            num_hidden_layers: layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: epsilon("rms_norm_eps", get_f64(&v, "rms_norm_eps")?.unwrap_or(eps))?,
            rope_theta: positive_real("rope_theta", rope_theta)?,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: get_bool(&v, "tie_word_embeddings")?.unwrap_or(tied),
            qkv_bias: fixed_qkv_bias || attention_bias,
            o_bias: !fixed_qkv_bias && attention_bias,
            mlp_bias: get_bool(&v, "mlp_bias")?.unwrap_or(false),
            qk_norm: false,
            rotary_dim,
            layer_windows: vec![None; layers],
            layer_rope: vec![true; layers],
            fused_projections: false,
        };
        Ok(cfg)
    }
}

/// What a rope scaling section may need from the rest of the config.
struct RopeContext {
    max_position_embeddings: usize,
    /// A top-level `original_max_position_embeddings` (the config's, else its class default).
    original_max_position_embeddings: Option<usize>,
    rope_type_aliases: &'static [(&'static str, &'static str)],
}

/// `rope_scaling` (or transformers 5.x's `rope_parameters`, named by `section`).
fn parse_rope_scaling(section: &str, s: &Value, context: &RopeContext) -> Result<RopeScaling> {
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let kind = context
        .rope_type_aliases
        .iter()
        .find(|(old, _)| *old == kind)
        .map_or(kind, |(_, new)| new);
    // A positive number under `section` (frequencies are divided by these).
    let real = |key: &str, default: Option<f64>| -> Result<f32> {
        let name = format!("{section}.{key}");
        let x = get_f64(s, key)?
            .or(default)
            .ok_or_else(|| format_err!("config.json: rope scaling '{kind}' needs {name}"))?;
        Ok(positive_real(&name, x)? as f32)
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: real("factor", None)?,
        }),
        "llama3" => {
            let original = original_context(section, s, context)?;
            let (low, high) = (
                real("low_freq_factor", Some(1.0))?,
                real("high_freq_factor", Some(4.0))?,
            );
            // The smoothing between the two wavelengths divides by their difference.
            if high <= low {
                return Err(format_err!(
                    "config.json: {section}.high_freq_factor ({high}) must exceed {section}.low_freq_factor ({low})"
                ));
            }
            Ok(RopeScaling::Llama3 {
                factor: real("factor", None)?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position: original as f32,
            })
        }
        "longrope" => parse_longrope(section, s, context),
        other => Err(format_err!(
            "config.json: {section}.rope_type '{other}' is not supported (fasttx supports default, linear, llama3 and longrope)"
        )),
    }
}

/// The pretraining context of a llama3 or longrope scaling, as transformers'
/// `standardize_rope_params` settles it: a top-level `original_max_position_embeddings` first
/// (Phi-3 saves it there), then the section's, then `max_position_embeddings`.
fn original_context(section: &str, s: &Value, context: &RopeContext) -> Result<usize> {
    match context.original_max_position_embeddings {
        Some(n) => positive("original_max_position_embeddings", n),
        None => positive(
            &format!("{section}.original_max_position_embeddings"),
            get_usize(s, "original_max_position_embeddings")?
                .unwrap_or(context.max_position_embeddings),
        ),
    }
}

/// LongRoPE as transformers' `_compute_longrope_parameters` reads it: the original context from
/// the top level first, then the section, then `max_position_embeddings`; `factor` defaulting to
/// `max_position_embeddings / original`; `attention_factor` defaulting to
/// `sqrt(1 + ln(factor) / ln(original))` (1 when `factor <= 1`).
fn parse_longrope(section: &str, s: &Value, context: &RopeContext) -> Result<RopeScaling> {
    let key = |k: &str| format!("{section}.{k}");
    let original = original_context(section, s, context)?;
    let factors = |name: &str| -> Result<Vec<f32>> {
        let list = s.get(name).and_then(Value::as_array).ok_or_else(|| {
            format_err!(
                "config.json: longrope needs {} (a list of numbers)",
                key(name)
            )
        })?;
        list.iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| {
                        format_err!("config.json: {} must hold numbers, got {x}", key(name))
                    })
                    .and_then(|f| positive_real(&key(name), f))
                    .map(|f| f as f32)
            })
            .collect()
    };
    let factor = match get_f64(s, "factor")? {
        Some(f) => positive_real(&key("factor"), f)?,
        None => context.max_position_embeddings as f64 / original as f64,
    };
    let attention_factor = match get_f64(s, "attention_factor")? {
        Some(f) => positive_real(&key("attention_factor"), f)?,
        None if factor <= 1.0 => 1.0,
        None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
    };
    Ok(RopeScaling::LongRope {
        short_factor: factors("short_factor")?,
        long_factor: factors("long_factor")?,
        original_max_position: original,
        attention_factor: attention_factor as f32,
    })
}

/// Per-layer sliding windows from transformers' `layer_types` (`sliding_attention` layers get
/// `window`), checked: one known type per layer, and a window for every sliding layer.
pub fn windows_from_layer_types(
    v: &Value,
    layers: usize,
    window: Option<usize>,
    default_types: impl Fn(usize) -> bool,
) -> Result<Vec<Option<usize>>> {
    let types: Vec<bool> = match v.get("layer_types").filter(|t| !t.is_null()) {
        None => (0..layers).map(default_types).collect(),
        Some(t) => {
            let list = t
                .as_array()
                .ok_or_else(|| format_err!("config.json: layer_types must be a list, got {t}"))?;
            if list.len() != layers {
                return Err(format_err!(
                    "config.json: layer_types has {} entries for {layers} layers",
                    list.len()
                ));
            }
            list.iter()
                .map(|x| match x.as_str() {
                    Some("full_attention") => Ok(false),
                    Some("sliding_attention") => Ok(true),
                    _ => Err(format_err!(
                        "config.json: layer_types entry {x} is not supported (full_attention or sliding_attention)"
                    )),
                })
                .collect::<Result<_>>()?
        }
    };
    types
        .into_iter()
        .map(|sliding| match (sliding, window) {
            (false, _) => Ok(None),
            (true, Some(w)) => Ok(Some(positive("sliding_window", w)?)),
            (true, None) => Err(format_err!(
                "config.json: layer_types has sliding_attention layers but sliding_window is not set"
            )),
        })
        .collect()
}

impl ModelConfig for LlamaConfig {
    fn attention_heads(&self) -> (usize, usize) {
        (self.num_attention_heads, self.num_key_value_heads)
    }

    fn build(&self, weights: &dyn WeightSource, threads: usize) -> Result<Arc<dyn Model>> {
        let weights = LlamaWeights::load(self.clone(), weights, threads)?;
        Ok(Arc::new(DecoderModel::new(weights)))
    }
}

struct Layer {
    attn_norm: Tensor,
    attn: SelfAttention,
    /// Whether q and k rotate here (SmolLM3's no-rope layers do not).
    rope: bool,
    mlp_norm: Tensor,
    mlp: GatedMlp,
}

struct LlamaWeights {
    cfg: LlamaConfig,
    eps: f32,
    embed: Weight,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    rope: Rope,
    pool: rayon::ThreadPool,
}

impl LlamaWeights {
    fn load(cfg: LlamaConfig, w: &dyn WeightSource, threads: usize) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q_out, kv_out, ff) = (
            cfg.num_attention_heads * hd,
            cfg.num_key_value_heads * hd,
            cfg.intermediate_size,
        );
        let embed_name = "model.embed_tokens.weight";
        let embed = w
            .weight(embed_name)?
            .expect_shape(embed_name, &[cfg.vocab_size, d])?;
        // The head before the layers (with int8, the f32 table below is then freed before they
        // load, not held through the load's peak). Tied: a tied head, or a checkpoint that left
        // `lm_head.weight` out (GGUF without `output.weight`).
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        let lm_head = if tied {
            projection(w, Linear::new(embed.clone(), None)?)?
        } else {
            linear(w, "lm_head", cfg.vocab_size, d, false)?
        };
        // A tied head's lookups read the head's own rows (quantized: its packed copy, so the file's
        // table is not paged in again beside it). int8 included: the f32 table (a small model's
        // largest tensor: 113 MB beside SmolLM2's 143 MB of int8) is then not kept as well; rows
        // padded to whole int8 blocks would give lookups of the padded width, so those keep f32.
        let embed = if tied && (!w.int8() || d.is_multiple_of(QuantFormat::Q8_0.block_values())) {
            lm_head.weight()
        } else {
            embed
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let fused = cfg.fused_projections;
                let qkv = stacked_projections(
                    w,
                    &format!("{p}.self_attn"),
                    d,
                    &[("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out)],
                    fused.then_some("qkv_proj"),
                    cfg.qkv_bias,
                )?;
                let gate_up = stacked_projections(
                    w,
                    &format!("{p}.mlp"),
                    d,
                    &[("gate_proj", ff), ("up_proj", ff)],
                    fused.then_some("gate_up_proj"),
                    cfg.mlp_bias,
                )?;
                let qk_norm = if cfg.qk_norm {
                    let factors = |name: &str| -> Result<Vec<f32>> {
                        Ok(tensor(w, &format!("{p}.self_attn.{name}.weight"), &[hd])?
                            .data()
                            .to_vec())
                    };
                    Some(QkNorm {
                        q: factors("q_norm")?,
                        k: factors("k_norm")?,
                        eps: cfg.rms_norm_eps as f32,
                    })
                } else {
                    None
                };
                Ok(Layer {
                    attn_norm: tensor(w, &format!("{p}.input_layernorm.weight"), &[d])?,
                    attn: SelfAttention {
                        qkv,
                        fused,
                        qk_norm,
                        o: linear(w, &format!("{p}.self_attn.o_proj"), d, q_out, cfg.o_bias)?,
                        window: cfg.layer_windows[i],
                    },
                    rope: cfg.layer_rope[i],
                    mlp_norm: tensor(w, &format!("{p}.post_attention_layernorm.weight"), &[d])?,
                    mlp: GatedMlp {
                        gate_up,
                        down: linear(w, &format!("{p}.mlp.down_proj"), d, ff, cfg.mlp_bias)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LlamaWeights {
            eps: cfg.rms_norm_eps as f32,
            norm: tensor(w, "model.norm.weight", &[d])?,
            rope: Rope::partial(hd, cfg.rotary_dim, cfg.rope_theta, &cfg.rope_scaling)?,
            embed,
            layers,
            lm_head,
            pool: build_pool(threads)?,
            cfg,
        })
    }
}

/// Llama's step buffers beside the shared ones: the feed-forward's and the rotary angles.
#[derive(Default)]
struct Scratch {
    mlp: MlpScratch,
    angles: RopeAngles,
}

impl DecoderStack for LlamaWeights {
    type Scratch = Scratch;

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn pool(&self) -> &rayon::ThreadPool {
        &self.pool
    }

    fn max_positions(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    fn decode_weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.attn.weight_bytes() + l.mlp.weight_bytes())
            .sum();
        layers + self.lm_head.weight_bytes()
    }

    fn cache_shape(&self) -> (usize, usize, usize) {
        let cfg = &self.cfg;
        (cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim)
    }

    fn forward(
        &self,
        input: &StepInput,
        positions: &[u32],
        last_only: bool,
        cache: &mut KvCache,
        b: &mut StepBuffers,
        s: &mut Scratch,
    ) -> Result<Vec<f32>> {
        let (w, cfg) = (self, &self.cfg);
        let (rows, n, d) = (cache.rows(), input.n, cfg.hidden_size);
        let (heads, kv_heads, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let m = rows * n;
        let mut h = std::mem::take(&mut b.h);
        h.clear();
        for &t in input.tokens {
            w.embed.extend_with_row(t as usize, &mut h);
        }
        let attn = Attention {
            heads,
            kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            causal: true,
            q_offset: cache.len(),
            window: None,
            softcap: None,
            bias: None,
            interrupt: input.interrupt,
        };
        cache.begin_step(n, input.mask);
        w.rope.angles_into(positions, &mut s.angles);
        b.x.resize(m * d, 0.0);
        b.ctx.resize(m * heads * hd, 0.0);
        for (li, layer) in w.layers.iter().enumerate() {
            // Checked before each sublayer: a long prefill spends a fraction of a second in each.
            input.check_interrupt()?;
            rms_norm(&h, layer.attn_norm.data(), w.eps, &mut b.x);
            let rope = layer.rope.then_some((&w.rope, &s.angles));
            layer.attn.forward(&attn, rope, li, n, cache, b)?;
            add(&mut h, &b.proj);

            input.check_interrupt()?;
            rms_norm(&h, layer.mlp_norm.data(), w.eps, &mut b.x);
            layer
                .mlp
                .forward(&b.x, m, silu, &mut s.mlp, &mut b.proj, input.interrupt)?;
            add(&mut h, &b.proj);
        }
        cache.commit();

        let count = b.logit_rows(&h, rows, n, d, last_only);
        rms_norm(&b.last, w.norm.data(), w.eps, &mut b.x);
        b.h = h;
        let mut logits = Vec::new();
        w.lm_head
            .forward_checked(&b.x, count, &mut logits, input.interrupt)?;
        Ok(logits)
    }
}
