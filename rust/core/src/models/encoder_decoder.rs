//! The session of every encoder-decoder model. An architecture supplies its encoder, the
//! cross-attention keys/values of its decoder layers and its decoder step (an
//! [`EncoderDecoderStack`]); this file keeps what they all share: running the encoder once per
//! input at `start`, the cross-attention memory that beams of one input share, the decoder's
//! self-attention cache, the step buffers, `step` and `reorder`.

use std::sync::Arc;

use super::attention::KeyValues;
use super::kv_cache::KvCache;
use super::session::{check_reorder, logits_on, prepare_step, StepBuffers};
use super::{Session, StepInput, TokenBatch, Want};
use crate::error::{Error, Result};
use crate::interrupt::Interrupt;

/// One encoder-decoder architecture's weights, as a session drives them.
pub(crate) trait EncoderDecoderStack: Send + Sync + 'static {
    /// Step buffers beyond [`StepBuffers`] (the feed-forward's, a position bias table, ...).
    type Scratch: Default + Send;

    /// The decoder's vocabulary: its token ids and the logits.
    fn vocab_size(&self) -> usize;

    /// The encoder's vocabulary, where it differs from the decoder's (Marian with separate
    /// source and target embeddings).
    fn encoder_vocab_size(&self) -> usize {
        self.vocab_size()
    }

    /// The threads the encoder and every step run on.
    fn pool(&self) -> &rayon::ThreadPool;

    /// `(layers, heads, head_dim)` of the decoder's attention (self- and cross-).
    fn decoder_attention(&self) -> (usize, usize, usize);

    /// The encoder over the batch: `[batch * len, d_model]`, as the decoder's cross-attention
    /// reads it. Checks `input`'s interrupt between layers.
    fn encode(&self, input: &TokenBatch) -> Result<Vec<f32>>;

    /// Each decoder layer's cross-attention keys and values of `encoded` (`m` positions), each
    /// `[m, heads * head_dim]`. Stops when `interrupt` is raised.
    fn cross_key_values(
        &self,
        encoded: &[f32],
        m: usize,
        interrupt: Option<&Interrupt>,
    ) -> Result<Vec<(Vec<f32>, Vec<f32>)>>;

    /// Runs the decoder over one step's tokens, writing their self-attention keys and values into
    /// `cache` and reading `memory`; returns the logits of each row's last token (`last_only`) or
    /// of every token. Checks `input`'s interrupt between layers; an interrupted step leaves
    /// `cache` uncommitted.
    fn decode(
        &self,
        input: &StepInput,
        last_only: bool,
        cache: &mut KvCache,
        memory: &EncoderMemory,
        step: &mut StepBuffers,
        scratch: &mut Self::Scratch,
    ) -> Result<Vec<f32>>;
}

/// What a session keeps of its encoder inputs: per decoder layer the cross-attention keys and
/// values, computed once per input and shared by every decoder row (beam) of that input.
pub(crate) struct EncoderMemory {
    /// Per decoder layer: keys and values `[inputs, len, heads * head_dim]`.
    cross: Vec<(Vec<f32>, Vec<f32>)>,
    head_dim: usize,
    width: usize,
    /// `[inputs, len]`: the encoder input's attention mask (padding is never attended to).
    mask: Vec<u8>,
    len: usize,
    /// Which encoder input each decoder row reads.
    row_to_input: Vec<usize>,
}

impl EncoderMemory {
    /// Layer `layer`'s cross-attention keys and values, as each decoder row sees them.
    pub fn key_values(&self, layer: usize) -> KeyValues<'_> {
        let (k, v) = &self.cross[layer];
        KeyValues {
            k,
            v,
            row_stride: self.len * self.width,
            head_stride: self.head_dim,
            pos_stride: self.width,
            len: self.len,
            mask: Some((&self.mask, self.len)),
            row_map: Some(&self.row_to_input),
        }
    }
}

/// Runs the encoder over `input` and opens a decoding session with one decoder row per input.
pub(crate) fn start<S: EncoderDecoderStack>(
    model: &Arc<S>,
    input: &TokenBatch,
) -> Result<Box<dyn Session>> {
    input.check_vocab("input_ids", model.encoder_vocab_size())?;
    if input.len == 0 {
        return Err(Error::InvalidInput(
            "input_ids are empty: the encoder needs at least one token".into(),
        ));
    }
    let (layers, heads, head_dim) = model.decoder_attention();
    let m = input.batch * input.len;
    let cross = model.pool().install(|| {
        let encoded = model.encode(input)?;
        model.cross_key_values(&encoded, m, input.interrupt.as_deref())
    })?;
    debug_assert!(cross.iter().all(|(k, _)| k.len() == m * heads * head_dim));
    Ok(Box::new(EncoderDecoderSession {
        model: model.clone(),
        cache: KvCache::new(layers, input.batch, heads, head_dim),
        memory: EncoderMemory {
            cross,
            head_dim,
            width: heads * head_dim,
            mask: input.mask.clone(),
            len: input.len,
            row_to_input: (0..input.batch).collect(),
        },
        step: StepBuffers::default(),
        scratch: S::Scratch::default(),
    }))
}

struct EncoderDecoderSession<S: EncoderDecoderStack> {
    model: Arc<S>,
    cache: KvCache,
    memory: EncoderMemory,
    step: StepBuffers,
    scratch: S::Scratch,
}

impl<S: EncoderDecoderStack> Session for EncoderDecoderSession<S> {
    fn rows(&self) -> usize {
        self.cache.rows()
    }

    fn len(&self) -> usize {
        self.cache.len()
    }

    fn cache_bytes_per_position(&self) -> usize {
        self.cache.bytes_per_position()
    }

    fn reserve(&mut self, positions: usize) -> Result<()> {
        self.cache.reserve_total(positions)
    }

    fn step(&mut self, input: &StepInput, want: Want, out: &mut Vec<f32>) -> Result<()> {
        let model = self.model.clone();
        input.validate(self.rows(), model.vocab_size())?;
        prepare_step(&mut self.cache, input, want, model.vocab_size())?;
        let (cache, memory) = (&mut self.cache, &self.memory);
        let (step, scratch) = (&mut self.step, &mut self.scratch);
        *out = logits_on(model.pool(), model.vocab_size(), want, |last_only| {
            model.decode(input, last_only, cache, memory, step, scratch)
        })?;
        Ok(())
    }

    fn reorder(&mut self, source: &[usize]) -> Result<()> {
        check_reorder(source, self.rows())?;
        let rows = &mut self.memory.row_to_input;
        *rows = source.iter().map(|&s| rows[s]).collect();
        self.cache.reorder(source)
    }
}
