//! Gemma 2 and Gemma 3 (text), as transformers' `Gemma2ForCausalLM` and `Gemma3ForCausalLM`.
//!
//! Both versions share one layer: embeddings scaled by `sqrt(hidden_size)`; four Gemma RMSNorms
//! per layer (`input_layernorm`, `post_attention_layernorm` on the attention output before the
//! residual add, `pre_feedforward_layernorm`, `post_feedforward_layernorm`), each multiplying by
//! `1 + weight`; attention scaled by `query_pre_attn_scalar ** -0.5`, on sliding-window layers
//! limited to `sliding_window` positions (`layer_types`); a gated MLP with `hidden_activation`
//! (GELU, tanh approximation); the head, its logits soft-capped by `final_logit_softcapping`.
//! What differs:
//!
//! * Gemma 2 soft-caps the attention scores (`attn_logit_softcapping`), alternates sliding and
//!   global layers, and has one rotary embedding.
//! * Gemma 3 normalises every query and key head (`q_norm`, `k_norm`, Gemma RMSNorms over
//!   `head_dim`) before the rotation, and gives its sliding and global layers their own rotary
//!   bases (and scaling: real configs scale only the global one, linearly). Its attention takes no
//!   soft-cap: transformers' `Gemma3Attention` does not pass `attn_logit_softcapping` on, so a
//!   config's value changes nothing there, and here neither.

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
use crate::kernels::{
    activation::{gelu_erf, gelu_tanh},
    norm::rms_norm,
};
use crate::tensor::{Linear, LinearSet, Tensor, Weight};
use crate::threading::build_pool;

/// llama.cpp's converters store every Gemma norm weight as `1 + w` (the factor it multiplies
/// by); transformers' GGUF loader subtracts the 1 again, and so does [`crate::formats::gguf_hf`]
/// for the files of these architectures.
pub const GGUF_NORMS_PLUS_ONE: [&str; 2] = ["gemma2", "gemma3"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmaVersion {
    Gemma2,
    Gemma3,
}

/// The gating activation (`hidden_activation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmaActivation {
    /// `gelu_pytorch_tanh` (every released Gemma), `gelu_new`.
    GeluTanh,
    /// `gelu`: the exact, erf-based GELU.
    GeluErf,
}

/// One rotary embedding: its base and scaling.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmaRope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

#[derive(Clone, Debug)]
pub struct GemmaConfig {
    pub version: GemmaVersion,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q, k, v and o.
    pub attention_bias: bool,
    pub hidden_activation: GemmaActivation,
    pub query_pre_attn_scalar: f64,
    /// Gemma 2 only (see the module comment).
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    /// Per layer: whether it is a sliding-window layer (`layer_types`).
    pub sliding: Vec<bool>,
    /// The window of the sliding layers (`None` only when no layer slides).
    pub sliding_window: Option<usize>,
    /// The rotary embedding of the global (`full_attention`) layers; Gemma 2's only one.
    pub global_rope: GemmaRope,
    /// The rotary embedding of the sliding layers (Gemma 2: the global one).
    pub local_rope: GemmaRope,
}

/// A transformers `PretrainedConfig` knob that must be off here: `key` set to `true` is refused.
fn refuse_true(v: &Value, key: &str, why: &str) -> Result<()> {
    if get_bool(v, key)? == Some(true) {
        return Err(format_err!(
            "config.json: {key} = true is not supported ({why})"
        ));
    }
    Ok(())
}

/// A soft-cap: `null` turns it off; otherwise a positive number (it divides the scores).
fn softcap(v: &Value, key: &str, default: Option<f64>) -> Result<Option<f64>> {
    match v.get(key) {
        None => Ok(default),
        Some(Value::Null) => Ok(None),
        Some(_) => Ok(Some(positive_real(key, get_f64(v, key)?.unwrap_or(0.0))?)),
    }
}

