//! T5 (v1.0, v1.1, Flan-T5, and any configuration transformers' `T5Config` accepts).
//!
//! Mirrors `transformers/models/t5/modeling_t5.py`:
//! - T5LayerNorm is an RMS norm without mean or bias; every sub-layer is pre-norm with a residual.
//! - Attention is not scaled by `1/sqrt(d_kv)`. The first layer of each stack owns a learned
//!   relative position bias (`[num_buckets, num_heads]`) that every layer of that stack adds;
//!   the encoder buckets bidirectionally, the decoder causally; cross-attention has none.
//! - Feed-forward: `wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)` ("gated-gelu" = tanh GELU).
//! - With tied embeddings the decoder output is scaled by `d_model**-0.5` before the shared head.

use std::sync::Arc;

use super::attention::Attention;
use super::checkpoint::{self, tensor};
use super::config_checks::{
    epsilon, get_bool, get_f64, get_str, get_usize, parse_object, positive, product,
};
use super::encoder_decoder::{EncoderDecoderModel, EncoderDecoderStack, EncoderMemory};
use super::encoder_decoder_block::{CrossAttention, SelfAttention};
use super::kv_cache::KvCache;
use super::registry::ModelConfig;
use super::session::StepBuffers;
use super::{add, gated_into, projection, Model, StepInput, TokenBatch};
use crate::error::Result;
use crate::format_err;
use crate::formats::WeightSource;
use crate::interrupt::Interrupt;
use crate::kernels::{activation, norm::rms_norm};
use crate::tensor::{Linear, LinearSet, Tensor};
use crate::threading::build_pool;

#[derive(Clone, Debug)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    pub feed_forward_proj: String,
    pub tie_word_embeddings: bool,
    /// transformers 5.x writes this instead of deriving the rescale from `tie_word_embeddings`.
    pub scale_decoder_outputs: Option<bool>,
}

/// `T5Config()` defaults (t5-small's shape).
mod defaults {
    pub fn vocab_size() -> usize {
        32128
    }
    pub fn d_model() -> usize {
        512
    }
    pub fn d_kv() -> usize {
        64
    }
    pub fn d_ff() -> usize {
        2048
    }
    pub fn num_layers() -> usize {
        6
    }
    pub fn num_heads() -> usize {
        8
    }
    pub fn num_buckets() -> usize {
        32
    }
    pub fn max_distance() -> usize {
        128
    }
    pub fn layer_norm_epsilon() -> f64 {
        1e-6
    }
    pub fn feed_forward_proj() -> String {
        "relu".into()
    }
    pub fn tie_word_embeddings() -> bool {
        true
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Relu,
    GeluTanh,
    GeluErf,
    Silu,
}

impl Act {
    /// transformers' `ACT2FN` names that T5 configs use.
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "relu" => Some(Act::Relu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Act::GeluTanh),
            "gelu" => Some(Act::GeluErf),
            "silu" | "swish" => Some(Act::Silu),
            _ => None,
        }
    }

    fn apply(self, x: &mut [f32]) {
        match self {
            Act::Relu => activation::relu(x),
            Act::GeluTanh => activation::gelu_tanh(x),
            Act::GeluErf => activation::gelu_erf(x),
            Act::Silu => activation::silu(x),
        }
    }
}

