//! The session of every encoder-decoder model. An architecture supplies its encoder, the
//! cross-attention projections of its decoder layers and its decoder step (an
//! [`EncoderDecoderStack`]); this file keeps what they all share: the [`Model`] they are (from
//! what the stack says about itself), running the encoder once per input at `start`, the
//! cross-attention memory that beams of one input share, the decoder's self-attention cache, the
//! step buffers, `step` and `reorder`.

use std::sync::Arc;

use rayon::prelude::*;

use super::attention::KeyValues;
use super::kv_cache::KvCache;
use super::session::{check_reorder, check_rewind, logits_on, prepare_step, StepBuffers};
use super::{Model, Session, StepInput, TokenBatch, Want};
use crate::error::{Error, Result};
use crate::interrupt::Interrupt;
use crate::tensor::LinearSet;

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

    /// [`Model::max_positions`]: `None` where positions never run out (T5's relative buckets).
    fn max_positions(&self) -> Option<usize> {
        None
    }

    /// [`Model::max_positions_is_hard`].
    fn max_positions_is_hard(&self) -> bool {
        false
    }

    /// [`Model::decode_weight_bytes`]: the decoder's projections and the head, as stored. Not the
    /// cross-attention keys and values: those are computed once per input, not per step.
    fn decode_weight_bytes(&self) -> usize;

    /// `(layers, heads, head_dim)` of the decoder's attention (self- and cross-): the shape of the
    /// self-attention cache and of the cross-attention memory.
    fn decoder_attention(&self) -> (usize, usize, usize);

    /// The encoder over the batch: `[batch * len, d_model]`, as the decoder's cross-attention
    /// reads it. Checks `input`'s interrupt between layers.
    fn encode(&self, input: &TokenBatch) -> Result<Vec<f32>>;

    /// Decoder layer `layer`'s cross-attention key and value projections, stacked `[k | v]`.
    fn cross_key_value_projection(&self, layer: usize) -> &LinearSet;

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

/// Every encoder-decoder architecture as a [`Model`]: its stack, shared with the sessions it
/// starts.
pub(crate) struct EncoderDecoderModel<S: EncoderDecoderStack>(Arc<S>);

impl<S: EncoderDecoderStack> EncoderDecoderModel<S> {
    pub fn new(stack: S) -> Self {
        EncoderDecoderModel(Arc::new(stack))
    }
}

impl<S: EncoderDecoderStack> Model for EncoderDecoderModel<S> {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }

    fn is_encoder_decoder(&self) -> bool {
        true
    }

    fn max_positions(&self) -> Option<usize> {
        self.0.max_positions()
    }

    fn max_positions_is_hard(&self) -> bool {
        self.0.max_positions_is_hard()
    }

    fn decode_weight_bytes(&self) -> usize {
        self.0.decode_weight_bytes()
    }

    fn pool(&self) -> &rayon::ThreadPool {
        self.0.pool()
    }

    fn start(&self, input: &TokenBatch) -> Result<Box<dyn Session>> {
        start(&self.0, input)
    }
}

/// What a session keeps of its encoder inputs: per decoder layer the cross-attention keys and
/// values, computed once per input and shared by every decoder row (beam) of that input.
pub(crate) struct EncoderMemory {
    /// Per decoder layer: keys and values `[inputs, heads, len, head_dim]` (see
    /// [`heads_first`]).
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
            head_stride: self.len * self.head_dim,
            pos_stride: self.head_dim,
            len: self.len,
            mask: Some((&self.mask, self.len)),
            row_map: Some(&self.row_to_input),
        }
    }
}

/// Each decoder layer's cross-attention keys and values of `encoded` (`inputs` inputs of `len`
/// positions), each `[inputs, heads, len, head_dim]`. Stops when `interrupt` is raised.
fn cross_key_values<S: EncoderDecoderStack>(
    model: &S,
    encoded: &[f32],
    (inputs, len): (usize, usize),
    interrupt: Option<&Interrupt>,
) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let (layers, heads, head_dim) = model.decoder_attention();
    let m = inputs * len;
    let mut y = Vec::new();
    (0..layers)
        .map(|layer| {
            let kv = model.cross_key_value_projection(layer);
            kv.forward_checked(encoded, m, &mut y, interrupt)?;
            let [k, v]: [Vec<f32>; 2] = kv.split(&y, m).try_into().expect("k, v");
            Ok((
                heads_first(&k, len, heads, head_dim),
                heads_first(&v, len, heads, head_dim),
            ))
        })
        .collect()
}

/// `x: [inputs, len, heads, head_dim]` → `[inputs, heads, len, head_dim]`: every decoding step
/// reads one (row, head)'s keys and values from position 0 to `len`, which this lays out as one
/// contiguous run instead of `head_dim` values every `heads * head_dim` (a copy, once per input).
fn heads_first(x: &[f32], len: usize, heads: usize, head_dim: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    let per_input = len * heads * head_dim;
    if per_input == 0 {
        return out;
    }
    out.par_chunks_mut(per_input)
        .zip(x.par_chunks(per_input))
        .for_each(|(out, x)| {
            for (pos, src) in x.chunks_exact(heads * head_dim).enumerate() {
                for (h, src) in src.chunks_exact(head_dim).enumerate() {
                    out[(h * len + pos) * head_dim..][..head_dim].copy_from_slice(src);
                }
            }
        });
    out
}

/// Runs the encoder over `input` and opens a decoding session with one decoder row per input.
fn start<S: EncoderDecoderStack>(model: &Arc<S>, input: &TokenBatch) -> Result<Box<dyn Session>> {
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
        cross_key_values(
            model.as_ref(),
            &encoded,
            (input.batch, input.len),
            input.interrupt.as_deref(),
        )
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
        step.logits_finite = None;
        *out = logits_on(model.pool(), model.vocab_size(), want, |last_only| {
            model.decode(input, last_only, cache, memory, step, scratch)
        })?;
        if want.log_softmax {
            // What the decoder saw were the raw logits, not what `out` now holds.
            step.logits_finite = None;
        }
        Ok(())
    }

    fn logits_finite(&self) -> Option<bool> {
        self.step.logits_finite
    }

    fn reorder(&mut self, source: &[usize]) -> Result<()> {
        check_reorder(source, self.rows())?;
        let rows = &mut self.memory.row_to_input;
        *rows = source.iter().map(|&s| rows[s]).collect();
        self.cache.reorder(source)
    }

    fn rewind(&mut self, len: usize) -> Result<()> {
        // The decoder numbers its positions by the cache's length (no padding on this side), so
        // the cache is all there is to take back.
        check_rewind(len, self.cache.len())?;
        self.cache.truncate(len);
        Ok(())
    }

    fn join(&mut self, _other: &mut dyn Session) -> Result<()> {
        // Rows would also have to bring their encoder outputs (cross-attention memory of another
        // length): continuous batching serves decoder-only models.
        Err(Error::InvalidInput(
            "join: encoder-decoder sessions cannot join (continuous batching is for decoder-only \
             models)"
                .into(),
        ))
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