/// One rotary section (`rope_scaling`, or a `rope_parameters` entry) named `section`: its type,
/// and its base when it gives one. fasttx runs `default` and `linear` for Gemma; any other type
/// is refused naming the section.
fn rope_section(section: &str, s: &Value) -> Result<(Option<f64>, RopeScaling)> {
    if !s.is_object() {
        return Err(format_err!(
            "config.json: {section} must be an object, got {s}"
        ));
    }
    let kind = match s.get("rope_type").or_else(|| s.get("type")) {
        None | Some(Value::Null) => "default",
        Some(Value::String(k)) => k.as_str(),
        Some(other) => {
            return Err(format_err!(
                "config.json: {section}.rope_type must be a string, got {other}"
            ))
        }
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => {
            let key = format!("{section}.factor");
            let factor = get_f64(s, "factor")?
                .ok_or_else(|| format_err!("config.json: rope scaling 'linear' needs {key}"))?;
            RopeScaling::Linear {
                factor: positive_real(&key, factor)? as f32,
            }
        }
        other => {
            return Err(format_err!(
                "config.json: {section}.rope_type '{other}' is not supported for Gemma (fasttx supports default and linear)"
            ))
        }
    };
    let theta = get_f64(s, "rope_theta")?
        .map(|t| positive_real(&format!("{section}.rope_theta"), t))
        .transpose()?;
    Ok((theta, scaling))
}

/// Gemma 2's rotary embedding: transformers 5.x's flat `rope_parameters`, or the Hub's
/// `rope_theta` / `rope_scaling` (which wins over `rope_parameters`, as transformers folds it in).
fn gemma2_rope(v: &Value) -> Result<GemmaRope> {
    let mut theta = get_f64(v, "rope_theta")?;
    let mut scaling = RopeScaling::None;
    if let Some(p) = v.get("rope_parameters").filter(|p| !p.is_null()) {
        let (t, s) = rope_section("rope_parameters", p)?;
        theta = t.or(theta);
        scaling = s;
    }
    if let Some(s) = v.get("rope_scaling").filter(|s| !s.is_null()) {
        scaling = rope_section("rope_scaling", s)?.1;
    }
    Ok(GemmaRope {
        theta: positive_real("rope_theta", theta.unwrap_or(10000.0))?,
        scaling,
    })
}

/// Gemma 3's two rotary embeddings `(global, local)`, as `Gemma3TextConfig` builds its
/// `rope_parameters` per layer type: nested `rope_parameters` first; `rope_scaling` updates the
/// global one; bases default to `rope_theta` (else 1e6) and `rope_local_base_freq` (else 1e4).
fn gemma3_ropes(v: &Value) -> Result<(GemmaRope, GemmaRope)> {
    let mut global = (None, RopeScaling::None);
    let mut local = (None, RopeScaling::None);
    if let Some(p) = v.get("rope_parameters").filter(|p| !p.is_null()) {
        let Some(map) = p.as_object() else {
            return Err(format_err!(
                "config.json: rope_parameters must be an object, got {p}"
            ));
        };
        if let Some(key) = map
            .keys()
            .find(|k| *k != "full_attention" && *k != "sliding_attention")
        {
            return Err(format_err!(
                "config.json: rope_parameters.{key} is not supported for gemma3_text (expected one entry per layer type: full_attention, sliding_attention)"
            ));
        }
        for (key, slot) in [
            ("full_attention", &mut global),
            ("sliding_attention", &mut local),
        ] {
            if let Some(s) = map.get(key).filter(|s| !s.is_null()) {
                *slot = rope_section(&format!("rope_parameters.{key}"), s)?;
            }
        }
    }
    if let Some(s) = v.get("rope_scaling").filter(|s| !s.is_null()) {
        let (theta, scaling) = rope_section("rope_scaling", s)?;
        global = (theta.or(global.0), scaling);
    }
    let global_theta = global
        .0
        .or(get_f64(v, "rope_theta")?)
        .unwrap_or(1_000_000.0);
    let local_theta = local
        .0
        .or(get_f64(v, "rope_local_base_freq")?)
        .unwrap_or(10_000.0);
    Ok((
        GemmaRope {
            theta: positive_real("rope_theta", global_theta)?,
            scaling: global.1,
        },
        GemmaRope {
            theta: positive_real("rope_local_base_freq", local_theta)?,
            scaling: local.1,
        },
    ))
}