impl T5Config {
    pub fn from_json(json: &str) -> Result<Self> {
        let v = parse_object(json)?;
        let size = |key: &str, default: usize| -> Result<usize> {
            positive(key, get_usize(&v, key)?.unwrap_or(default))
        };
        let cfg = T5Config {
            vocab_size: size("vocab_size", defaults::vocab_size())?,
            d_model: size("d_model", defaults::d_model())?,
            d_kv: size("d_kv", defaults::d_kv())?,
            d_ff: size("d_ff", defaults::d_ff())?,
            num_layers: size("num_layers", defaults::num_layers())?,
            num_decoder_layers: get_usize(&v, "num_decoder_layers")?
                .map(|n| positive("num_decoder_layers", n))
                .transpose()?,
            num_heads: size("num_heads", defaults::num_heads())?,
            relative_attention_num_buckets: size(
                "relative_attention_num_buckets",
                defaults::num_buckets(),
            )?,
            relative_attention_max_distance: size(
                "relative_attention_max_distance",
                defaults::max_distance(),
            )?,
            layer_norm_epsilon: epsilon(
                "layer_norm_epsilon",
                get_f64(&v, "layer_norm_epsilon")?.unwrap_or(defaults::layer_norm_epsilon()),
            )?,
            feed_forward_proj: get_str(&v, "feed_forward_proj")?
                .map_or_else(defaults::feed_forward_proj, str::to_string),
            tie_word_embeddings: get_bool(&v, "tie_word_embeddings")?
                .unwrap_or(defaults::tie_word_embeddings()),
            scale_decoder_outputs: get_bool(&v, "scale_decoder_outputs")?,
        };
        // The attention projections' row count; the model multiplies these unchecked from here on.
        product(&[("num_heads", cfg.num_heads), ("d_kv", cfg.d_kv)])?;
        let (nb, max_distance) = (
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
        );
        if nb < 4 || max_distance.saturating_mul(2) <= nb {
            return Err(format_err!(
                "config.json: relative_attention_num_buckets={nb} with relative_attention_max_distance={max_distance} is not a valid bucketing"
            ));
        }
        cfg.activation()?;
        Ok(cfg)
    }

    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// `(activation, gated)` from `feed_forward_proj`, parsed as transformers' `T5Config` does.
    fn activation(&self) -> Result<(Act, bool)> {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let gated = parts[0] == "gated";
        if (parts.len() > 1 && !gated) || parts.len() > 2 {
            return Err(format_err!(
                "config.json: feed_forward_proj '{}' is not a valid activation (use 'gated-{{ACT}}' or '{{ACT}}')",
                self.feed_forward_proj
            ));
        }
        let mut name = *parts.last().unwrap();
        if self.feed_forward_proj == "gated-gelu" {
            name = "gelu_new"; // transformers' backwards-compatibility rule
        }
        let act = Act::from_name(name).ok_or_else(|| {
            format_err!("config.json: unsupported T5 activation '{name}' in feed_forward_proj")
        })?;
        Ok((act, gated))
    }

    fn scales_decoder_output(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings)
    }
}

impl ModelConfig for T5Config {
    fn attention_heads(&self) -> (usize, usize) {
        (self.num_heads, self.num_heads)
    }

    fn build(&self, weights: &dyn WeightSource, threads: usize) -> Result<Arc<dyn Model>> {
        let weights = T5Weights::load(self.clone(), weights, threads)?;
        Ok(Arc::new(EncoderDecoderModel::new(weights)))
    }
}

/// transformers' `T5Attention._relative_position_bucket`, computed in f32 like the original so
/// distances on bucket boundaries land in the same bucket.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let distance = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            bucket += num_buckets;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = num_buckets / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let log_ratio = (distance as f32 / max_exact as f32).ln();
        let log_range = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact + (log_ratio / log_range * (num_buckets - max_exact) as f32) as i64;
        bucket += large.min(num_buckets - 1);
    }
    bucket as usize
}

/// `{prefix}.q`, `.k`, `.v` and `.o`.
fn self_attention(w: &dyn WeightSource, prefix: &str, cfg: &T5Config) -> Result<SelfAttention> {
    let (d, inner) = (cfg.d_model, cfg.inner_dim());
    Ok(SelfAttention {
        qkv: LinearSet::new(vec![
            linear(w, &format!("{prefix}.q"), inner, d)?,
            linear(w, &format!("{prefix}.k"), inner, d)?,
            linear(w, &format!("{prefix}.v"), inner, d)?,
        ])?,
        o: linear(w, &format!("{prefix}.o"), d, inner)?,
    })
}

