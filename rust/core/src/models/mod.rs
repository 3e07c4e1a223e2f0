//! Model architectures, one file each, built from [`crate::kernels`] and [`crate::tensor::Linear`].
//!
//! Every model is driven the same way, which is what lets one generation loop (on the Python side)
//! serve them all: [`Model::start`] takes the prompt batch and returns a [`Session`] (for an
//! encoder-decoder it runs the encoder and caches cross-attention keys/values); each
//! [`Session::step`] feeds new tokens for every row and returns their logits; [`Session::reorder`]
//! picks, repeats or drops rows (beam search, or expanding one prompt into several beams);
//! [`Session::join`] adds the rows of another session (a server's continuous batching).
//!
//! Which architectures exist, under which names, is [`registry`]'s table; the sessions they share
//! are [`decoder`] (decoder-only) and [`encoder_decoder`], over the pieces in [`session`].

pub mod attention;
pub mod bart;
mod checkpoint;
mod config_checks;
mod decoder;
mod decoder_block;
mod encoder_decoder;
mod encoder_decoder_block;
pub mod gemma;
pub mod gguf_config;
pub mod gpt2;
pub mod kv_cache;
pub mod llama;
pub mod mistral;
pub mod phi3;
pub mod qwen3;
pub mod registry;
pub mod rope;
mod session;
pub mod smollm3;
pub mod t5;

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use crate::formats::gguf_hf::GgufAsHf;
use crate::formats::safetensors::SafeTensors;
use crate::formats::{Int8, Interruptible, WeightSource};
use crate::interrupt::{self, Interrupt};
use crate::tensor::Linear;

/// A rectangular batch of token ids with its attention mask (1 = real token, 0 = padding).
#[derive(Clone, Debug)]
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
    pub batch: usize,
    pub len: usize,
    /// Stops the encoder between layers when requested ([`TokenBatch::with_interrupt`]).
    pub interrupt: Option<Arc<Interrupt>>,
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
            interrupt: None,
        })
    }

    /// The same batch, its encoding stopped with [`Error::Interrupted`] once `interrupt` is raised.
    pub fn with_interrupt(mut self, interrupt: Arc<Interrupt>) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    /// `Err(Error::Interrupted)` once the batch's interrupt has been raised (checked between layers).
    pub(crate) fn check_interrupt(&self) -> Result<()> {
        interrupt::check(self.interrupt.as_deref())
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
    /// Stops the step between layers with [`Error::Interrupted`] once raised (`None`: runs to the end).
    pub interrupt: Option<&'a Interrupt>,
}

impl<'a> StepInput<'a> {
    pub fn tokens(tokens: &'a [u32], n: usize) -> Self {
        StepInput {
            tokens,
            n,
            mask: None,
            positions: None,
            interrupt: None,
        }
    }

