//! The BART family of translation and summarization models: BART, mBART, Marian (opus-mt) and
//! M2M100 / NLLB, one layer stack with the family's differences as config switches.
//!
//! Mirrors `transformers/models/{bart,mbart,marian,m2m_100}/modeling_*.py`:
//! - Every projection has a bias; attention is scaled by `1/sqrt(head_dim)`; LayerNorms have
//!   transformers' default epsilon (1e-5); the feed-forward is `fc2(act(fc1 x))`.
//! - Token embeddings are multiplied by `sqrt(d_model)` when `scale_embedding` is set.
//! - Positions: BART and mBART learn them (a table of `max_position_embeddings + 2` rows, read at
//!   `position + 2`); Marian adds sinusoids (sines in the first half of each row, cosines in the
//!   second) for positions `0..`; M2M100 adds tensor2tensor sinusoids numbered from the token ids
//!   (`padding_idx + 1 + ` the count of non-pad tokens so far; a pad token gets the zero row).
//! - BART and Marian are post-norm (`x = norm(x + sublayer(x))`); mBART and M2M100 are pre-norm
//!   (`x = x + sublayer(norm(x))`) with a final norm after each stack. BART and mBART normalise
//!   the embeddings (`layernorm_embedding`).
//! - The head (tied to the embedding, or `lm_head.weight`) plus `final_logits_bias` (BART, mBART,
//!   Marian). Marian may keep separate encoder and decoder vocabularies
//!   (`share_encoder_decoder_embeddings: false`, `decoder_vocab_size`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use super::attention::Attention;
use super::checkpoint;
use super::config_checks::{get_bool, get_str, get_usize, parse_object, positive, product};
use super::encoder_decoder::{EncoderDecoderModel, EncoderDecoderStack, EncoderMemory};
use super::encoder_decoder_block::{CrossAttention, SelfAttention};
use super::kv_cache::KvCache;
use super::registry::ModelConfig;
use super::session::StepBuffers;
use super::{add, projection, Model, StepInput, TokenBatch};
use crate::error::{Error, Result};
use crate::format_err;
use crate::formats::WeightSource;
use crate::interrupt::Interrupt;
use crate::kernels::activation;
use crate::kernels::norm::{layer_norm, LAYER_NORM_GROUP};
use crate::tensor::{Linear, LinearSet, Tensor};
use crate::threading::build_pool;

/// transformers' `nn.LayerNorm` default: none of the family's configs sets another.
const LAYER_NORM_EPS: f32 = 1e-5;
/// BART's and mBART's learned position tables start two rows in (fairseq's padding offset).
const LEARNED_OFFSET: usize = 2;

/// Which member of the family a config.json describes (its `model_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Bart,
    MBart,
    Marian,
    M2M100,
}

impl Family {
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "bart" => Some(Family::Bart),
            "mbart" => Some(Family::MBart),
            "marian" => Some(Family::Marian),
            "m2m_100" => Some(Family::M2M100),
            _ => None,
        }
    }

    /// Pre-norm sublayers and a final LayerNorm after each stack (mBART, M2M100).
    fn pre_norm(self) -> bool {
        matches!(self, Family::MBart | Family::M2M100)
    }

    /// A LayerNorm over the embeddings before the first layer (BART, mBART).
    fn embedding_norm(self) -> bool {
        matches!(self, Family::Bart | Family::MBart)
    }

    /// `final_logits_bias`, a buffer added to the logits (zeros when a checkpoint lacks it).
    fn logits_bias(self) -> bool {
        !matches!(self, Family::M2M100)
    }

    /// The family's `XConfig()` defaults.
    fn defaults(self) -> Defaults {
        let bart = Defaults {
            vocab_size: 50265,
            d_model: 1024,
            layers: 12,
            heads: 16,
            ffn_dim: 4096,
            max_position_embeddings: 1024,
            activation_function: "gelu",
            scale_embedding: false,
            pad_token_id: Some(1),
        };
        match self {
            Family::Bart | Family::MBart => bart,
            Family::Marian => Defaults {
                vocab_size: 58101,
                pad_token_id: Some(58100),
                ..bart
            },
            Family::M2M100 => Defaults {
                vocab_size: 128112,
                activation_function: "relu",
                scale_embedding: true,
                ..bart
            },
        }
    }

    /// Keys of transformers 3.x's one BART config class that chose these layouts. transformers
    /// now fixes the layout per model type and ignores them; a value that contradicts the model
    /// type's layout means weights trained for another layout, so it is refused, not ignored.
    fn legacy_layout(self) -> [(&'static str, bool); 5] {
        let pre = self.pre_norm();
        let sinusoidal = matches!(self, Family::Marian | Family::M2M100);
        [
            ("normalize_before", pre),
            ("add_final_layer_norm", pre),
            ("normalize_embedding", self.embedding_norm()),
            ("static_position_embeddings", sinusoidal),
            ("add_bias_logits", false),
        ]
    }
}