/// `{prefix}.q`, `.k`, `.v` and `.o`: queries from the decoder, keys and values of the encoder
/// output.
fn cross_attention(w: &dyn WeightSource, prefix: &str, cfg: &T5Config) -> Result<CrossAttention> {
    let (d, inner) = (cfg.d_model, cfg.inner_dim());
    Ok(CrossAttention {
        q: linear(w, &format!("{prefix}.q"), inner, d)?,
        kv: LinearSet::new(vec![
            linear(w, &format!("{prefix}.k"), inner, d)?,
            linear(w, &format!("{prefix}.v"), inner, d)?,
        ])?,
        o: linear(w, &format!("{prefix}.o"), d, inner)?,
    })
}

struct FeedForward {
    /// `wi` (plain), or `[wi_0 | wi_1]` (gated: the activated half, then the linear half).
    wi: LinearSet,
    gated: bool,
    wo: Linear,
    act: Act,
}

impl FeedForward {
    fn load(w: &dyn WeightSource, prefix: &str, cfg: &T5Config) -> Result<Self> {
        let (act, gated) = cfg.activation()?;
        let (d, ff) = (cfg.d_model, cfg.d_ff);
        let wi = if gated {
            vec![
                linear(w, &format!("{prefix}.wi_0"), ff, d)?,
                linear(w, &format!("{prefix}.wi_1"), ff, d)?,
            ]
        } else {
            vec![linear(w, &format!("{prefix}.wi"), ff, d)?]
        };
        Ok(FeedForward {
            wi: LinearSet::new(wi)?,
            gated,
            wo: linear(w, &format!("{prefix}.wo"), d, ff)?,
            act,
        })
    }

    /// `x: [m, d_model]` → adds the feed-forward output to `residual`, unless interrupted.
    fn add_to(
        &self,
        x: &[f32],
        m: usize,
        residual: &mut [f32],
        interrupt: Option<&Interrupt>,
    ) -> Result<()> {
        let (mut wi, mut act, mut out) = (Vec::new(), Vec::new(), Vec::new());
        self.add_to_with(x, m, residual, [&mut wi, &mut act, &mut out], interrupt)
    }

    /// [`add_to`](Self::add_to) with caller-owned buffers (reused across decoding steps).
    fn add_to_with(
        &self,
        x: &[f32],
        m: usize,
        residual: &mut [f32],
        buf: [&mut Vec<f32>; 3],
        interrupt: Option<&Interrupt>,
    ) -> Result<()> {
        let [wi, act, out] = buf;
        self.wi.forward_checked(x, m, wi, interrupt)?;
        let h = if self.gated {
            gated_into(wi, m, |v| self.act.apply(v), act);
            act
        } else {
            self.act.apply(wi);
            wi
        };
        self.wo.forward_checked(h, m, out, interrupt)?;
        add(residual, out);
        Ok(())
    }
}

struct EncoderLayer {
    attn_norm: Tensor,
    attn: SelfAttention,
    ff_norm: Tensor,
    ff: FeedForward,
}

struct DecoderLayer {
    self_norm: Tensor,
    self_attn: SelfAttention,
    cross_norm: Tensor,
    cross_attn: CrossAttention,
    ff_norm: Tensor,
    ff: FeedForward,
}

struct T5Weights {
    cfg: T5Config,
    eps: f32,
    embed: Tensor,
    encoder: Vec<EncoderLayer>,
    encoder_bias: Tensor,
    encoder_norm: Tensor,
    decoder: Vec<DecoderLayer>,
    decoder_bias: Tensor,
    decoder_norm: Tensor,
    lm_head: Linear,
    output_scale: Option<f32>,
    pool: rayon::ThreadPool,
}

/// A projection without bias (T5 has none).
fn linear(w: &dyn WeightSource, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
    checkpoint::linear(w, prefix, out, inp, false)
}

