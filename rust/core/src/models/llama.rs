//! The Llama family: Llama 2/3, SmolLM2, TinyLlama, Mistral (inside its window) and Qwen2.
//!
//! Mirrors `transformers/models/llama/modeling_llama.py`: pre-norm blocks with RMSNorm; attention
//! with rotary positions (`rotate_half`), grouped-query heads (`num_key_value_heads`), scaled by
//! `1/sqrt(head_dim)`; SwiGLU feed-forward `down(silu(gate x) * up x)`; a final norm and the head
//! (the embedding when `tie_word_embeddings`). Qwen2 is the same with biases on q, k and v.

use std::sync::Arc;

use serde_json::Value;

use super::attention::Attention;
use super::config_checks::{
    epsilon, get_bool, get_f64, get_str, get_usize, parse_object, positive, positive_real, product,
};
use super::decoder::{DecoderSession, DecoderStack};
use super::kv_cache::KvCache;
use super::registry::ModelConfig;
use super::rope::{Rope, RopeAngles, RopeScaling};
use super::session::StepBuffers;
use super::{add, gated_into, projection, Model, Session, StepInput, TokenBatch};
use crate::error::Result;
use crate::format_err;
use crate::formats::WeightSource;
use crate::kernels::quant::QuantFormat;
use crate::kernels::{activation::silu, norm::rms_norm};
use crate::tensor::{Linear, LinearSet, Tensor, Weight};
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
    /// Biases on q, k and v always, none on o, whatever `attention_bias` says (Qwen2).
    pub fixed_qkv_bias: bool,
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
            fixed_qkv_bias,
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
            get_usize(&v, "head_dim")?.unwrap_or(hidden_size / num_attention_heads),
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
        let rope_scaling = match (v.get("rope_scaling").filter(|s| s.is_object()), params) {
            (Some(s), _) => parse_rope_scaling("rope_scaling", s)?,
            (None, Some(p)) => parse_rope_scaling("rope_parameters", p)?,
            (None, None) => RopeScaling::None,
        };
        let cfg = LlamaConfig {
            vocab_size: positive("vocab_size", get_usize(&v, "vocab_size")?.unwrap_or(vocab))?,
            hidden_size,
            intermediate_size: positive(
                "intermediate_size",
                get_usize(&v, "intermediate_size")?.unwrap_or(inter),
            )?,
            num_hidden_layers: positive(
                "num_hidden_layers",
                get_usize(&v, "num_hidden_layers")?.unwrap_or(layers),
            )?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: epsilon("rms_norm_eps", get_f64(&v, "rms_norm_eps")?.unwrap_or(1e-6))?,
            rope_theta: positive_real("rope_theta", rope_theta)?,
            rope_scaling,
            max_position_embeddings: positive(
                "max_position_embeddings",
                get_usize(&v, "max_position_embeddings")?.unwrap_or(max_pos),
            )?,
            tie_word_embeddings: get_bool(&v, "tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: fixed_qkv_bias || attention_bias,
            o_bias: !fixed_qkv_bias && attention_bias,
            mlp_bias: get_bool(&v, "mlp_bias")?.unwrap_or(false),
        };
        Ok(cfg)
    }
}

/// `rope_scaling` (or transformers 5.x's `rope_parameters`, named by `section`).
fn parse_rope_scaling(section: &str, s: &Value) -> Result<RopeScaling> {
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
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
            let original = positive(
                &format!("{section}.original_max_position_embeddings"),
                get_usize(s, "original_max_position_embeddings")?.unwrap_or(8192),
            )?;
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
        other => Err(format_err!(
            "config.json: rope scaling '{other}' is not supported (fasttx supports default, linear and llama3)"
        )),
    }
}

impl ModelConfig for LlamaConfig {
    fn attention_heads(&self) -> (usize, usize) {
        (self.num_attention_heads, self.num_key_value_heads)
    }

    fn build(&self, weights: &dyn WeightSource, threads: usize) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(LlamaModel::load(self.clone(), weights, threads)?))
    }
}