struct Defaults {
    vocab_size: usize,
    d_model: usize,
    layers: usize,
    heads: usize,
    ffn_dim: usize,
    max_position_embeddings: usize,
    activation_function: &'static str,
    scale_embedding: bool,
    pad_token_id: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Relu,
    GeluErf,
    GeluTanh,
    Silu,
}

impl Act {
    /// transformers' `ACT2FN` names fasttx computes.
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "relu" => Some(Act::Relu),
            "gelu" => Some(Act::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Act::GeluTanh),
            "silu" | "swish" => Some(Act::Silu),
            _ => None,
        }
    }

    fn apply(self, x: &mut [f32]) {
        match self {
            Act::Relu => activation::relu(x),
            Act::GeluErf => activation::gelu_erf(x),
            Act::GeluTanh => activation::gelu_tanh(x),
            Act::Silu => activation::silu(x),
        }
    }
}

/// One stack's shape (the encoder's and the decoder's are configured separately).
#[derive(Clone, Copy, Debug)]
pub struct StackShape {
    pub layers: usize,
    pub heads: usize,
    pub ffn_dim: usize,
}

#[derive(Clone, Debug)]
pub struct BartConfig {
    pub family: Family,
    /// The encoder's vocabulary (and the decoder's, unless `decoder_vocab_size` says otherwise).
    pub vocab_size: usize,
    /// Marian's target vocabulary: the decoder's embedding, the head and its bias.
    pub decoder_vocab_size: usize,
    pub d_model: usize,
    pub encoder: StackShape,
    pub decoder: StackShape,
    pub max_position_embeddings: usize,
    pub activation_function: String,
    pub scale_embedding: bool,
    /// M2M100 numbers positions from the non-pad tokens.
    pub pad_token_id: Option<usize>,
    pub tie_word_embeddings: bool,
    /// Marian: one embedding for both stacks (else the decoder has its own).
    pub share_encoder_decoder_embeddings: bool,
}

impl BartConfig {
    pub fn from_json(model_type: &str, json: &str) -> Result<Self> {
        let family = Family::from_model_type(model_type)
            .ok_or_else(|| format_err!("config.json: '{model_type}' is not a BART-family model"))?;
        let v = parse_object(json)?;
        let d = family.defaults();
        let size = |key: &str, default: usize| -> Result<usize> {
            positive(key, get_usize(&v, key)?.unwrap_or(default))
        };
        // transformers builds a stack of zero layers when asked to (embeddings and norms only).
        let count = |key: &str| -> Result<usize> { Ok(get_usize(&v, key)?.unwrap_or(d.layers)) };
        for (key, layout) in family.legacy_layout() {
            if let Some(value) = get_bool(&v, key)? {
                if value != layout {
                    return Err(format_err!(
                        "config.json: {key}={value} is not the {model_type} layout ({key}={layout}); \
                         transformers ignores this key and runs the {model_type} layout, which these \
                         weights were not made for"
                    ));
                }
            }
        }
        let vocab_size = size("vocab_size", d.vocab_size)?;
        let share = family != Family::Marian
            || get_bool(&v, "share_encoder_decoder_embeddings")?.unwrap_or(true);
        let decoder_vocab_size = match family {
            // MarianConfig: `decoder_vocab_size or vocab_size`; the head is the shared vocabulary's
            // when the embeddings are shared.
            Family::Marian if !share => match get_usize(&v, "decoder_vocab_size")? {
                None | Some(0) => vocab_size,
                Some(n) => n,
            },
            _ => vocab_size,
        };
        let cfg = BartConfig {
            family,
            vocab_size,
            decoder_vocab_size,
            d_model: size("d_model", d.d_model)?,
            encoder: StackShape {
                layers: count("encoder_layers")?,
                heads: size("encoder_attention_heads", d.heads)?,
                ffn_dim: size("encoder_ffn_dim", d.ffn_dim)?,
            },
            decoder: StackShape {
                layers: count("decoder_layers")?,
                heads: size("decoder_attention_heads", d.heads)?,
                ffn_dim: size("decoder_ffn_dim", d.ffn_dim)?,
            },
            max_position_embeddings: size("max_position_embeddings", d.max_position_embeddings)?,
            activation_function: get_str(&v, "activation_function")?
                .unwrap_or(d.activation_function)
                .to_string(),
            scale_embedding: get_bool(&v, "scale_embedding")?.unwrap_or(d.scale_embedding),
            pad_token_id: match v.get("pad_token_id") {
                Some(serde_json::Value::Null) => None,
                _ => get_usize(&v, "pad_token_id")?.or(d.pad_token_id),
            },
            tie_word_embeddings: get_bool(&v, "tie_word_embeddings")?.unwrap_or(true),
            share_encoder_decoder_embeddings: share,
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        let d = self.d_model;
        for (key, heads) in [
            ("encoder_attention_heads", self.encoder.heads),
            ("decoder_attention_heads", self.decoder.heads),
        ] {
            if !d.is_multiple_of(heads) {
                return Err(format_err!(
                    "config.json: d_model ({d}) must be a multiple of {key} ({heads})"
                ));
            }
        }
        // The largest products the model forms unchecked: embedding tables and position tables.
        product(&[
            ("vocab_size", self.vocab_size.max(self.decoder_vocab_size)),
            ("d_model", d),
        ])?;
        product(&[
            ("max_position_embeddings", self.max_position_embeddings),
            ("d_model", d),
        ])?;
        product(&[("encoder_ffn_dim", self.encoder.ffn_dim), ("d_model", d)])?;
        product(&[("decoder_ffn_dim", self.decoder.ffn_dim), ("d_model", d)])?;
        self.act()?;
        if self.family == Family::M2M100 {
            let Some(pad) = self.pad_token_id else {
                return Err(format_err!(
                    "config.json: pad_token_id is required: M2M100 numbers positions from the non-pad tokens"
                ));
            };
            if d < 4 {
                // tensor2tensor sinusoids divide by (d_model / 2 - 1).
                return Err(format_err!(
                    "config.json: d_model ({d}) is too small for M2M100's sinusoidal positions (at least 4)"
                ));
            }
            // Positions are pad + 1 + tokens: they must stay far from overflowing.
            if pad > u32::MAX as usize {
                return Err(format_err!(
                    "config.json: pad_token_id ({pad}) is out of range"
                ));
            }
        }
        Ok(())
    }

    fn act(&self) -> Result<Act> {
        Act::from_name(&self.activation_function).ok_or_else(|| {
            format_err!(
                "config.json: activation_function '{}' is not supported (fasttx runs relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, silu, swish)",
                self.activation_function
            )
        })
    }

    /// Positions end at `max_position_embeddings` for a table read by position (learned, or
    /// Marian's fixed sinusoid table); M2M100's sinusoids grow as transformers' do.
    fn positions_are_bounded(&self) -> bool {
        self.family != Family::M2M100
    }

    fn embed_scale(&self) -> f32 {
        if self.scale_embedding {
            (self.d_model as f64).sqrt() as f32
        } else {
            1.0
        }
    }
}

impl ModelConfig for BartConfig {
    fn attention_heads(&self) -> (usize, usize) {
        (self.encoder.heads, self.encoder.heads)
    }