    /// `Err(Error::Interrupted)` once the step's interrupt has been raised (checked between layers).
    pub(crate) fn check_interrupt(&self) -> Result<()> {
        interrupt::check(self.interrupt)
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
    /// The model's position limit (transformers' `config.max_position_embeddings`, which caps
    /// `generate`'s default length budget): the one source of that limit. With learned positions
    /// (GPT-2) it is also a hard limit on prompt plus new tokens. `None`: no limit (T5's relative
    /// positions).
    fn max_positions(&self) -> Option<usize> {
        None
    }
    /// Whether [`Model::max_positions`] also bounds prompt plus new tokens (learned position
    /// embeddings end there), so a longer request is refused before it starts.
    fn max_positions_is_hard(&self) -> bool {
        false
    }
    /// Bytes of weights one batch-1 decoding step streams (the decoder's projections and the LM
    /// head, as stored): what bounds decoding speed by memory bandwidth.
    fn decode_weight_bytes(&self) -> usize;
    /// Starts a decoding session over `input` (the encoder input for an encoder-decoder model).
    fn start(&self, input: &TokenBatch) -> Result<Box<dyn Session>>;
    /// The model's compute threads: every model and session call runs its kernels in this pool.
    fn pool(&self) -> &rayon::ThreadPool;
}

pub trait Session: Send + 'static {
    /// The number of sequences being decoded.
    fn rows(&self) -> usize;
    /// Tokens fed so far per row (decoder side).
    fn len(&self) -> usize;
    /// Bytes of self-attention cache one row takes per position: what bounds how many rows and
    /// positions a generation can hold.
    fn cache_bytes_per_position(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes room for `positions` positions per row in the self-attention cache (a generation
    /// that knows its length reserves it once; the room costs memory only as it fills).
    fn reserve(&mut self, positions: usize) -> Result<()>;
    /// Feeds one step of new tokens and writes the logits asked for into `out`.
    fn step(&mut self, input: &StepInput, want: Want, out: &mut Vec<f32>) -> Result<()>;
    /// Whether every value the last step wrote was finite, where that step learned it on a pass
    /// it makes over the logits anyway (the BART family's `final_logits_bias`); `None` where it
    /// did not (the caller checks the values itself).
    fn logits_finite(&self) -> Option<bool> {
        None
    }
    /// Row `i` of the session afterwards continues old row `source[i]`; rows may repeat or vanish.
    fn reorder(&mut self, source: &[usize]) -> Result<()>;
    /// Takes back every position from `len` on, as if the steps that fed them had fed only the
    /// positions before it (prompt-lookup decoding drops the draft tokens the model rejected).
    /// `len` may not exceed [`Session::len`].
    fn rewind(&mut self, len: usize) -> Result<()>;
    /// Appends `other`'s rows after this session's rows and leaves `other` with none (continuous
    /// batching: a freshly prefilled request joins the running batch between steps). Each row's
    /// results stay the bits it gives decoded alone. Both must be decoder-only sessions of the
    /// same model ([`Error::InvalidInput`] otherwise); on failure both are unchanged.
    fn join(&mut self, other: &mut dyn Session) -> Result<()>;
    /// The session as [`Any`](std::any::Any), for [`Session::join`] to recognise a session of
    /// its own kind.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

/// Builds the model `arch` (transformers' `model_type`, looked up in [`registry`]) from its
/// config JSON and weight files: safetensors shards, or one GGUF file. `dtype` is "auto" (keep a
/// GGUF file's Q4_0/Q4_1/Q8_0 blocks and run them natively; f32 otherwise) or "f32" (dequantize
/// everything).
pub fn load(
    arch: &str,
    config_json: &str,
    weight_files: &[PathBuf],
    dtype: &str,
    threads: usize,
) -> Result<Arc<dyn Model>> {
    load_interruptible(arch, config_json, weight_files, dtype, threads, None)
}

/// [`load`], stopped with [`Error::Interrupted`] before the next tensor once `interrupt` is raised.
pub fn load_interruptible(
    arch: &str,
    config_json: &str,
    weight_files: &[PathBuf],
    dtype: &str,
    threads: usize,
    interrupt: Option<&Interrupt>,
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
    let entry = registry::architecture(arch)?;
    let gguf_file = match weight_files {
        [one] if one.extension().is_some_and(|e| e == "gguf") => Some(one),
        _ => None,
    };
    if gguf_file.is_some() && entry.gguf.is_none() {
        return Err(Error::Format(format!(
            "{arch} models are read from safetensors, not GGUF"
        )));
    }
    // A GGUF file's config is built from its metadata: its refusals name the file, not config.json.
    let config =
        (entry.config)(entry.model_type, config_json).map_err(|e| match (e, gguf_file) {
            (Error::Format(msg), Some(path)) => Error::Format(format!(
                "{}: from its metadata, {}",
                path.display(),
                msg.strip_prefix("config.json: ").unwrap_or(&msg)
            )),
            (e, _) => e,
        })?;
    let source: Box<dyn WeightSource> = match (gguf_file, &entry.gguf) {
        (Some(path), Some(gguf)) => {
            let file = GgufFile::open(path)?;
            // The permutation to undo is the one the file's converter applied.
            if file.architecture() != Some(gguf.name) {
                return Err(Error::Format(format!(
                    "{}: a GGUF file of architecture {:?} does not load as {arch} (that needs '{}')",
                    file.path().display(),
                    file.architecture().unwrap_or("(none given)"),
                    gguf.name
                )));
            }
            let (heads, kv_heads) = config.attention_heads();
            Box::new(GgufAsHf::new(
                file,
                gguf.permuted_qk,
                heads,
                kv_heads,
                keep_quantized,
            ))
        }
        _ => Box::new(SafeTensors::open(weight_files)?),
    };
    let never = Interrupt::default();
    let source = Interruptible {
        source: source.as_ref(),
        interrupt: interrupt.unwrap_or(&never),
    };
    // int8 wraps whichever source the file gives.
    if int8 {
        config.build(&Int8(&source), threads)
    } else {
        config.build(&source, threads)
    }
}

/// `dst += src`, elementwise (residual connections).
pub(crate) fn add(dst: &mut [f32], src: &[f32]) {
    for (a, b) in dst.iter_mut().zip(src) {
        *a += b;
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