impl T5Weights {
    fn load(cfg: T5Config, w: &dyn WeightSource, threads: usize) -> Result<Self> {
        let (d, vocab) = (cfg.d_model, cfg.vocab_size);
        let embed_name = [
            "shared.weight",
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
        ]
        .into_iter()
        .find(|n| w.contains(n))
        .ok_or_else(|| format_err!("the weights hold no token embedding ('shared.weight')"))?;
        let embed = tensor(w, embed_name, &[vocab, d])?;
        // transformers 5.x writes `tie_word_embeddings: true` even for untied checkpoints and then
        // keeps a stored `lm_head.weight` that differs from the embedding: a stored head wins.
        let lm_head = if w.contains("lm_head.weight") {
            linear(w, "lm_head", vocab, d)?
        } else {
            projection(w, Linear::new(embed.clone(), None)?)?
        };
        let nb = cfg.relative_attention_num_buckets;
        let bias_name = |stack: &str| {
            format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        };
        let encoder = (0..cfg.num_layers)
            .map(|i| {
                let p = format!("encoder.block.{i}.layer");
                Ok(EncoderLayer {
                    attn_norm: tensor(w, &format!("{p}.0.layer_norm.weight"), &[d])?,
                    attn: self_attention(w, &format!("{p}.0.SelfAttention"), &cfg)?,
                    ff_norm: tensor(w, &format!("{p}.1.layer_norm.weight"), &[d])?,
                    ff: FeedForward::load(w, &format!("{p}.1.DenseReluDense"), &cfg)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..cfg.decoder_layers())
            .map(|i| {
                let p = format!("decoder.block.{i}.layer");
                Ok(DecoderLayer {
                    self_norm: tensor(w, &format!("{p}.0.layer_norm.weight"), &[d])?,
                    self_attn: self_attention(w, &format!("{p}.0.SelfAttention"), &cfg)?,
                    cross_norm: tensor(w, &format!("{p}.1.layer_norm.weight"), &[d])?,
                    cross_attn: cross_attention(w, &format!("{p}.1.EncDecAttention"), &cfg)?,
                    ff_norm: tensor(w, &format!("{p}.2.layer_norm.weight"), &[d])?,
                    ff: FeedForward::load(w, &format!("{p}.2.DenseReluDense"), &cfg)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let heads = cfg.num_heads;
        // Both stacks have a first layer: the config's layer counts are positive.
        let encoder_bias = tensor(w, &bias_name("encoder"), &[nb, heads])?;
        let decoder_bias = tensor(w, &bias_name("decoder"), &[nb, heads])?;
        Ok(T5Weights {
            eps: cfg.layer_norm_epsilon as f32,
            encoder_norm: tensor(w, "encoder.final_layer_norm.weight", &[d])?,
            decoder_norm: tensor(w, "decoder.final_layer_norm.weight", &[d])?,
            output_scale: cfg.scales_decoder_output().then(|| (d as f32).powf(-0.5)),
            embed,
            encoder,
            encoder_bias,
            decoder,
            decoder_bias,
            lm_head,
            pool: build_pool(threads)?,
            cfg,
        })
    }

    fn embed(&self, ids: &[u32]) -> Vec<f32> {
        let d = self.cfg.d_model;
        let mut h = Vec::with_capacity(ids.len() * d);
        for &t in ids {
            h.extend_from_slice(self.embed.row(t as usize));
        }
        h
    }

    fn norm(&self, x: &[f32], weight: &Tensor) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        rms_norm(x, weight.data(), self.eps, &mut out);
        out
    }

    /// `bias[h][offset + distance]` for every signed `key - query` distance in `min..=max`.
    fn bias_table(&self, table: &Tensor, bidirectional: bool, min: i64, max: i64) -> Vec<f32> {
        let mut out = Vec::new();
        self.bias_table_into(table, bidirectional, min, max, &mut out);
        out
    }

    /// [`bias_table`](Self::bias_table) into a caller-owned buffer.
    fn bias_table_into(
        &self,
        table: &Tensor,
        bidirectional: bool,
        min: i64,
        max: i64,
        out: &mut Vec<f32>,
    ) {
        let heads = self.cfg.num_heads;
        let span = (max - min + 1) as usize;
        out.clear();
        out.resize(heads * span, 0.0);
        for (i, rel) in (min..=max).enumerate() {
            let bucket = relative_position_bucket(
                rel,
                bidirectional,
                self.cfg.relative_attention_num_buckets,
                self.cfg.relative_attention_max_distance,
            );
            let values = table.row(bucket);
            for h in 0..heads {
                out[h * span + i] = values[h];
            }
        }
    }

    fn attention_shape<'a>(
        &self,
        causal: bool,
        q_offset: usize,
        interrupt: Option<&'a Interrupt>,
    ) -> Attention<'a> {
        Attention {
            heads: self.cfg.num_heads,
            kv_heads: self.cfg.num_heads,
            head_dim: self.cfg.d_kv,
            scale: 1.0,
            causal,
            q_offset,
            window: None,
            softcap: None,
            bias: None,
            interrupt,
        }
    }
}

/// T5's step buffers beside the shared ones: the feed-forward's and the position bias table.
#[derive(Default)]
struct Scratch {
    ff: [Vec<f32>; 3],
    table: Vec<f32>,
}

impl EncoderDecoderStack for T5Weights {
    type Scratch = Scratch;

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn pool(&self) -> &rayon::ThreadPool {
        &self.pool
    }

    fn decode_weight_bytes(&self) -> usize {
        let layers: usize = self
            .decoder
            .iter()
            .map(|l| {
                l.self_attn.weight_bytes()
                    + l.cross_attn.step_weight_bytes()
                    + l.ff.wi.weight_bytes()
                    + l.ff.wo.weight_bytes()
            })
            .sum();
        layers + self.lm_head.weight_bytes()
    }

    fn decoder_attention(&self) -> (usize, usize, usize) {
        (self.decoder.len(), self.cfg.num_heads, self.cfg.d_kv)
    }

    /// The encoder after its final norm.
    fn encode(&self, input: &TokenBatch) -> Result<Vec<f32>> {
        let (b, l, inner) = (input.batch, input.len, self.cfg.inner_dim());
        let m = b * l;
        let mut h = self.embed(&input.ids);
        let span = 2 * l - 1;
        let table = self.bias_table(&self.encoder_bias, true, -(l as i64 - 1), l as i64 - 1);
        let bias = |head: usize, q: usize, k: usize| table[head * span + (k + l - 1 - q)];
        let interrupt = input.interrupt.as_deref();
        let mut attn = self.attention_shape(false, 0, interrupt);
        attn.bias = Some(&bias);
        let (mut ctx, mut out) = (vec![0.0; m * inner], Vec::new());
        for layer in &self.encoder {
            // Checked before each sublayer: a long input spends a fraction of a second in each.
            input.check_interrupt()?;
            let x = self.norm(&h, &layer.attn_norm);
            layer.attn.encode(&attn, &x, input, &mut ctx, &mut out)?;
            add(&mut h, &out);
            input.check_interrupt()?;
            let x = self.norm(&h, &layer.ff_norm);
            layer.ff.add_to(&x, m, &mut h, interrupt)?;
        }
        Ok(self.norm(&h, &self.encoder_norm))
    }

    fn cross_key_value_projection(&self, layer: usize) -> &LinearSet {
        &self.decoder[layer].cross_attn.kv
    }

    /// The decoder over one step's tokens (positions are the cache's own: T5 has no position ids).
    fn decode(
        &self,
        input: &StepInput,
        last_only: bool,
        cache: &mut KvCache,
        memory: &EncoderMemory,
        b: &mut StepBuffers,
        s: &mut Scratch,
    ) -> Result<Vec<f32>> {
        let (w, cfg) = (self, &self.cfg);
        let (rows, n, inner, d) = (cache.rows(), input.n, cfg.inner_dim(), cfg.d_model);
        let m = rows * n;
        let past = cache.len();
        let total = past + n;
        let mut h = std::mem::take(&mut b.h);
        h.clear();
        for &t in input.tokens {
            h.extend_from_slice(w.embed.row(t as usize));
        }
        cache.begin_step(n, input.mask);

        // Decoder self-attention: causal buckets of (key - query) distances in -(total-1)..=0.
        let span = total;
        w.bias_table_into(&w.decoder_bias, false, -(total as i64 - 1), 0, &mut s.table);
        let table = &s.table;
        let bias = |head: usize, q: usize, k: usize| table[head * span + (span - 1 - (q - k))];
        let mut self_attn = w.attention_shape(true, past, input.interrupt);
        self_attn.bias = Some(&bias);
        let cross_attn = w.attention_shape(false, 0, input.interrupt);
        b.ctx.resize(m * inner, 0.0);
        b.x.resize(m * d, 0.0);

        for (li, layer) in w.decoder.iter().enumerate() {
            // Checked before each sublayer, as in the encoder.
            input.check_interrupt()?;
            rms_norm(&h, layer.self_norm.data(), w.eps, &mut b.x);
            layer.self_attn.step(&self_attn, li, n, cache, b)?;
            add(&mut h, &b.proj);

            input.check_interrupt()?;
            rms_norm(&h, layer.cross_norm.data(), w.eps, &mut b.x);
            layer.cross_attn.step(&cross_attn, memory, li, rows, n, b)?;
            add(&mut h, &b.proj);

            input.check_interrupt()?;
            rms_norm(&h, layer.ff_norm.data(), w.eps, &mut b.x);
            let [f0, f1, f2] = &mut s.ff;
            layer
                .ff
                .add_to_with(&b.x, m, &mut h, [f0, f1, f2], input.interrupt)?;
        }
        cache.commit();

        let count = b.logit_rows(&h, rows, n, d, last_only);
        rms_norm(&b.last, w.decoder_norm.data(), w.eps, &mut b.x);
        if let Some(scale) = w.output_scale {
            b.x.iter_mut().for_each(|v| *v *= scale);
        }
        b.h = h;
        let mut logits = Vec::new();
        w.lm_head
            .forward_checked(&b.x, count, &mut logits, input.interrupt)?;
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket as bucket;

    /// `(relative position, bucket)` pairs computed with transformers' `_relative_position_bucket`.
    fn check(bidirectional: bool, num_buckets: usize, max_distance: usize, cases: &[(i64, usize)]) {
        for &(rel, want) in cases {
            assert_eq!(
                bucket(rel, bidirectional, num_buckets, max_distance),
                want,
                "relative position {rel}"
            );
        }
    }

    #[test]
    fn encoder_buckets_match_transformers() {
        #[rustfmt::skip]
        check(true, 32, 128, &[(0, 0), (1, 17), (-1, 1), (7, 23), (-7, 7), (8, 24), (-8, 8), (15, 25), (16, 26),
            (-16, 10), (32, 28), (64, 30), (127, 31), (500, 31), (-500, 15), (31, 27), (-33, 12), (45, 28), (-63, 13)]);
        check(
            true,
            8,
            20,
            &[
                (2, 6),
                (3, 6),
                (4, 6),
                (5, 6),
                (7, 7),
                (8, 7),
                (10, 7),
                (19, 7),
                (20, 7),
                (21, 7),
                (-5, 2),
                (-9, 3),
                (-40, 3),
            ],
        );
    }

    #[test]
    fn decoder_buckets_match_transformers() {
        #[rustfmt::skip]
        check(false, 32, 128, &[(0, 0), (1, 0), (-1, 1), (-15, 15), (-16, 16), (-20, 17), (-40, 23), (-100, 30),
            (-127, 31), (-1000, 31), (-31, 21), (-32, 21), (-64, 26), (-45, 23)]);
        check(
            false,
            8,
            20,
            &[
                (-2, 2),
                (-3, 3),
                (-4, 4),
                (-5, 4),
                (-7, 5),
                (-8, 5),
                (-10, 6),
                (-19, 7),
                (-20, 7),
                (-21, 7),
                (-40, 7),
            ],
        );
    }
}