    fn build(&self, weights: &dyn WeightSource, threads: usize) -> Result<Arc<dyn Model>> {
        let weights = BartWeights::load(self.clone(), weights, threads)?;
        Ok(Arc::new(EncoderDecoderModel::new(weights)))
    }
}

/// A LayerNorm's weight and bias.
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    /// `out` ← the norm of `x`'s rows.
    fn apply(&self, x: &[f32], out: &mut Vec<f32>) {
        let (w, b) = (self.weight.data(), self.bias.data());
        out.resize(x.len(), 0.0);
        let chunk = self.chunk(x.len());
        if chunk >= x.len() {
            layer_norm(x, w, b, LAYER_NORM_EPS, out);
            return;
        }
        x.par_chunks(chunk)
            .zip(out.par_chunks_mut(chunk))
            .for_each(|(x, out)| layer_norm(x, w, b, LAYER_NORM_EPS, out));
    }

    /// `out` ← the norm of `x + y` (post-norm's residual sum), through `y` (left holding the sum):
    /// each task adds and normalises its rows while they are in its cache.
    fn apply_sum(&self, x: &[f32], y: &mut [f32], out: &mut Vec<f32>) {
        let (w, b) = (self.weight.data(), self.bias.data());
        let y = &mut y[..x.len()];
        out.resize(x.len(), 0.0);
        let add_norm = |x: &[f32], y: &mut [f32], out: &mut [f32]| {
            add(y, x);
            layer_norm(y, w, b, LAYER_NORM_EPS, out);
        };
        let chunk = self.chunk(x.len());
        if chunk >= x.len() {
            add_norm(x, y, out);
            return;
        }
        x.par_chunks(chunk)
            .zip(y.par_chunks_mut(chunk))
            .zip(out.par_chunks_mut(chunk))
            .for_each(|((x, y), out)| add_norm(x, y, out));
    }

    /// Values per task over `len` values: one run of whole interleaved row groups per thread
    /// (on the current pool). Each row's statistics are sequential sums, the same bits whichever
    /// thread computes them.
    fn chunk(&self, len: usize) -> usize {
        let dim = self.weight.data().len().max(1);
        rows_per_task(len / dim, LAYER_NORM_GROUP) * dim
    }
}

/// Rows from which the elementwise passes of a step (norms, activation, the logits' bias) are
/// split over the threads: below that, a fork-join costs more than the pass.
const PARALLEL_ROWS: usize = 8;

/// Rows from which a pass is split into [`TASKS_PER_THREAD`] tasks per thread rather than one.
const MANY_ROWS_PER_THREAD: usize = 64;
/// Tasks per thread of a long pass (an encoder's): a thread that another process slows down
/// leaves its share to the others.
const TASKS_PER_THREAD: usize = 4;