struct Layer {
    attn_norm: Tensor,
    /// `[q | k | v]`, one product.
    qkv: LinearSet,
    o: Linear,
    mlp_norm: Tensor,
    /// `[gate | up]`, one product.
    gate_up: LinearSet,
    down: Linear,
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

pub struct LlamaModel {
    inner: Arc<LlamaWeights>,
}

fn tensor(w: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<Tensor> {
    w.tensor(name)?.expect_shape(name, shape)
}

fn linear(
    w: &dyn WeightSource,
    prefix: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<Linear> {
    let name = format!("{prefix}.weight");
    let weight = w.weight(&name)?.expect_shape(&name, &[out, inp])?;
    let bias = if bias {
        Some(
            tensor(w, &format!("{prefix}.bias"), &[out])?
                .data()
                .to_vec(),
        )
    } else {
        None
    };
    projection(w, Linear::new(weight, bias)?)
}

impl LlamaModel {
    pub fn load(cfg: LlamaConfig, w: &dyn WeightSource, threads: usize) -> Result<Self> {
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
                Ok(Layer {
                    attn_norm: tensor(w, &format!("{p}.input_layernorm.weight"), &[d])?,
                    qkv: LinearSet::new(vec![
                        linear(w, &format!("{p}.self_attn.q_proj"), q_out, d, cfg.qkv_bias)?,
                        linear(w, &format!("{p}.self_attn.k_proj"), kv_out, d, cfg.qkv_bias)?,
                        linear(w, &format!("{p}.self_attn.v_proj"), kv_out, d, cfg.qkv_bias)?,
                    ])?,
                    o: linear(w, &format!("{p}.self_attn.o_proj"), d, q_out, cfg.o_bias)?,
                    mlp_norm: tensor(w, &format!("{p}.post_attention_layernorm.weight"), &[d])?,
                    gate_up: LinearSet::new(vec![
                        linear(w, &format!("{p}.mlp.gate_proj"), ff, d, cfg.mlp_bias)?,
                        linear(w, &format!("{p}.mlp.up_proj"), ff, d, cfg.mlp_bias)?,
                    ])?,
                    down: linear(w, &format!("{p}.mlp.down_proj"), d, ff, cfg.mlp_bias)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let weights = LlamaWeights {
            eps: cfg.rms_norm_eps as f32,
            norm: tensor(w, "model.norm.weight", &[d])?,
            rope: Rope::new(hd, cfg.rope_theta, &cfg.rope_scaling)?,
            embed,
            layers,
            lm_head,
            pool: build_pool(threads)?,
            cfg,
        };
        Ok(LlamaModel {
            inner: Arc::new(weights),
        })
    }
}

impl Model for LlamaModel {
    fn vocab_size(&self) -> usize {
        self.inner.cfg.vocab_size
    }

    fn is_encoder_decoder(&self) -> bool {
        false
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.inner.cfg.max_position_embeddings)
    }

    fn decode_weight_bytes(&self) -> usize {
        let w = &self.inner;
        let layers: usize = w
            .layers
            .iter()
            .map(|l| {
                l.qkv.weight_bytes()
                    + l.o.weight_bytes()
                    + l.gate_up.weight_bytes()
                    + l.down.weight_bytes()
            })
            .sum();
        layers + w.lm_head.weight_bytes()
    }

    fn pool(&self) -> &rayon::ThreadPool {
        &self.inner.pool
    }

    fn start(&self, input: &TokenBatch) -> Result<Box<dyn Session>> {
        let cfg = &self.inner.cfg;
        let cache = KvCache::new(
            cfg.num_hidden_layers,
            input.batch,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        Ok(Box::new(DecoderSession::new(self.inner.clone(), cache)))
    }
}

/// Llama's step buffers beside the shared ones: the feed-forward's and the rotary angles.
#[derive(Default)]
struct Scratch {
    gate_up: Vec<f32>,
    g: Vec<f32>,
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
            b.project_qkv(&layer.qkv, m, input.interrupt)?;
            w.rope.apply_angles(&mut b.q, heads, &s.angles);
            w.rope.apply_angles(&mut b.k, kv_heads, &s.angles);
            cache.write(li, &b.k, &b.v);
            attn.run(&b.q, rows, n, &cache.view(li), &mut b.ctx);
            layer
                .o
                .forward_checked(&b.ctx, m, &mut b.proj, input.interrupt)?;
            add(&mut h, &b.proj);

            input.check_interrupt()?;
            rms_norm(&h, layer.mlp_norm.data(), w.eps, &mut b.x);
            layer
                .gate_up
                .forward_checked(&b.x, m, &mut s.gate_up, input.interrupt)?;
            gated_into(&s.gate_up, m, silu, &mut s.g);
            layer
                .down
                .forward_checked(&s.g, m, &mut b.proj, input.interrupt)?;
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
