//! The session of every decoder-only model. An architecture supplies its layer stack (a
//! [`DecoderStack`]: embedding, blocks, head, and the step buffers only it needs); this file keeps
//! what they all share: the [`Model`] they are (from what the stack says about itself), the
//! self-attention cache, each row's position count, the step buffers, `step`, `reorder` and
//! `join`.

use std::any::Any;
use std::sync::Arc;

use super::kv_cache::KvCache;
use super::session::{
    check_reorder, check_rewind, logits_on, prepare_step, step_positions, StepBuffers,
};
use super::{Model, Session, StepInput, TokenBatch, Want};
use crate::error::{Error, Result};

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

    fn join(&mut self, other: &mut dyn Session) -> Result<()> {
        let Some(other) = other.as_any_mut().downcast_mut::<Self>() else {
            return Err(Error::InvalidInput(
                "join: the sessions come from different models (of different architectures, or \
                 one of them encoder-decoder)"
                    .into(),
            ));
        };
        if !Arc::ptr_eq(&self.model, &other.model) {
            return Err(Error::InvalidInput(
                "join: the sessions come from different models (each model joins only its own \
                 sessions)"
                    .into(),
            ));
        }
        self.cache.join(&other.cache)?;
        // Each row keeps its own position count: its next token's position id is what it would be
        // alone.
        self.real_tokens.extend_from_slice(&other.real_tokens);
        let (layers, kv_heads, head_dim) = self.model.cache_shape();
        other.cache = KvCache::new(layers, 0, kv_heads, head_dim);
        other.real_tokens = Vec::new();
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::attention::Attention;
    use crate::threading::build_pool;

    /// A one-layer toy stack: each token's key, value and query are fixed functions of the token
    /// and its position id, and the logits are the attention output itself. What a row gets thus
    /// depends on its own keys, their positions and the attention over them: all a join moves.
    struct Toy {
        pool: rayon::ThreadPool,
        /// Only for telling two toys apart in the logits.
        salt: f32,
    }

    const HEADS: usize = 2;
    const HEAD_DIM: usize = 12;
    const VOCAB: usize = HEADS * HEAD_DIM;

    fn toy() -> Arc<Toy> {
        Arc::new(Toy {
            pool: build_pool(2).unwrap(),
            salt: 0.0,
        })
    }

    impl Toy {
        fn features(&self, kind: u32, token: u32, position: u32) -> impl Iterator<Item = f32> + '_ {
            (0..VOCAB).map(move |d| {
                let x = (kind * 7919 + token * 104_729 + position * 31 + d as u32 * 613) % 1999;
                x as f32 / 999.5 - 1.0 + self.salt
            })
        }
    }

    impl DecoderStack for Toy {
        type Scratch = ();

        fn vocab_size(&self) -> usize {
            VOCAB
        }

        fn pool(&self) -> &rayon::ThreadPool {
            &self.pool
        }

        fn max_positions(&self) -> usize {
            1 << 20
        }

        fn decode_weight_bytes(&self) -> usize {
            0
        }

        fn cache_shape(&self) -> (usize, usize, usize) {
            (1, HEADS, HEAD_DIM)
        }

        fn forward(
            &self,
            input: &StepInput,
            positions: &[u32],
            last_only: bool,
            cache: &mut KvCache,
            _step: &mut StepBuffers,
            _scratch: &mut (),
        ) -> Result<Vec<f32>> {
            let (rows, n) = (cache.rows(), input.n);
            let of = |kind| -> Vec<f32> {
                input
                    .tokens
                    .iter()
                    .zip(positions)
                    .flat_map(|(&t, &p)| self.features(kind, t, p))
                    .collect()
            };
            let (q, k, v) = (of(0), of(1), of(2));
            let attn = Attention {
                heads: HEADS,
                kv_heads: HEADS,
                head_dim: HEAD_DIM,
                scale: 0.5,
                causal: true,
                q_offset: cache.len(),
                window: Some(6),
                softcap: None,
                bias: None,
                interrupt: None,
            };
            cache.begin_step(n, input.mask);
            cache.write(0, &k, &v);
            let mut out = vec![0.0; rows * n * VOCAB];
            attn.run(&q, rows, n, &cache.view(0), &mut out);
            cache.commit();
            if last_only {
                let last =
                    (0..rows).flat_map(|r| out[((r + 1) * n - 1) * VOCAB..][..VOCAB].to_vec());
                return Ok(last.collect());
            }
            Ok(out)
        }
    }

    const GREEDY: Want = Want {
        last_only: true,
        log_softmax: false,
    };

    fn session(model: &Arc<Toy>, prompt: &[u32]) -> DecoderSession<Toy> {
        let cache = KvCache::new(1, 1, HEADS, HEAD_DIM);
        let mut s = DecoderSession::new(model.clone(), cache);
        let mut out = Vec::new();
        s.step(&StepInput::tokens(prompt, prompt.len()), GREEDY, &mut out)
            .unwrap();
        s
    }

    /// The token a row's logits pick (the largest).
    fn pick(logits: &[f32]) -> u32 {
        (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap() as u32
    }

    /// Steps every row of `s` with its own next token; returns each row's logits.
    fn step_rows(s: &mut dyn Session, next: &mut [u32]) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        s.step(&StepInput::tokens(next, 1), GREEDY, &mut out)
            .unwrap();
        let rows: Vec<Vec<f32>> = out.chunks(VOCAB).map(<[f32]>::to_vec).collect();
        for (t, logits) in next.iter_mut().zip(&rows) {
            *t = pick(logits);
        }
        rows
    }

    #[test]
    fn joined_rows_step_as_they_would_alone_bit_for_bit() {
        let model = toy();
        let prompts: [&[u32]; 3] = [
            &[3, 1, 4, 1, 5, 9, 2],
            &[2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5],
            &[6],
        ];
        // Each row alone: its logits at every step.
        let alone: Vec<Vec<Vec<f32>>> = prompts
            .iter()
            .map(|p| {
                let mut s = session(&model, p);
                let mut next = [0];
                (0..12)
                    .map(|_| step_rows(&mut s, &mut next).remove(0))
                    .collect()
            })
            .collect();
        // Row 0 runs 3 steps, row 1 joins; 2 steps later row 0 leaves and row 2 joins.
        let mut batch = session(&model, prompts[0]);
        let mut next = vec![0];
        for want in &alone[0][..3] {
            assert_eq!(&step_rows(&mut batch, &mut next)[0], want);
        }
        let mut b = session(&model, prompts[1]);
        batch.join(&mut b).unwrap();
        assert_eq!(
            (batch.rows(), b.rows(), batch.real_tokens.clone()),
            (2, 0, vec![10, 12])
        );
        next.push(0);
        for i in 0..2 {
            let got = step_rows(&mut batch, &mut next);
            assert_eq!(got[0], alone[0][3 + i]);
            assert_eq!(got[1], alone[1][i]);
        }
        batch.reorder(&[1]).unwrap();
        next.remove(0);
        let mut c = session(&model, prompts[2]);
        // The joined session is shorter than the batch here; above it was longer.
        batch.join(&mut c).unwrap();
        next.push(0);
        for i in 0..5 {
            let got = step_rows(&mut batch, &mut next);
            assert_eq!(got[0], alone[1][2 + i]);
            assert_eq!(got[1], alone[2][i]);
        }
    }

    #[test]
    fn only_sessions_of_the_same_model_join() {
        let (model, twin) = (toy(), toy());
        let mut a = session(&model, &[1, 2]);
        let mut b = session(&twin, &[3]);
        let err = a.join(&mut b).unwrap_err();
        assert!(err.to_string().contains("different models"), "{err}");
        assert_eq!((a.rows(), b.rows()), (1, 1));

        // A session of another architecture (here: another stack type).
        struct Other(Toy);
        impl DecoderStack for Other {
            type Scratch = ();
            fn vocab_size(&self) -> usize {
                self.0.vocab_size()
            }
            fn pool(&self) -> &rayon::ThreadPool {
                self.0.pool()
            }
            fn max_positions(&self) -> usize {
                self.0.max_positions()
            }
            fn decode_weight_bytes(&self) -> usize {
                0
            }
            fn cache_shape(&self) -> (usize, usize, usize) {
                self.0.cache_shape()
            }
            fn forward(
                &self,
                input: &StepInput,
                positions: &[u32],
                last_only: bool,
                cache: &mut KvCache,
                step: &mut StepBuffers,
                scratch: &mut (),
            ) -> Result<Vec<f32>> {
                self.0
                    .forward(input, positions, last_only, cache, step, scratch)
            }
        }
        let other = Arc::new(Other(Toy {
            pool: build_pool(1).unwrap(),
            salt: 0.5,
        }));
        let mut c = DecoderSession::new(other, KvCache::new(1, 1, HEADS, HEAD_DIM));
        let err = a.join(&mut c).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert!(matches!(c.join(&mut a), Err(Error::InvalidInput(_))));
        assert_eq!((a.rows(), c.rows()), (1, 1));
    }

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