/// Rows per task for a pass over `rows` rows on the current pool, a multiple of `align`: one
/// run per thread for a decoding step's few rows (each task's dispatch costs more than its share
/// of them), a few per thread for many rows; all of them (one task, no fork-join) below
/// [`PARALLEL_ROWS`] or on one thread.
fn rows_per_task(rows: usize, align: usize) -> usize {
    let threads = rayon::current_num_threads();
    if rows < PARALLEL_ROWS || threads == 1 {
        return rows.max(1);
    }
    let tasks = if rows >= MANY_ROWS_PER_THREAD * threads {
        TASKS_PER_THREAD * threads
    } else {
        threads
    };
    rows.div_ceil(tasks).next_multiple_of(align.max(1))
}

/// `f` over the `rows` rows of `x` (`[rows, width]`), in parallel when there are enough of them.
/// Only for passes whose result for a row depends on nothing else (elementwise, per row).
fn per_row(x: &mut [f32], rows: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    let width = x.len() / rows.max(1);
    let chunk = rows_per_task(rows, 1) * width;
    if chunk == 0 || chunk >= x.len() {
        f(x);
        return;
    }
    x.par_chunks_mut(chunk).for_each(f);
}

struct FeedForward {
    fc1: Linear,
    fc2: Linear,
}

struct EncoderLayer {
    self_norm: Norm,
    self_attn: SelfAttention,
    ff_norm: Norm,
    ff: FeedForward,
}

struct DecoderLayer {
    self_norm: Norm,
    self_attn: SelfAttention,
    cross_norm: Norm,
    cross_attn: CrossAttention,
    ff_norm: Norm,
    ff: FeedForward,
}

/// How a stack turns positions into vectors added to the token embeddings.
enum Positions {
    /// BART, mBART: `table[position + 2]`.
    Learned(Tensor),
    /// Marian: a fixed `[max_position_embeddings, d_model]` sinusoid table.
    Table(Vec<f32>),
    /// M2M100: tensor2tensor sinusoids of any position; `inv_freq` holds `exp(-i * ln(10000) /
    /// (half - 1))` as transformers computes it in f32, and the padding position is all zeros.
    Padded { inv_freq: Vec<f32>, pad: usize },
}

impl Positions {
    /// Adds the vector of `position` to `row`.
    fn add_to(&self, position: usize, row: &mut [f32]) {
        match self {
            Positions::Learned(t) => add(row, t.row(position + LEARNED_OFFSET)),
            Positions::Table(t) => add(row, &t[position * row.len()..][..row.len()]),
            Positions::Padded { inv_freq, pad } => {
                if position == *pad {
                    return;
                }
                let half = inv_freq.len();
                let p = position as f32;
                for (i, f) in inv_freq.iter().enumerate() {
                    let arg = p * f;
                    row[i] += arg.sin();
                    row[half + i] += arg.cos();
                }
                // An odd d_model ends with a zero column.
            }
        }
    }
}

/// transformers' `MarianSinusoidalPositionalEmbedding.create_weight`: computed in f64 (numpy),
/// stored as f32; `sin` of the even feature indices fill the first half (rounded up), `cos` of the
/// odd ones the rest.
fn marian_table(positions: usize, dim: usize) -> Vec<f32> {
    let sentinel = dim.div_ceil(2);
    let mut out = vec![0.0f32; positions * dim];
    for (pos, row) in out.chunks_exact_mut(dim).enumerate() {
        for j in 0..dim {
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
            if j % 2 == 0 {
                row[j / 2] = angle.sin() as f32;
            } else {
                row[sentinel + j / 2] = angle.cos() as f32;
            }
        }
    }
    out
}

/// M2M100's `get_embedding` frequencies, in f32 as torch computes them.
fn m2m_inv_freq(dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let step = ((10000f64).ln() / (half - 1) as f64) as f32;
    (0..half).map(|i| (i as f32 * -step).exp()).collect()
}

/// One stack's embeddings: tokens (scaled), positions, and the optional embedding norm.
struct Embedding {
    tokens: Tensor,
    positions: Positions,
    norm: Option<Norm>,
}

struct BartWeights {
    cfg: BartConfig,
    act: Act,
    scale: f32,
    pre_norm: bool,
    encoder_embed: Embedding,
    encoder: Vec<EncoderLayer>,
    encoder_norm: Option<Norm>,
    decoder_embed: Embedding,
    decoder: Vec<DecoderLayer>,
    decoder_norm: Option<Norm>,
    /// The head, without a bias: `logits_bias` (`final_logits_bias`) is added in parallel over
    /// the rows (a `Linear`'s own bias is a serial pass over every logit: 1.86M additions per
    /// step for Marian at batch 32).
    lm_head: Linear,
    logits_bias: Vec<f32>,
    pool: rayon::ThreadPool,
}

/// Reads tensors under the checkpoint's prefix (`model.` for `*ForConditionalGeneration`, none
/// for a bare `*Model`); the head and `final_logits_bias` sit outside it.
struct Reader<'a> {
    w: &'a dyn WeightSource,
    prefix: &'static str,
}

