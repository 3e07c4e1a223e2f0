//! The session of every decoder-only model. An architecture supplies its layer stack (a
//! [`DecoderStack`]: embedding, blocks, head, and the step buffers only it needs); this file keeps
//! what they all share: the [`Model`] they are (from what the stack says about itself), the
//! self-attention cache, each row's position count, the step buffers, `step` and `reorder`.

use std::sync::Arc;

use super::kv_cache::KvCache;
use super::session::{
    check_reorder, check_rewind, logits_on, prepare_step, step_positions, StepBuffers,
};
use super::{Model, Session, StepInput, TokenBatch, Want};
use crate::error::Result;

/// One decoder-only architecture's weights, as a session drives them.
pub(crate) trait DecoderStack: Send + Sync + 'static {
    /// Step buffers beyond [`StepBuffers`] (the feed-forward's hidden layer, rotary angles, ...).
    type Scratch: Default + Send;

    fn vocab_size(&self) -> usize;

    /// The threads every step runs on.
    fn pool(&self) -> &rayon::ThreadPool;

    /// [`Model::max_positions`]: the positions the model was made for.
    fn max_positions(&self) -> usize;

    /// [`Model::max_positions_is_hard`].
    fn max_positions_is_hard(&self) -> bool {
        false
    }

    /// [`Model::decode_weight_bytes`]: the blocks' projections and the head, as stored.
    fn decode_weight_bytes(&self) -> usize;

    /// The self-attention cache's shape: `(layers, key/value heads, head_dim)`.
    fn cache_shape(&self) -> (usize, usize, usize);

    /// Refuses a step whose position ids the model cannot embed (a learned position table ends);
    /// checked before the session changes.
    fn check_positions(&self, _positions: &[u32]) -> Result<()> {
        Ok(())
    }

    /// Runs the stack over one step's tokens at `positions`, writing their keys and values into
    /// `cache`; returns the logits of each row's last token (`last_only`) or of every token.
    /// Checks `input`'s interrupt between layers; an interrupted step leaves `cache` uncommitted.
    fn forward(
        &self,
        input: &StepInput,
        positions: &[u32],
        last_only: bool,
        cache: &mut KvCache,
        step: &mut StepBuffers,
        scratch: &mut Self::Scratch,
    ) -> Result<Vec<f32>>;
}

/// Every decoder-only architecture as a [`Model`]: its stack, shared with the sessions it starts.
pub(crate) struct DecoderModel<S: DecoderStack>(Arc<S>);

impl<S: DecoderStack> DecoderModel<S> {
    pub fn new(stack: S) -> Self {
        DecoderModel(Arc::new(stack))
    }
}

impl<S: DecoderStack> Model for DecoderModel<S> {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }

    fn is_encoder_decoder(&self) -> bool {
        false
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.0.max_positions())
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
        let (layers, kv_heads, head_dim) = self.0.cache_shape();
        let cache = KvCache::new(layers, input.batch, kv_heads, head_dim);
        Ok(Box::new(DecoderSession::new(self.0.clone(), cache)))
    }
}

/// Rows (positions x batch rows) per pass of a long prompt's prefill (see `DecoderSession::step`):
/// enough for the products to run at full speed, few enough that a step's activations (the
/// feed-forward's hidden layer above all: rows x its width) stay a few MB whatever the batch.
const PREFILL_ROWS: usize = 128;

/// Positions of every row per prefill pass of a batch of `rows` rows: `PREFILL_ROWS` rows in all
/// (one position at least, when the batch alone has more rows).
fn prefill_chunk(rows: usize) -> usize {
    (PREFILL_ROWS / rows.max(1)).max(1)
}

/// The step `input` split into consecutive runs of at most `chunk` positions of every row:
/// `(tokens, mask, position ids, positions per row)` of each, `[rows, n]` row-major like a step.
fn chunks<'a>(
    input: &'a StepInput,
    positions: &'a [u32],
    chunk: usize,
) -> impl Iterator<Item = (Vec<u32>, Option<Vec<u8>>, Vec<u32>, usize)> + 'a {
    let (n, rows) = (input.n, input.tokens.len() / input.n);
    (0..n).step_by(chunk).map(move |from| {
        let to = (from + chunk).min(n);
        let columns = |r: usize| r * n + from..r * n + to;
        let tokens = (0..rows)
            .flat_map(|r| input.tokens[columns(r)].to_vec())
            .collect();
        let mask = input
            .mask
            .map(|m| (0..rows).flat_map(|r| m[columns(r)].to_vec()).collect());
        let positions = (0..rows)
            .flat_map(|r| positions[columns(r)].to_vec())
            .collect();
        (tokens, mask, positions, to - from)
    })
}

pub(crate) struct DecoderSession<S: DecoderStack> {
    model: Arc<S>,
    cache: KvCache,
    /// Per row: real (unmasked) tokens fed so far, the next position id in `generate`'s numbering.
    real_tokens: Vec<u32>,
    step: StepBuffers,
    scratch: S::Scratch,
}