/// Which layers slide: `layer_types`, else the version's pattern (Gemma 2: every other layer,
/// starting with a sliding one; Gemma 3: `sliding_window_pattern - 1` sliding layers, then a
/// global one, pattern 6 by default).
fn layer_pattern(v: &Value, version: GemmaVersion, layers: usize) -> Result<Vec<bool>> {
    if let Some(types) = v.get("layer_types").filter(|t| !t.is_null()) {
        let list = types
            .as_array()
            .ok_or_else(|| format_err!("config.json: layer_types must be a list, got {types}"))?;
        if list.len() != layers {
            return Err(format_err!(
                "config.json: layer_types lists {} layers, num_hidden_layers is {layers}",
                list.len()
            ));
        }
        return list
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(format_err!(
                    "config.json: layer_types entry {t} is not supported (fasttx runs sliding_attention and full_attention)"
                )),
            })
            .collect();
    }
    let pattern = match version {
        GemmaVersion::Gemma2 => 2,
        GemmaVersion::Gemma3 => positive(
            "sliding_window_pattern",
            get_usize(v, "sliding_window_pattern")?.unwrap_or(6),
        )?,
    };
    Ok((0..layers).map(|i| (i + 1) % pattern != 0).collect())
}

impl GemmaConfig {
    /// Parses a transformers `config.json` of `Gemma2Config` or `Gemma3TextConfig`, whose class
    /// defaults fill what it leaves out.
    pub fn from_json(version: GemmaVersion, json: &str) -> Result<Self> {
        let v = parse_object(json)?;
        let gemma3 = version == GemmaVersion::Gemma3;
        let usize_or = |key: &str, default: usize| -> Result<usize> {
            positive(key, get_usize(&v, key)?.unwrap_or(default))
        };
        let num_hidden_layers = usize_or("num_hidden_layers", 26)?;
        let num_attention_heads = usize_or("num_attention_heads", 8)?;
        let num_key_value_heads = usize_or("num_key_value_heads", 4)?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(format_err!(
                "config.json: num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads ({num_key_value_heads})"
            ));
        }
        let head_dim = usize_or("head_dim", 256)?;
        if head_dim % 2 != 0 {
            return Err(format_err!(
                "config.json: head_dim must be even (rotary embeddings rotate pairs), got {head_dim}"
            ));
        }
        product(&[
            ("num_attention_heads", num_attention_heads),
            ("head_dim", head_dim),
        ])?;
        refuse_true(
            &v,
            "use_bidirectional_attention",
            "fasttx runs Gemma as a causal language model",
        )?;
        let hidden_activation = match get_str(&v, "hidden_activation")?.unwrap_or("gelu_pytorch_tanh")
        {
            "gelu_pytorch_tanh" | "gelu_new" => GemmaActivation::GeluTanh,
            "gelu" => GemmaActivation::GeluErf,
            other => {
                return Err(format_err!(
                    "config.json: hidden_activation '{other}' is not supported for Gemma (gelu_pytorch_tanh, gelu_new, gelu)"
                ))
            }
        };
        let sliding = layer_pattern(&v, version, num_hidden_layers)?;
        let sliding_window = match get_usize(&v, "sliding_window")? {
            Some(w) => Some(positive("sliding_window", w)?),
            // An absent key takes the class default; `null` leaves none, which transformers
            // refuses too once a layer slides.
            None if v.get("sliding_window").is_none() => Some(4096),
            None => None,
        };
        if sliding.contains(&true) && sliding_window.is_none() {
            return Err(format_err!(
                "config.json: sliding_window is null but layer_types has sliding_attention layers"
            ));
        }
        let (global_rope, local_rope) = if gemma3 {
            gemma3_ropes(&v)?
        } else {
            let rope = gemma2_rope(&v)?;
            (rope.clone(), rope)
        };
        Ok(GemmaConfig {
            version,
            vocab_size: usize_or("vocab_size", if gemma3 { 262_208 } else { 256_000 })?,
            hidden_size: usize_or("hidden_size", 2304)?,
            intermediate_size: usize_or("intermediate_size", 9216)?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: epsilon("rms_norm_eps", get_f64(&v, "rms_norm_eps")?.unwrap_or(1e-6))?,
            max_position_embeddings: usize_or(
                "max_position_embeddings",
                if gemma3 { 131_072 } else { 8192 },
            )?,
            tie_word_embeddings: get_bool(&v, "tie_word_embeddings")?.unwrap_or(true),
            attention_bias: get_bool(&v, "attention_bias")?.unwrap_or(false),
            hidden_activation,
            query_pre_attn_scalar: positive_real(
                "query_pre_attn_scalar",
                get_f64(&v, "query_pre_attn_scalar")?.unwrap_or(256.0),
            )?,
            attn_logit_softcapping: if gemma3 {
                None
            } else {
                softcap(&v, "attn_logit_softcapping", Some(50.0))?
            },
            final_logit_softcapping: softcap(
                &v,
                "final_logit_softcapping",
                if gemma3 { None } else { Some(30.0) },
            )?,
            sliding,
            sliding_window,
            global_rope,
            local_rope,
        })
    }
}

