//! Model architectures, one file each, built from [`crate::kernels`] and [`crate::tensor::Linear`].
//!
//! Every model is driven the same way, which is what lets one generation loop (on the Python side)
//! serve them all: [`Model::start`] takes the prompt batch and returns a [`Session`] (for an
//! encoder-decoder it runs the encoder and caches cross-attention keys/values); each
//! [`Session::step`] feeds new tokens for every row and returns their logits; [`Session::reorder`]
//! picks, repeats or drops rows (beam search, or expanding one prompt into several beams).

pub mod attention;
pub mod gpt2;
pub mod kv_cache;
pub mod llama;
pub mod rope;
pub mod t5;

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use crate::formats::gguf_hf::GgufAsHf;
use crate::formats::safetensors::SafeTensors;
use crate::formats::{Int8, WeightSource};
use crate::tensor::{Linear, LinearSet};

/// A rectangular batch of token ids with its attention mask (1 = real token, 0 = padding).
#[derive(Clone, Debug)]
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
    pub batch: usize,
    pub len: usize,
}

impl TokenBatch {
    pub fn new(ids: Vec<u32>, mask: Option<Vec<u8>>, batch: usize, len: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::InvalidInput(
                "empty batch: at least one sequence is needed".into(),
            ));
        }
        if ids.len() != batch * len {
            return Err(Error::InvalidInput(format!(
                "input_ids hold {} values, expected batch {batch} x length {len}",
                ids.len()
            )));
        }
        let mask = mask.unwrap_or_else(|| vec![1; ids.len()]);
        if mask.len() != ids.len() {
            return Err(Error::InvalidInput(format!(
                "attention_mask has {} values but input_ids has {}",
                mask.len(),
                ids.len()
            )));
        }
        Ok(TokenBatch {
            ids,
            mask,
            batch,
            len,
        })
    }

    pub fn check_vocab(&self, what: &str, vocab: usize) -> Result<()> {
        check_ids(what, &self.ids, vocab)
    }
}

pub fn check_ids(what: &str, ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&t| t as usize >= vocab) {
        Some(t) => Err(Error::InvalidInput(format!(
            "{what} holds token id {t}, outside the vocabulary of {vocab}"
        ))),
        None => Ok(()),
    }
}

/// The new tokens of one decoding step, for every row of a session.
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a> {
    /// `[rows, n]`, row-major.
    pub tokens: &'a [u32],
    pub n: usize,
    /// `[rows, n]`: 0 marks padding, which is never attended to (`None`: all real tokens).
    pub mask: Option<&'a [u8]>,
    /// `[rows, n]` position ids for models with absolute or rotary positions. `None` continues each
    /// row from the number of real tokens it holds (transformers' `generate`: `cumsum(mask) - 1`).
    pub positions: Option<&'a [u32]>,
}

impl<'a> StepInput<'a> {
    pub fn tokens(tokens: &'a [u32], n: usize) -> Self {
        StepInput {
            tokens,
            n,
            mask: None,
            positions: None,
        }
    }

    /// Checks the shapes against a session of `rows` rows and the ids against the vocabulary.
    pub fn validate(&self, rows: usize, vocab: usize) -> Result<()> {
        let len = rows * self.n;
        if self.n == 0 || self.tokens.len() != len {
            return Err(Error::InvalidInput(format!(
                "a decoding step needs {rows} rows of at least one token, got {} tokens for {} per row",
                self.tokens.len(),
                self.n
            )));
        }
        if self.mask.is_some_and(|m| m.len() != len) {
            return Err(Error::InvalidInput(
                "the attention mask of a step does not match its tokens".into(),
            ));
        }
        if self.positions.is_some_and(|p| p.len() != len) {
            return Err(Error::InvalidInput(
                "the position ids of a step do not match its tokens".into(),
            ));
        }
        check_ids("decoder_input_ids", self.tokens, vocab)
    }
}

/// What a step returns: logits of every new position (`[rows, n, vocab]`, for scoring) or of each
/// row's last one (`[rows, vocab]`, for generation), optionally as log-probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub last_only: bool,
    pub log_softmax: bool,
}

pub trait Model: Send + Sync {
    fn vocab_size(&self) -> usize;
    fn is_encoder_decoder(&self) -> bool;
    /// The longest input the model accepts, if it has a hard limit (learned positions).
    fn max_positions(&self) -> Option<usize> {
        None
    }
    /// Bytes of weights one batch-1 decoding step streams (the decoder's projections and the LM
    /// head, as stored): what bounds decoding speed by memory bandwidth.
    fn decode_weight_bytes(&self) -> usize;
    /// Starts a decoding session over `input` (the encoder input for an encoder-decoder model).
    fn start(&self, input: &TokenBatch) -> Result<Box<dyn Session>>;
    /// The model's compute threads: every model and session call runs its kernels in this pool.
    fn pool(&self) -> &rayon::ThreadPool;
}

pub trait Session: Send {
    /// The number of sequences being decoded.
    fn rows(&self) -> usize;
    /// Tokens fed so far per row (decoder side).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Feeds one step of new tokens and writes the logits asked for into `out`.
    fn step(&mut self, input: &StepInput, want: Want, out: &mut Vec<f32>) -> Result<()>;
    /// Row `i` of the session afterwards continues old row `source[i]`; rows may repeat or vanish.
    fn reorder(&mut self, source: &[usize]) -> Result<()>;
}

/// Builds a model from a weight source (one architecture's `load`, its config captured).
type Loader<'a> = dyn Fn(&dyn WeightSource) -> Result<Arc<dyn Model>> + 'a;

