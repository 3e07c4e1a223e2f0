//! Scaled dot-product attention over keys/values laid out with arbitrary strides, so the same code
//! reads the KV cache (`[rows, heads, capacity, head_dim]`), a projected encoder output
//! (`[batch, len, heads*head_dim]`) and cross-attention keys shared by several beams (`row_map`).

use std::cell::Cell;

use rayon::prelude::*;

use crate::interrupt::Interrupt;
use crate::kernels::{softmax::softmax, vector};

thread_local! {
    /// Each thread's buffer for one head's scores, kept across calls: attention runs in every
    /// layer of every decoding step, which should not allocate.
    static SCORES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Where the keys and values of each (row, kv head, position) live.
pub struct KeyValues<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub row_stride: usize,
    pub head_stride: usize,
    pub pos_stride: usize,
    /// Number of key positions (the same for every row).
    pub len: usize,
    /// `(mask, row stride)`: key position `j` of row `r` is visible iff `mask[r * stride + j] != 0`.
    pub mask: Option<(&'a [u8], usize)>,
    /// Row `r` of the queries reads keys of row `row_map[r]` (beams sharing one encoder output).
    pub row_map: Option<&'a [usize]>,
}

/// An additive bias `bias(head, query_position, key_position)` (T5's relative positions).
pub type Bias<'a> = &'a (dyn Fn(usize, usize, usize) -> f32 + Sync);

pub struct Attention<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·k` before the bias is added (`1/sqrt(head_dim)`, or 1 for T5).
    pub scale: f32,
    /// Query `i` of a step sits at absolute position `q_offset + i` and, if causal, sees keys `0..=q_offset + i`.
    pub causal: bool,
    pub q_offset: usize,
    pub bias: Option<Bias<'a>>,
    /// Once raised, the remaining (query, head) pairs are skipped: one call over a long input can
    /// take seconds, longer than Ctrl-C may wait. The output is then incomplete, and the caller's
    /// next check between sublayers stops the step with [`crate::Error::Interrupted`].
    pub interrupt: Option<&'a Interrupt>,
}

/// Multiply-adds a parallel attention task should at least have: below that, rayon's dispatch
/// costs more than the work (one decoding query over a short cache).
const MIN_TASK_WORK: usize = 16 * 1024;

impl Attention<'_> {
    /// `q: [rows, n, heads*head_dim]` → `out: [rows, n, heads*head_dim]`.
    ///
    /// Parallel over (query, head) pairs, so a single decoding query still spreads its heads over
    /// the threads. Each head's result depends only on its own query and keys.
    pub fn run(&self, q: &[f32], rows: usize, n: usize, kv: &KeyValues, out: &mut [f32]) {
        let (hd, width) = (self.head_dim, self.heads * self.head_dim);
        debug_assert!(q.len() >= rows * n * width && out.len() >= rows * n * width);
        if width == 0 {
            return;
        }
        let group = self.heads / self.kv_heads;
        let per_head = 2 * kv.len.max(1) * hd.max(1);
        out[..rows * n * width]
            .par_chunks_mut(hd)
            .with_min_len(MIN_TASK_WORK.div_ceil(per_head))
            .enumerate()
            .for_each(|(th, oh)| {
                if self.interrupt.is_some_and(Interrupt::is_requested) {
                    return;
                }
                let (t, h) = (th / self.heads, th % self.heads);
                let (r, i) = (t / n, t % n);
                let kv_row = kv.row_map.map_or(r, |m| m[r]);
                let qpos = self.q_offset + i;
                let visible = if self.causal {
                    (qpos + 1).min(kv.len)
                } else {
                    kv.len
                };
                let mask = kv
                    .mask
                    .map(|(m, stride)| &m[kv_row * stride..kv_row * stride + visible]);
                let qh = &q[t * width + h * hd..][..hd];
                let base = kv_row * kv.row_stride + (h / group) * kv.head_stride;
                // Taken out of the cell (not borrowed), so a nested use could never double-borrow.
                let mut scores = SCORES.with(Cell::take);
                scores.clear();
                scores.extend((0..visible).map(|j| {
                    if mask.is_some_and(|m| m[j] == 0) {
                        // transformers adds the dtype's minimum: a fully masked row stays finite.
                        return f32::MIN;
                    }
                    let kj = &kv.k[base + j * kv.pos_stride..][..hd];
                    let s = vector::dot(qh, kj) * self.scale;
                    match self.bias {
                        Some(b) => s + b(h, qpos, j),
                        None => s,
                    }
                }));
                softmax(&mut scores);
                oh.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    if p != 0.0 {
                        vector::axpy(p, &kv.v[base + j * kv.pos_stride..][..hd], oh);
                    }
                }
                SCORES.with(|c| c.set(scores));
            });
    }
}