impl ModelConfig for GemmaConfig {
    fn attention_heads(&self) -> (usize, usize) {
        (self.num_attention_heads, self.num_key_value_heads)
    }

    fn build(&self, weights: &dyn WeightSource, threads: usize) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(GemmaModel::load(self.clone(), weights, threads)?))
    }
}

struct Layer {
    input_norm: Vec<f32>,
    /// `[q | k | v]`, one product.
    qkv: LinearSet,
    /// Gemma 3's per-head query and key norms.
    qk_norms: Option<(Vec<f32>, Vec<f32>)>,
    o: Linear,
    post_attention_norm: Vec<f32>,
    pre_ff_norm: Vec<f32>,
    /// `[gate | up]`, one product.
    gate_up: LinearSet,
    down: Linear,
    post_ff_norm: Vec<f32>,
    /// The window of a sliding layer.
    window: Option<usize>,
    /// Index into [`GemmaWeights::ropes`].
    rope: usize,
}

struct GemmaWeights {
    cfg: GemmaConfig,
    eps: f32,
    /// `sqrt(hidden_size)` as transformers' f32 `embed_scale` buffer holds it.
    embed_scale: f32,
    embed: Weight,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Linear,
    /// Gemma 2: one; Gemma 3: global, then local.
    ropes: Vec<Rope>,
    pool: rayon::ThreadPool,
}

pub struct GemmaModel {
    inner: Arc<GemmaWeights>,
}

/// A Gemma RMSNorm's factor `1 + w`, computed in f32 as transformers does per step (here once).
fn norm(w: &dyn WeightSource, name: &str, dim: usize) -> Result<Vec<f32>> {
    let t: Tensor = w.tensor(name)?.expect_shape(name, &[dim])?;
    Ok(t.data().iter().map(|x| 1.0 + x).collect())
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
        let bname = format!("{prefix}.bias");
        Some(
            w.tensor(&bname)?
                .expect_shape(&bname, &[out])?
                .data()
                .to_vec(),
        )
    } else {
        None
    };
    projection(w, Linear::new(weight, bias)?)
}