/// Builds the model `arch` (transformers' `model_type`) from its config JSON and weight files:
/// safetensors shards, or one GGUF file. `dtype` is "auto" (keep a GGUF file's Q4_0/Q4_1/Q8_0
/// blocks and run them natively; f32 otherwise) or "f32" (dequantize everything).
pub fn load(
    arch: &str,
    config_json: &str,
    weight_files: &[PathBuf],
    dtype: &str,
    threads: usize,
) -> Result<Arc<dyn Model>> {
    let (keep_quantized, int8) = match dtype {
        "auto" => (true, false),
        "f32" => (false, false),
        // A GGUF file's blocks are read as they are and requantized row by row (`into_int8`).
        "int8" => (true, true),
        other => {
            return Err(Error::InvalidInput(format!(
                "dtype must be 'auto', 'f32' or 'int8', got '{other}'"
            )))
        }
    };
    // int8 wraps whichever source the file gives.
    let with_dtype = |w: &dyn WeightSource, load: &Loader| {
        if int8 {
            load(&Int8(w))
        } else {
            load(w)
        }
    };
    let is_gguf = matches!(weight_files, [one] if one.extension().is_some_and(|e| e == "gguf"));
    match arch {
        "t5" | "gpt2" if is_gguf => Err(Error::Format(format!(
            "{arch} models are read from safetensors, not GGUF"
        ))),
        "t5" => {
            let cfg = t5::T5Config::from_json(config_json)?;
            with_dtype(&SafeTensors::open(weight_files)?, &|w| {
                Ok(Arc::new(t5::T5Model::load(cfg.clone(), w, threads)?))
            })
        }
        "gpt2" => {
            let cfg = gpt2::Gpt2Config::from_json(config_json)?;
            with_dtype(&SafeTensors::open(weight_files)?, &|w| {
                Ok(Arc::new(gpt2::Gpt2Model::load(cfg.clone(), w, threads)?))
            })
        }
        "llama" | "mistral" | "qwen2" => {
            let cfg = llama::LlamaConfig::from_json(arch, config_json)?;
            let load = |w: &dyn WeightSource| -> Result<Arc<dyn Model>> {
                Ok(Arc::new(llama::LlamaModel::load(cfg.clone(), w, threads)?))
            };
            if is_gguf {
                let file = GgufFile::open(&weight_files[0])?;
                let source = GgufAsHf::new(
                    file,
                    cfg.num_attention_heads,
                    cfg.num_key_value_heads,
                    keep_quantized,
                );
                with_dtype(&source, &load)
            } else {
                with_dtype(&SafeTensors::open(weight_files)?, &load)
            }
        }
        other => Err(Error::Format(format!(
            "unsupported architecture '{other}'; fasttx supports: t5, llama, mistral, qwen2, gpt2"
        ))),
    }
}

/// `dst += src`, elementwise (residual connections).
pub(crate) fn add(dst: &mut [f32], src: &[f32]) {
    for (a, b) in dst.iter_mut().zip(src) {
        *a += b;
    }
}

/// Buffers of a decoding step that every decoder needs, kept by its session so that the per-token
/// loop does not allocate (only the returned logits are new each step).
#[derive(Default)]
pub(crate) struct StepBuffers {
    /// The normalised hidden state a sublayer reads, `[m, d_model]`.
    pub x: Vec<f32>,
    /// Attention output before its output projection.
    pub ctx: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// The output of a projection on its way into the residual stream.
    pub proj: Vec<f32>,
    /// The residual stream (each session takes it out for the step and puts it back, so that the
    /// other buffers can be borrowed beside it).
    pub h: Vec<f32>,
    /// The hidden states the logits are computed from (see [`StepBuffers::logit_rows`]).
    pub last: Vec<f32>,
    qkv: Vec<f32>,
}

impl StepBuffers {
    /// `q`, `k`, `v` ← the stacked `[q | k | v]` projection of `x` (`m` rows).
    pub fn project_qkv(&mut self, qkv: &LinearSet, m: usize) {
        qkv.forward_into(&self.x, m, &mut self.qkv);
        qkv.split_into(&self.qkv, m, &mut [&mut self.q, &mut self.k, &mut self.v]);
    }

    /// The rows of the final hidden state `h: [rows, n, d]` that get logits (each row's last
    /// position, or every position) into `last`, and `x` sized for their normalised form.
    /// Returns how many rows.
    pub fn logit_rows(
        &mut self,
        h: &[f32],
        rows: usize,
        n: usize,
        d: usize,
        last_only: bool,
    ) -> usize {
        self.last.clear();
        let count = if last_only {
            for r in 0..rows {
                self.last
                    .extend_from_slice(&h[((r + 1) * n - 1) * d..(r + 1) * n * d]);
            }
            rows
        } else {
            self.last.extend_from_slice(&h[..rows * n * d]);
            rows * n
        };
        self.x.resize(count * d, 0.0);
        count
    }
}

/// A gated unit over the result of a stacked `[activated | linear]` product (`y: [m, 2·ff]`):
/// `act(y[:, :ff]) * y[:, ff:]`, as `[m, ff]` into `out` (a buffer reused across decoding steps).
pub(crate) fn gated_into(y: &[f32], m: usize, act: impl Fn(&mut [f32]), out: &mut Vec<f32>) {
    let ff = y.len() / m.max(1) / 2;
    out.clear();
    for row in y.chunks_exact(2 * ff).take(m) {
        let start = out.len();
        out.extend_from_slice(&row[..ff]);
        let h = &mut out[start..];
        act(h);
        for (a, b) in h.iter_mut().zip(&row[ff..]) {
            *a *= b;
        }
    }
}

/// A projection as the load asked for it: per-channel int8 when the source says so, else as read.
pub(crate) fn projection(w: &dyn WeightSource, linear: Linear) -> Result<Linear> {
    if w.int8() {
        linear.into_int8()
    } else {
        Ok(linear)
    }
}
