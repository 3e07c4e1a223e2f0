//! What every session does the same way, whatever the architecture: per-step buffers, position ids
//! in `generate`'s numbering, checking a reorder, and running a step's forward pass on the model's
//! threads with the logits in the form asked for.

use super::kv_cache::KvCache;
use super::{StepInput, Want};
use crate::decoding::log_softmax_rows;
use crate::error::{check_alloc, Error, Result};
use crate::interrupt::Interrupt;
use crate::kernels::norm::rms_norm;
use crate::tensor::LinearSet;

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
    /// The residual stream (each forward pass takes it out for the step and puts it back, so that
    /// the other buffers can be borrowed beside it).
    pub h: Vec<f32>,
    /// The hidden states the logits are computed from (see [`StepBuffers::logit_rows`]).
    pub last: Vec<f32>,
    /// [`super::Session::logits_finite`] of the step's raw logits, where the forward pass found
    /// out (the session clears it before each step).
    pub logits_finite: Option<bool>,
    qkv: Vec<f32>,
}

impl StepBuffers {
    /// `q`, `k`, `v` ← the stacked `[q | k | v]` projection of `x` (`m` rows), unless interrupted.
    pub fn project_qkv(
        &mut self,
        qkv: &LinearSet,
        m: usize,
        interrupt: Option<&Interrupt>,
    ) -> Result<()> {
        qkv.forward_checked(&self.x, m, &mut self.qkv, interrupt)?;
        qkv.split_into(&self.qkv, m, &mut [&mut self.q, &mut self.k, &mut self.v]);
        Ok(())
    }

    /// [`StepBuffers::project_qkv`] for one fused `[q | k | v]` projection (Phi-3's `qkv_proj`),
    /// split after the product as transformers' `qkv[..., :q]` does; `widths`: q's and k's (v is
    /// as wide as k).
    pub fn project_fused_qkv(
        &mut self,
        qkv: &LinearSet,
        [q_w, kv_w]: [usize; 2],
        m: usize,
        interrupt: Option<&Interrupt>,
    ) -> Result<()> {
        qkv.forward_checked(&self.x, m, &mut self.qkv, interrupt)?;
        self.q.clear();
        self.k.clear();
        self.v.clear();
        for row in self.qkv.chunks_exact(q_w + 2 * kv_w) {
            self.q.extend_from_slice(&row[..q_w]);
            self.k.extend_from_slice(&row[q_w..q_w + kv_w]);
            self.v.extend_from_slice(&row[q_w + kv_w..]);
        }
        Ok(())
    }

    /// `q` and `k` ← their RMSNorm over each head (`q_norm`, `k_norm`: the factors, `[head_dim]`),
    /// as Qwen3 and Gemma 3 normalise them before the rotation.
    pub fn norm_qk_heads(&mut self, q_norm: &[f32], k_norm: &[f32], eps: f32) {
        for (x, factor) in [(&mut self.q, q_norm), (&mut self.k, k_norm)] {
            // `qkv` is free once split: the norm reads its copy of `x` from there.
            self.qkv.clear();
            self.qkv.extend_from_slice(x);
            rms_norm(&self.qkv, factor, eps, x);
        }
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

/// Position ids of a step: given, or transformers' `generate` rule (`cumsum(mask) - 1`, and 1 at
/// padding), continuing each row from `real_tokens` (real tokens fed so far), which is updated.
pub(crate) fn step_positions(input: &StepInput, real_tokens: &mut [u32]) -> Vec<u32> {
    let n = input.n;
    let mut positions = Vec::with_capacity(input.tokens.len());
    for (r, seen) in real_tokens.iter_mut().enumerate() {
        for i in 0..n {
            let real = input.mask.is_none_or(|m| m[r * n + i] != 0);
            let pos = match input.positions {
                Some(p) => p[r * n + i],
                None if real => *seen,
                None => 1,
            };
            positions.push(pos);
            if real {
                *seen += 1;
            }
        }
    }
    positions
}

/// A reorder may only name rows the session has.
pub(crate) fn check_reorder(source: &[usize], rows: usize) -> Result<()> {
    match source.iter().find(|&&s| s >= rows) {
        Some(&bad) => Err(Error::InvalidInput(format!(
            "reorder: row {bad} does not exist (session has {rows})"
        ))),
        None => Ok(()),
    }
}

/// A rewind may only take back positions the session holds.
pub(crate) fn check_rewind(len: usize, held: usize) -> Result<()> {
    if len > held {
        return Err(Error::InvalidInput(format!(
            "rewind to {len} positions: the session holds only {held}"
        )));
    }
    Ok(())
}

/// Before a step's forward pass: grows the cache for the step's `input.n`
/// positions and checks that its logits (`vocab` per row, or per token) can be allocated, so that a
/// request too large for the machine is an [`Error::OutOfMemory`] with the session unchanged.
pub(crate) fn prepare_step(
    cache: &mut KvCache,
    input: &StepInput,
    want: Want,
    vocab: usize,
) -> Result<()> {
    cache.reserve(input.n)?;
    let rows = cache.rows();
    let logits = if want.last_only {
        Some(rows)
    } else {
        rows.checked_mul(input.n)
    };
    let values = logits
        .and_then(|l| l.checked_mul(vocab))
        .unwrap_or(usize::MAX);
    check_alloc::<f32>(values, "the step's logits")
}

/// Runs a step's forward pass (given `want.last_only`, it returns logits, or stops when
/// interrupted) on `pool`, and turns the logits into log-probabilities over `vocab` when asked.
pub(crate) fn logits_on(
    pool: &rayon::ThreadPool,
    vocab: usize,
    want: Want,
    forward: impl FnOnce(bool) -> Result<Vec<f32>> + Send,
) -> Result<Vec<f32>> {
    pool.install(|| {
        let mut logits = forward(want.last_only)?;
        if want.log_softmax {
            log_softmax_rows(&mut logits, vocab);
        }
        Ok(logits)
    })
}