impl<S: DecoderStack> DecoderSession<S> {
    /// A session of `cache.rows()` empty rows.
    pub fn new(model: Arc<S>, cache: KvCache) -> Self {
        DecoderSession {
            model,
            real_tokens: vec![0; cache.rows()],
            cache,
            step: StepBuffers::default(),
            scratch: S::Scratch::default(),
        }
    }
}

impl<S: DecoderStack> Session for DecoderSession<S> {
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
        let mut real_tokens = self.real_tokens.clone();
        let positions = step_positions(input, &mut real_tokens);
        model.check_positions(&positions)?;
        prepare_step(&mut self.cache, input, want, model.vocab_size())?;
        let start = self.cache.len();
        let chunk = prefill_chunk(self.cache.rows());
        let (cache, step, scratch) = (&mut self.cache, &mut self.step, &mut self.scratch);
        let done = logits_on(model.pool(), model.vocab_size(), want, |last_only| {
            if !last_only || input.n <= chunk {
                return model.forward(input, &positions, last_only, cache, step, scratch);
            }
            // A long prompt whose last logits alone are wanted goes through in chunks of
            // positions, each attending to the cache the earlier ones filled: the activations
            // (the feed-forward's hidden layer above all) are then sized by the chunk's rows
            // (positions x batch rows), not by the prompt or the batch. Every position computes
            // what it would in one pass (the products and the attention compute each row
            // alone), so the logits are the same bits.
            let mut logits = Vec::new();
            for (tokens, mask, positions, n) in chunks(input, &positions, chunk) {
                let chunk = StepInput {
                    tokens: &tokens,
                    n,
                    mask: mask.as_deref(),
                    positions: None,
                    interrupt: input.interrupt,
                };
                logits = model.forward(&chunk, &positions, true, cache, step, scratch)?;
            }
            Ok(logits)
        });
        match done {
            Ok(logits) => *out = logits,
            Err(e) => {
                // Only a step that ran to the end advances the rows (an interrupted one never
                // happened), its earlier chunks included.
                self.cache.truncate(start);
                return Err(e);
            }
        }
        self.real_tokens = real_tokens;
        Ok(())
    }

    fn reorder(&mut self, source: &[usize]) -> Result<()> {
        check_reorder(source, self.rows())?;
        self.real_tokens = source.iter().map(|&s| self.real_tokens[s]).collect();
        self.cache.reorder(source)
    }

    fn rewind(&mut self, len: usize) -> Result<()> {
        check_rewind(len, self.cache.len())?;
        // The positions taken back stop counting towards each row's position ids (padding never
        // counted), so the next step numbers its tokens as if they had never been fed.
        let dropped = self.cache.attended_since(len);
        for (seen, d) in self.real_tokens.iter_mut().zip(dropped) {
            *seen -= d;
        }
        self.cache.truncate(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefill_pass_holds_at_most_the_row_budget_whatever_the_batch() {
        assert_eq!(prefill_chunk(1), PREFILL_ROWS); // batch 1 as before: 128 positions a pass
        for rows in [1, 2, 3, 7, 8, 16, 100, 128, 129, 1000] {
            let chunk = prefill_chunk(rows);
            assert!(chunk >= 1);
            assert!(
                rows * chunk <= PREFILL_ROWS.max(rows),
                "{rows} rows: {chunk} positions"
            );
        }
    }

    #[test]
    fn the_chunks_of_a_ragged_batch_8_prompt_of_512_cover_it_once_in_order() {
        let (rows, n) = (8, 512);
        let tokens: Vec<u32> = (0..rows * n).map(|i| i as u32).collect();
        let mask: Vec<u8> = (0..rows * n)
            .map(|i| u8::from(i % n >= i / n * 40))
            .collect();
        let positions: Vec<u32> = (0..rows * n).map(|i| (i % n) as u32).collect();
        let input = StepInput {
            tokens: &tokens,
            n,
            mask: Some(&mask),
            positions: None,
            interrupt: None,
        };
        let chunk = prefill_chunk(rows);
        let mut seen = vec![Vec::new(); rows];
        for (t, m, p, width) in chunks(&input, &positions, chunk) {
            assert!(
                width <= chunk && t.len() == rows * width,
                "a pass of {} rows",
                t.len()
            );
            assert!(t.len() <= PREFILL_ROWS);
            assert_eq!((m.unwrap().len(), p.len()), (t.len(), t.len()));
            for (r, row) in seen.iter_mut().enumerate() {
                row.extend_from_slice(&t[r * width..(r + 1) * width]);
            }
        }
        for (r, row) in seen.iter().enumerate() {
            assert_eq!(row[..], tokens[r * n..(r + 1) * n]);
        }
    }
}