impl GemmaModel {
    pub fn load(cfg: GemmaConfig, w: &dyn WeightSource, threads: usize) -> Result<Self> {
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
        // Tied, or a checkpoint that left the head out (GGUF without `output.weight`).
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        let lm_head = if tied {
            projection(w, Linear::new(embed.clone(), None)?)?
        } else {
            linear(w, "lm_head", cfg.vocab_size, d, false)?
        };
        // int8 with a tied head: lookups read the head's int8 rows (see llama.rs).
        let embed = if tied && w.int8() && d.is_multiple_of(QuantFormat::Q8_0.block_values()) {
            lm_head.weight().clone()
        } else {
            embed
        };
        let gemma3 = cfg.version == GemmaVersion::Gemma3;
        let bias = cfg.attention_bias;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let sliding = cfg.sliding[i];
                Ok(Layer {
                    input_norm: norm(w, &format!("{p}.input_layernorm.weight"), d)?,
                    qkv: LinearSet::new(vec![
                        linear(w, &format!("{p}.self_attn.q_proj"), q_out, d, bias)?,
                        linear(w, &format!("{p}.self_attn.k_proj"), kv_out, d, bias)?,
                        linear(w, &format!("{p}.self_attn.v_proj"), kv_out, d, bias)?,
                    ])?,
                    qk_norms: if gemma3 {
                        Some((
                            norm(w, &format!("{p}.self_attn.q_norm.weight"), hd)?,
                            norm(w, &format!("{p}.self_attn.k_norm.weight"), hd)?,
                        ))
                    } else {
                        None
                    },
                    o: linear(w, &format!("{p}.self_attn.o_proj"), d, q_out, bias)?,
                    post_attention_norm: norm(
                        w,
                        &format!("{p}.post_attention_layernorm.weight"),
                        d,
                    )?,
                    pre_ff_norm: norm(w, &format!("{p}.pre_feedforward_layernorm.weight"), d)?,
                    gate_up: LinearSet::new(vec![
                        linear(w, &format!("{p}.mlp.gate_proj"), ff, d, false)?,
                        linear(w, &format!("{p}.mlp.up_proj"), ff, d, false)?,
                    ])?,
                    down: linear(w, &format!("{p}.mlp.down_proj"), d, ff, false)?,
                    post_ff_norm: norm(w, &format!("{p}.post_feedforward_layernorm.weight"), d)?,
                    window: if sliding { cfg.sliding_window } else { None },
                    rope: usize::from(gemma3 && sliding),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ropes = vec![Rope::new(
            hd,
            cfg.global_rope.theta,
            &cfg.global_rope.scaling,
        )?];
        if gemma3 {
            ropes.push(Rope::new(
                hd,
                cfg.local_rope.theta,
                &cfg.local_rope.scaling,
            )?);
        }
        let weights = GemmaWeights {
            eps: cfg.rms_norm_eps as f32,
            embed_scale: (d as f64).sqrt() as f32,
            norm: norm(w, "model.norm.weight", d)?,
            ropes,
            embed,
            layers,
            lm_head,
            pool: build_pool(threads)?,
            cfg,
        };
        Ok(GemmaModel {
            inner: Arc::new(weights),
        })
    }
}

impl Model for GemmaModel {
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

/// Gemma's step buffers beside the shared ones.
#[derive(Default)]
struct Scratch {
    gate_up: Vec<f32>,
    g: Vec<f32>,
    /// A normalised copy (q/k norms write here, then swap).
    normed: Vec<f32>,
    /// The rotary angles of each of [`GemmaWeights::ropes`].
    angles: Vec<RopeAngles>,
}

/// `x ← rms_norm(x) * factor` over rows of `factor.len()`, through `tmp`.
fn norm_in_place(x: &mut Vec<f32>, factor: &[f32], eps: f32, tmp: &mut Vec<f32>) {
    tmp.resize(x.len(), 0.0);
    rms_norm(x, factor, eps, tmp);
    std::mem::swap(x, tmp);
}

impl DecoderStack for GemmaWeights {
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
            let start = h.len();
            w.embed.extend_with_row(t as usize, &mut h);
            h[start..].iter_mut().for_each(|x| *x *= w.embed_scale);
        }
        let base = Attention {
            heads,
            kv_heads,
            head_dim: hd,
            // transformers multiplies the f32 scores by the Python float, rounded to f32.
            scale: cfg.query_pre_attn_scalar.powf(-0.5) as f32,
            causal: true,
            q_offset: cache.len(),
            window: None,
            softcap: cfg.attn_logit_softcapping.map(|c| c as f32),
            bias: None,
            interrupt: input.interrupt,
        };
        cache.begin_step(n, input.mask);
        s.angles.resize_with(w.ropes.len(), RopeAngles::default);
        for (rope, angles) in w.ropes.iter().zip(s.angles.iter_mut()) {
            rope.angles_into(positions, angles);
        }
        b.x.resize(m * d, 0.0);
        b.ctx.resize(m * heads * hd, 0.0);
        for (li, layer) in w.layers.iter().enumerate() {
            input.check_interrupt()?;
            rms_norm(&h, &layer.input_norm, w.eps, &mut b.x);
            b.project_qkv(&layer.qkv, m, input.interrupt)?;
            if let Some((qn, kn)) = &layer.qk_norms {
                norm_in_place(&mut b.q, qn, w.eps, &mut s.normed);
                norm_in_place(&mut b.k, kn, w.eps, &mut s.normed);
            }
            let (rope, angles) = (&w.ropes[layer.rope], &s.angles[layer.rope]);
            rope.apply_angles(&mut b.q, heads, angles);
            rope.apply_angles(&mut b.k, kv_heads, angles);
            cache.write(li, &b.k, &b.v);
            let attn = Attention {
                window: layer.window,
                ..base
            };
            attn.run(&b.q, rows, n, &cache.view(li), &mut b.ctx);
            layer
                .o
                .forward_checked(&b.ctx, m, &mut b.proj, input.interrupt)?;
            rms_norm(&b.proj, &layer.post_attention_norm, w.eps, &mut b.x);
            add(&mut h, &b.x);

            input.check_interrupt()?;
            rms_norm(&h, &layer.pre_ff_norm, w.eps, &mut b.x);
            layer
                .gate_up
                .forward_checked(&b.x, m, &mut s.gate_up, input.interrupt)?;
            match cfg.hidden_activation {
                GemmaActivation::GeluTanh => gated_into(&s.gate_up, m, gelu_tanh, &mut s.g),
                GemmaActivation::GeluErf => gated_into(&s.gate_up, m, gelu_erf, &mut s.g),
            }
            layer
                .down
                .forward_checked(&s.g, m, &mut b.proj, input.interrupt)?;
            rms_norm(&b.proj, &layer.post_ff_norm, w.eps, &mut b.x);
            add(&mut h, &b.x);
        }
        cache.commit();

        let count = b.logit_rows(&h, rows, n, d, last_only);
        rms_norm(&b.last, &w.norm, w.eps, &mut b.x);
        b.h = h;
        let mut logits = Vec::new();
        w.lm_head
            .forward_checked(&b.x, count, &mut logits, input.interrupt)?;
        if let Some(cap) = cfg.final_logit_softcapping {
            let cap = cap as f32;
            logits.iter_mut().for_each(|l| *l = (*l / cap).tanh() * cap);
        }
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(version: GemmaVersion, json: &str) -> Result<GemmaConfig> {
        GemmaConfig::from_json(version, json)
    }

    #[test]
    fn class_defaults_and_layer_patterns() {
        let g2 = parse(GemmaVersion::Gemma2, r#"{"num_hidden_layers": 4}"#).unwrap();
        assert_eq!(g2.sliding, [true, false, true, false]);
        assert_eq!(
            (g2.attn_logit_softcapping, g2.final_logit_softcapping),
            (Some(50.0), Some(30.0))
        );
        assert_eq!(g2.sliding_window, Some(4096));
        let g3 = parse(
            GemmaVersion::Gemma3,
            r#"{"num_hidden_layers": 7, "attn_logit_softcapping": 20.0}"#,
        )
        .unwrap();
        assert_eq!(
            g3.sliding,
            [true, true, true, true, true, false, true],
            "pattern 6"
        );
        assert_eq!(
            (g3.attn_logit_softcapping, g3.final_logit_softcapping),
            (None, None)
        );
        assert_eq!((g3.global_rope.theta, g3.local_rope.theta), (1e6, 1e4));
        let off = parse(
            GemmaVersion::Gemma2,
            r#"{"attn_logit_softcapping": null, "final_logit_softcapping": null}"#,
        )
        .unwrap();
        assert_eq!(
            (off.attn_logit_softcapping, off.final_logit_softcapping),
            (None, None)
        );
    }

    #[test]
    fn gemma3_ropes_from_hub_and_nested_configs() {
        let hub = parse(
            GemmaVersion::Gemma3,
            r#"{"rope_theta": 500.0, "rope_local_base_freq": 70.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0}}"#,
        )
        .unwrap();
        assert_eq!(hub.global_rope.theta, 500.0);
        assert_eq!(hub.global_rope.scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!(
            (hub.local_rope.theta, &hub.local_rope.scaling),
            (70.0, &RopeScaling::None)
        );
        let nested = parse(
            GemmaVersion::Gemma3,
            r#"{"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 9.0}, "sliding_attention": {"rope_type": "default", "rope_theta": 5.0}}}"#,
        )
        .unwrap();
        assert_eq!(
            nested.global_rope,
            GemmaRope {
                theta: 9.0,
                scaling: RopeScaling::Linear { factor: 2.0 }
            }
        );
        assert_eq!(nested.local_rope.theta, 5.0);
    }

    #[test]
    fn unsupported_knobs_are_refused_naming_the_key() {
        for (version, json, key) in [
            (
                GemmaVersion::Gemma2,
                r#"{"use_bidirectional_attention": true}"#,
                "use_bidirectional_attention",
            ),
            (
                GemmaVersion::Gemma2,
                r#"{"hidden_activation": "relu"}"#,
                "hidden_activation",
            ),
            (
                GemmaVersion::Gemma2,
                r#"{"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}"#,
                "rope_scaling.rope_type 'yarn'",
            ),
            (
                GemmaVersion::Gemma3,
                r#"{"rope_parameters": {"full_attention": {"rope_type": "dynamic", "factor": 2.0}}}"#,
                "rope_parameters.full_attention.rope_type 'dynamic'",
            ),
            (
                GemmaVersion::Gemma3,
                r#"{"num_hidden_layers": 2, "layer_types": ["full_attention", "chunked_attention"]}"#,
                "layer_types",
            ),
            (
                GemmaVersion::Gemma3,
                r#"{"num_hidden_layers": 3, "layer_types": ["full_attention"]}"#,
                "layer_types",
            ),
            (
                GemmaVersion::Gemma2,
                r#"{"sliding_window": null}"#,
                "sliding_window",
            ),
            (
                GemmaVersion::Gemma2,
                r#"{"attn_logit_softcapping": 0.0}"#,
                "attn_logit_softcapping",
            ),
            (
                GemmaVersion::Gemma3,
                r#"{"rope_parameters": {"rope_type": "default", "rope_theta": 1.0}}"#,
                "is not supported for gemma3_text",
            ),
        ] {
            let err = parse(version, json).err().unwrap().to_string();
            assert!(
                err.starts_with("config.json: ") && err.contains(key),
                "{err}"
            );
        }
    }
}