impl Reader<'_> {
    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn has(&self, name: &str) -> bool {
        self.w.contains(&self.name(name))
    }

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        checkpoint::tensor(self.w, &self.name(name), shape)
    }

    /// Every projection of the family has a bias.
    fn linear(&self, name: &str, out: usize, inp: usize) -> Result<Linear> {
        checkpoint::linear(self.w, &self.name(name), out, inp, true)
    }

    fn norm(&self, name: &str, d: usize) -> Result<Norm> {
        Ok(Norm {
            weight: self.tensor(&format!("{name}.weight"), &[d])?,
            bias: self.tensor(&format!("{name}.bias"), &[d])?,
        })
    }

    fn self_attention(&self, p: &str, d: usize) -> Result<SelfAttention> {
        Ok(SelfAttention {
            qkv: LinearSet::new(vec![
                self.linear(&format!("{p}.q_proj"), d, d)?,
                self.linear(&format!("{p}.k_proj"), d, d)?,
                self.linear(&format!("{p}.v_proj"), d, d)?,
            ])?,
            o: self.linear(&format!("{p}.out_proj"), d, d)?,
        })
    }

    fn cross_attention(&self, p: &str, d: usize) -> Result<CrossAttention> {
        Ok(CrossAttention {
            q: self.linear(&format!("{p}.q_proj"), d, d)?,
            kv: LinearSet::new(vec![
                self.linear(&format!("{p}.k_proj"), d, d)?,
                self.linear(&format!("{p}.v_proj"), d, d)?,
            ])?,
            o: self.linear(&format!("{p}.out_proj"), d, d)?,
        })
    }

    fn feed_forward(&self, p: &str, d: usize, ff: usize) -> Result<FeedForward> {
        Ok(FeedForward {
            fc1: self.linear(&format!("{p}.fc1"), ff, d)?,
            fc2: self.linear(&format!("{p}.fc2"), d, ff)?,
        })
    }

    /// The first of `names` the checkpoint holds (a tied tensor is stored once, under its
    /// source's name), as `[rows, d]`.
    fn first_of(&self, names: &[&str], rows: usize, d: usize) -> Result<Tensor> {
        let name = names.iter().find(|n| self.has(n)).ok_or_else(|| {
            format_err!(
                "the weights hold none of {}",
                names
                    .iter()
                    .map(|n| format!("'{}'", self.name(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        self.tensor(name, &[rows, d])
    }
}

impl BartWeights {
    fn load(cfg: BartConfig, w: &dyn WeightSource, threads: usize) -> Result<Self> {
        let prefix = if ["shared.weight", "encoder.embed_tokens.weight"]
            .iter()
            .any(|n| w.contains(&format!("model.{n}")))
        {
            "model."
        } else {
            ""
        };
        let r = Reader { w, prefix };
        let (d, family) = (cfg.d_model, cfg.family);
        let (vocab, dec_vocab) = (cfg.vocab_size, cfg.decoder_vocab_size);

        // A stack's own embedding wins over the shared one: untied checkpoints
        // (`tie_word_embeddings: false`) store each, tied ones only `shared.weight`.
        let encoder_tokens =
            r.first_of(&["encoder.embed_tokens.weight", "shared.weight"], vocab, d)?;
        let decoder_tokens = if cfg.share_encoder_decoder_embeddings {
            r.first_of(
                &["decoder.embed_tokens.weight", "shared.weight"],
                dec_vocab,
                d,
            )?
        } else {
            r.first_of(&["decoder.embed_tokens.weight"], dec_vocab, d)?
        };
        let lm_head = if w.contains("lm_head.weight") {
            checkpoint::tensor(w, "lm_head.weight", &[dec_vocab, d])?
        } else if cfg.tie_word_embeddings {
            decoder_tokens.clone()
        } else {
            return Err(format_err!(
                "the weights hold no 'lm_head.weight', and tie_word_embeddings is false"
            ));
        };
        let logits_bias = if family.logits_bias() && w.contains("final_logits_bias") {
            let t = checkpoint::tensor(w, "final_logits_bias", &[1, dec_vocab])?;
            t.data().to_vec()
        } else {
            // transformers initialises a missing buffer to zeros.
            vec![0.0; dec_vocab]
        };
        let lm_head = projection(w, Linear::new(lm_head, None)?)?;

        let positions = |stack: &str| -> Result<Positions> {
            Ok(match family {
                Family::Bart | Family::MBart => Positions::Learned(r.tensor(
                    &format!("{stack}.embed_positions.weight"),
                    &[cfg.max_position_embeddings + LEARNED_OFFSET, d],
                )?),
                Family::Marian => Positions::Table(marian_table(cfg.max_position_embeddings, d)),
                Family::M2M100 => Positions::Padded {
                    inv_freq: m2m_inv_freq(d),
                    pad: cfg.pad_token_id.expect("checked with the config"),
                },
            })
        };
        let embedding_norm = |stack: &str| -> Result<Option<Norm>> {
            family
                .embedding_norm()
                .then(|| r.norm(&format!("{stack}.layernorm_embedding"), d))
                .transpose()
        };
        let final_norm = |stack: &str| -> Result<Option<Norm>> {
            family
                .pre_norm()
                .then(|| r.norm(&format!("{stack}.layer_norm"), d))
                .transpose()
        };
        let encoder = (0..cfg.encoder.layers)
            .map(|i| {
                let p = format!("encoder.layers.{i}");
                Ok(EncoderLayer {
                    self_norm: r.norm(&format!("{p}.self_attn_layer_norm"), d)?,
                    self_attn: r.self_attention(&format!("{p}.self_attn"), d)?,
                    ff_norm: r.norm(&format!("{p}.final_layer_norm"), d)?,
                    ff: r.feed_forward(&p, d, cfg.encoder.ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..cfg.decoder.layers)
            .map(|i| {
                let p = format!("decoder.layers.{i}");
                Ok(DecoderLayer {
                    self_norm: r.norm(&format!("{p}.self_attn_layer_norm"), d)?,
                    self_attn: r.self_attention(&format!("{p}.self_attn"), d)?,
                    cross_norm: r.norm(&format!("{p}.encoder_attn_layer_norm"), d)?,
                    cross_attn: r.cross_attention(&format!("{p}.encoder_attn"), d)?,
                    ff_norm: r.norm(&format!("{p}.final_layer_norm"), d)?,
                    ff: r.feed_forward(&p, d, cfg.decoder.ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BartWeights {
            act: cfg.act()?,
            scale: cfg.embed_scale(),
            pre_norm: family.pre_norm(),
            encoder_embed: Embedding {
                tokens: encoder_tokens,
                positions: positions("encoder")?,
                norm: embedding_norm("encoder")?,
            },
            encoder,
            encoder_norm: final_norm("encoder")?,
            decoder_embed: Embedding {
                tokens: decoder_tokens,
                positions: positions("decoder")?,
                norm: embedding_norm("decoder")?,
            },
            decoder,
            decoder_norm: final_norm("decoder")?,
            lm_head,
            logits_bias,
            pool: build_pool(threads)?,
            cfg,
        })
    }

    fn attention<'a>(
        &self,
        heads: usize,
        causal: bool,
        q_offset: usize,
        interrupt: Option<&'a Interrupt>,
    ) -> Attention<'a> {
        let head_dim = self.cfg.d_model / heads;
        Attention {
            heads,
            kv_heads: heads,
            head_dim,
            scale: (head_dim as f32).powf(-0.5),
            causal,
            q_offset,
            window: None,
            softcap: None,
            bias: None,
            interrupt,
        }
    }

    /// A sublayer's input into `x`: the normalised stream `h` (pre-norm), or the stream itself
    /// (post-norm: moved, not copied; `h` is then free until [`Self::sublayer_output`]).
    fn sublayer_input(&self, h: &mut Vec<f32>, norm: &Norm, x: &mut Vec<f32>) {
        if self.pre_norm {
            norm.apply(h, x);
        } else {
            std::mem::swap(h, x);
        }
    }

    /// The stream `h` after a sublayer that read `x` (from [`Self::sublayer_input`]) and wrote
    /// `out` (then free): `h + out` (pre-norm), or `norm(x + out)` (post-norm).
    fn sublayer_output(&self, h: &mut Vec<f32>, x: &[f32], out: &mut [f32], norm: &Norm) {
        if self.pre_norm {
            add(h, out);
        } else {
            norm.apply_sum(x, out, h);
        }
    }

    /// `fc2(act(fc1 x))` into `out`, through the caller's `hidden` buffer.
    fn feed_forward(
        &self,
        ff: &FeedForward,
        x: &[f32],
        m: usize,
        hidden: &mut Vec<f32>,
        out: &mut Vec<f32>,
        interrupt: Option<&Interrupt>,
    ) -> Result<()> {
        ff.fc1.forward_checked(x, m, hidden, interrupt)?;
        // Elementwise: the same bits however the rows are split.
        per_row(hidden, m, |h| self.act.apply(h));
        ff.fc2.forward_checked(hidden, m, out, interrupt)
    }

    /// Scaled token embeddings plus positions (`positions[i]` for token `i`), normalised when the
    /// family normalises embeddings.
    fn embed(&self, e: &Embedding, ids: &[u32], positions: &[usize], h: &mut Vec<f32>) {
        let d = self.cfg.d_model;
        h.clear();
        for (&t, &pos) in ids.iter().zip(positions) {
            let start = h.len();
            h.extend(e.tokens.row(t as usize).iter().map(|v| v * self.scale));
            e.positions.add_to(pos, &mut h[start..start + d]);
        }
        if let Some(norm) = &e.norm {
            let mut normed = Vec::new();
            norm.apply(h, &mut normed);
            *h = normed;
        }
    }

    /// Position ids of `rows` rows of `n` tokens following `past` positions: the cache position for
    /// the table families; M2M100's `create_position_ids_from_input_ids` (per row, the non-pad
    /// tokens counted from `past`, offset by the pad id; a pad token sits at the pad id).
    fn position_ids(&self, ids: &[u32], rows: usize, n: usize, past: usize) -> Vec<usize> {
        match self.cfg.family {
            Family::M2M100 => {
                let pad = self.cfg.pad_token_id.expect("checked with the config");
                let mut out = Vec::with_capacity(rows * n);
                for row in ids.chunks_exact(n).take(rows) {
                    let mut seen = past;
                    for &t in row {
                        if t as usize == pad {
                            out.push(pad);
                        } else {
                            seen += 1;
                            out.push(pad + seen);
                        }
                    }
                }
                out
            }
            _ => (0..rows).flat_map(|_| past..past + n).collect(),
        }
    }

    /// Refuses positions beyond a bounded table, naming the limit.
    fn check_positions(&self, what: &str, last: usize) -> Result<()> {
        let limit = self.cfg.max_position_embeddings;
        if self.cfg.positions_are_bounded() && last >= limit {
            return Err(Error::InvalidInput(format!(
                "{what} reaches position {last}, beyond the {limit} positions this model has (max_position_embeddings)"
            )));
        }
        Ok(())
    }
}

/// Step buffers beside the shared ones: the feed-forward's hidden layer and a spare stream.
#[derive(Default)]
struct Scratch {
    hidden: Vec<f32>,
}

impl EncoderDecoderStack for BartWeights {
    type Scratch = Scratch;

    // The model's vocabulary is the decoder's (its logits); the encoder's may be larger (Marian).
    #[allow(clippy::misnamed_getters)]
    fn vocab_size(&self) -> usize {
        self.cfg.decoder_vocab_size
    }

    fn encoder_vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn pool(&self) -> &rayon::ThreadPool {
        &self.pool
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.cfg.max_position_embeddings)
    }

    fn max_positions_is_hard(&self) -> bool {
        self.cfg.positions_are_bounded()
    }

    fn decode_weight_bytes(&self) -> usize {
        let layers: usize = self
            .decoder
            .iter()
            .map(|l| {
                l.self_attn.weight_bytes()
                    + l.cross_attn.step_weight_bytes()
                    + l.ff.fc1.weight_bytes()
                    + l.ff.fc2.weight_bytes()
            })
            .sum();
        layers + self.lm_head.weight_bytes()
    }

    fn decoder_attention(&self) -> (usize, usize, usize) {
        let heads = self.cfg.decoder.heads;
        (self.decoder.len(), heads, self.cfg.d_model / heads)
    }

    /// The encoder after its final norm (pre-norm families).
    fn encode(&self, input: &TokenBatch) -> Result<Vec<f32>> {
        let (b, l, d) = (input.batch, input.len, self.cfg.d_model);
        self.check_positions("the input", l - 1)?;
        let m = b * l;
        let heads = self.cfg.encoder.heads;
        let interrupt = input.interrupt.as_deref();
        let mut h = Vec::new();
        let positions = self.position_ids(&input.ids, b, l, 0);
        self.embed(&self.encoder_embed, &input.ids, &positions, &mut h);
        let attn = self.attention(heads, false, 0, interrupt);
        let (mut x, mut ctx, mut out, mut hidden) =
            (Vec::new(), vec![0.0; m * d], Vec::new(), Vec::new());
        for layer in &self.encoder {
            // Checked before each sublayer: a long input spends a fraction of a second in each.
            input.check_interrupt()?;
            self.sublayer_input(&mut h, &layer.self_norm, &mut x);
            layer
                .self_attn
                .encode(&attn, &x, input, &mut ctx, &mut out)?;
            self.sublayer_output(&mut h, &x, &mut out, &layer.self_norm);

            input.check_interrupt()?;
            self.sublayer_input(&mut h, &layer.ff_norm, &mut x);
            self.feed_forward(&layer.ff, &x, m, &mut hidden, &mut out, interrupt)?;
            self.sublayer_output(&mut h, &x, &mut out, &layer.ff_norm);
        }
        if let Some(norm) = &self.encoder_norm {
            norm.apply(&h, &mut x);
            return Ok(x);
        }
        Ok(h)
    }

    fn cross_key_value_projection(&self, layer: usize) -> &LinearSet {
        &self.decoder[layer].cross_attn.kv
    }

    /// The decoder over one step's tokens, at the cache's positions (as transformers numbers
    /// them: `cache_length + i`, or M2M100's count of non-pad tokens).
    fn decode(
        &self,
        input: &StepInput,
        last_only: bool,
        cache: &mut KvCache,
        memory: &EncoderMemory,
        b: &mut StepBuffers,
        s: &mut Scratch,
    ) -> Result<Vec<f32>> {
        let (rows, n, d) = (cache.rows(), input.n, self.cfg.d_model);
        let m = rows * n;
        let past = cache.len();
        self.check_positions("the decoder input", past + n - 1)?;
        let heads = self.cfg.decoder.heads;
        let mut h = std::mem::take(&mut b.h);
        let positions = self.position_ids(input.tokens, rows, n, past);
        self.embed(&self.decoder_embed, input.tokens, &positions, &mut h);
        cache.begin_step(n, input.mask);
        let self_attn = self.attention(heads, true, past, input.interrupt);
        let cross_attn = self.attention(heads, false, 0, input.interrupt);
        b.ctx.resize(m * d, 0.0);

        for (li, layer) in self.decoder.iter().enumerate() {
            // Checked before each sublayer, as in the encoder.
            input.check_interrupt()?;
            self.sublayer_input(&mut h, &layer.self_norm, &mut b.x);
            layer.self_attn.step(&self_attn, li, n, cache, b)?;
            self.sublayer_output(&mut h, &b.x, &mut b.proj, &layer.self_norm);

            input.check_interrupt()?;
            self.sublayer_input(&mut h, &layer.cross_norm, &mut b.x);
            layer.cross_attn.step(&cross_attn, memory, li, rows, n, b)?;
            self.sublayer_output(&mut h, &b.x, &mut b.proj, &layer.cross_norm);

            input.check_interrupt()?;
            self.sublayer_input(&mut h, &layer.ff_norm, &mut b.x);
            self.feed_forward(
                &layer.ff,
                &b.x,
                m,
                &mut s.hidden,
                &mut b.proj,
                input.interrupt,
            )?;
            self.sublayer_output(&mut h, &b.x, &mut b.proj, &layer.ff_norm);
        }
        cache.commit();

        let count = b.logit_rows(&h, rows, n, d, last_only);
        match &self.decoder_norm {
            Some(norm) => norm.apply(&b.last, &mut b.x),
            None => b.x.copy_from_slice(&b.last),
        }
        b.h = h;
        // Zeroed by the allocator (fresh pages need no memset): the product writes every value.
        let mut logits = vec![0.0; count * self.lm_head.out_features()];
        self.lm_head
            .forward_checked(&b.x, count, &mut logits, input.interrupt)?;
        // The bias pass also finds whether every logit is finite, which the caller would otherwise
        // learn by another pass over them (generation refuses NaN and infinite logits).
        let bias = &self.logits_bias;
        let finite = AtomicBool::new(true);
        per_row(&mut logits, count, |rows| {
            let mut all = true;
            for row in rows.chunks_exact_mut(bias.len()) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                    all &= v.is_finite();
                }
            }
            if !all {
                finite.store(false, Ordering::Relaxed);
            }
        });
        b.logits_finite = Some(finite.into_inner());
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marian_sinusoids_put_sines_first_and_cosines_second() {
        let (dim, t) = (6, marian_table(3, 6));
        // Position 2, feature pairs j = (0,1), (2,3), (4,5): angle 2 / 10000^(2*(j/2)/6).
        let angles: Vec<f64> = (0..3)
            .map(|i| 2.0 / 10000f64.powf((2 * i) as f64 / 6.0))
            .collect();
        let row = &t[2 * dim..3 * dim];
        for i in 0..3 {
            assert_eq!(row[i], angles[i].sin() as f32);
            assert_eq!(row[3 + i], angles[i].cos() as f32);
        }
        // An odd width: the sines take the extra column.
        let t = marian_table(2, 5);
        let a = 1.0 / 10000f64.powf(4.0 / 5.0);
        assert_eq!(t[5 + 2], a.sin() as f32);
        assert_eq!(t[5 + 3], (1.0 / 10000f64.powf(0.0)).cos() as f32);
    }

    #[test]
    fn m2m_positions_count_non_pad_tokens_after_the_pad_id() {
        let cfg = BartConfig::from_json("m2m_100", r#"{"d_model": 8, "encoder_attention_heads": 2, "decoder_attention_heads": 2, "pad_token_id": 1}"#).unwrap();
        let w = BartWeights {
            act: Act::Relu,
            scale: 1.0,
            pre_norm: true,
            encoder_embed: empty_embedding(),
            encoder: Vec::new(),
            encoder_norm: None,
            decoder_embed: empty_embedding(),
            decoder: Vec::new(),
            decoder_norm: None,
            lm_head: Linear::new(Tensor::from_vec(vec![1, 1], vec![0.0]).unwrap(), None).unwrap(),
            logits_bias: vec![0.0],
            pool: build_pool(1).unwrap(),
            cfg,
        };
        // transformers: (cumsum(ids != pad) + past) * (ids != pad) + pad.
        assert_eq!(w.position_ids(&[5, 6, 1, 1], 1, 4, 0), vec![2, 3, 1, 1]);
        assert_eq!(w.position_ids(&[7, 1], 2, 1, 3), vec![5, 1]);
    }

    fn empty_embedding() -> Embedding {
        Embedding {
            tokens: Tensor::from_vec(vec![1, 1], vec![0.0]).unwrap(),
            positions: Positions::Table(Vec::new()),
            norm: None,
        }
    }

    #[test]
    fn contradicting_legacy_layout_keys_are_refused_by_name() {
        assert!(BartConfig::from_json("mbart", r#"{"normalize_before": true}"#).is_ok());
        let err = BartConfig::from_json("bart", r#"{"normalize_before": true}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("normalize_before"), "{err}");
        let err = BartConfig::from_json("marian", r#"{"activation_function": "mish"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("activation_function 'mish'"), "{err}");
    }
}
