//! Model architectures, one file each, built from [`crate::kernels`] and [`crate::tensor::Linear`].
//!
//! Every model is driven the same way, which is what lets one generation loop (on the Python side)
//! serve them all: [`Model::start`] takes the prompt batch and returns a [`Session`] (for an
//! encoder-decoder it runs the encoder and caches cross-attention keys/values); each
//! [`Session::step`] feeds new tokens for every row and returns their logits; [`Session::reorder`]
//! picks, repeats or drops rows (beam search, or expanding one prompt into several beams).

pub mod attention;
pub mod kv_cache;
pub mod t5;

use crate::error::{Error, Result};

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

/// Which positions' logits a step returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// `[rows, n, vocab]`: every new position (scoring, `model.logits`).
    All,
    /// `[rows, vocab]`: only each row's last new position (generation).
    Last,
}

pub trait Model: Send + Sync {
    fn vocab_size(&self) -> usize;
    fn is_encoder_decoder(&self) -> bool;
    /// The longest input the model accepts, if it has a hard limit (learned positions).
    fn max_positions(&self) -> Option<usize> {
        None
    }
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
    /// Feeds `tokens` (`[rows, n]`, row-major) with an optional mask for them (1 = real token) and
    /// returns the logits asked for in `out`, as log-probabilities if `log_softmax`.
    fn step(
        &mut self,
        tokens: &[u32],
        n: usize,
        mask: Option<&[u8]>,
        which: Logits,
        log_softmax: bool,
        out: &mut Vec<f32>,
    ) -> Result<()>;
    /// Row `i` of the session afterwards continues old row `source[i]`; rows may repeat or vanish.
    fn reorder(&mut self, source: &[usize]) -> Result<()>;
}

/// Builds the model `arch` (transformers' `model_type`) from its config JSON and weight files.
pub fn load(
    arch: &str,
    config_json: &str,
    weight_files: &[std::path::PathBuf],
    threads: usize,
) -> Result<std::sync::Arc<dyn Model>> {
    use crate::formats::safetensors::SafeTensors;
    match arch {
        "t5" => {
            let cfg = t5::T5Config::from_json(config_json)?;
            let weights = SafeTensors::open(weight_files)?;
            Ok(std::sync::Arc::new(t5::T5Model::load(
                cfg, &weights, threads,
            )?))
        }
        other => Err(Error::Format(format!(
            "unsupported architecture '{other}' (model_type in config.json); fasttx supports: t5"
        ))),
    }
}
