//! Scaled dot-product attention over keys/values laid out with arbitrary strides, so the same code
//! reads the KV cache (`[rows, heads, capacity, head_dim]`), a projected encoder output
//! (`[batch, len, heads*head_dim]`) and cross-attention keys shared by several beams (`row_map`).

use std::cell::Cell;

use rayon::prelude::*;

use crate::interrupt::Interrupt;
use crate::kernels::{attend, softmax::softmax};

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
    /// Sliding-window attention (Mistral, Gemma's local layers): query position `q` sees only the
    /// keys `j` with `q - j < window`, as transformers' `sliding_window_overlay` (`kv_idx > q_idx -
    /// window`). Positions are cache positions, left padding included, as in transformers.
    pub window: Option<usize>,
    /// Gemma 2's attention logit soft-capping: `cap * tanh(s / cap)` on the scaled scores, before
    /// the bias and the mask.
    pub softcap: Option<f32>,
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
        // Each key row's first attended position (see `lead` below), found once per call rather
        // than by each of the row's (query, head) tasks.
        let first_attended: Vec<usize> = kv.mask.map_or_else(Vec::new, |(m, stride)| {
            m.chunks_exact(stride.max(1))
                .map(|row| {
                    let row = &row[..kv.len.min(row.len())];
                    row.iter().position(|&bit| bit != 0).unwrap_or(row.len())
                })
                .collect()
        });
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
                // Keys before the window's start are masked like padding (transformers adds the
                // dtype's minimum to them too).
                let first = self.window.map_or(0, |w| (qpos + 1).saturating_sub(w));
                // The row's leading padding is left out of the scores altogether (its
                // probabilities would be exactly 0): the softmax and the weighted sum then see
                // the same keys in the same SIMD lanes whatever padding precedes them, so a row
                // gives the same bits alone, left-padded in a batch, or joined into a running
                // batch by construction (the softmax's lane sums happen to be invariant to that
                // shift too, which this does not rely on), and no dot product is spent on padding.
                // Every key masked (a padding query of a left-padded prompt): nothing is skipped,
                // and the row averages the values as transformers' all-minimum row does.
                let lead = first_attended
                    .get(kv_row)
                    .copied()
                    .filter(|&p| p < visible)
                    .unwrap_or(0);
                let qh = &q[t * width + h * hd..][..hd];
                let base = kv_row * kv.row_stride + (h / group) * kv.head_stride;
                // Taken out of the cell (not borrowed), so a nested use could never double-borrow.
                let mut scores = SCORES.with(Cell::take);
                scores.clear();
                scores.resize(visible.saturating_sub(lead), 0.0);
                // Every key's `q·k` in one call (keys before the window's start excluded: they
                // are masked below whatever their score), then the scale, cap, bias and masks.
                let computed = first.clamp(lead, visible) - lead;
                attend::dots(
                    qh,
                    from(kv.k, base + (lead + computed) * kv.pos_stride),
                    kv.pos_stride,
                    &mut scores[computed..],
                );
                for (j, s) in (lead..).zip(scores.iter_mut()) {
                    if j < first || mask.is_some_and(|m| m[j] == 0) {
                        // transformers adds the dtype's minimum: a fully masked row stays finite.
                        *s = f32::MIN;
                        continue;
                    }
                    let mut v = *s * self.scale;
                    if let Some(cap) = self.softcap {
                        v = (v / cap).tanh() * cap;
                    }
                    *s = match self.bias {
                        Some(b) => v + b(h, qpos, j),
                        None => v,
                    };
                }
                softmax(&mut scores);
                attend::weighted_sum(
                    &scores,
                    from(kv.v, base + lead * kv.pos_stride),
                    kv.pos_stride,
                    oh,
                );
                SCORES.with(|c| c.set(scores));
            });
    }
}

/// `s[start..]`, empty where `start` is past the end (no key to read: the start of a head's
/// keys after the last one can lie beyond the slice).
fn from(s: &[f32], start: usize) -> &[f32] {
    s.get(start..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row, one head of size 1, keys `k` and values `v` at positions 0..len: the output of
    /// each query of `q` (positions 0..n, causal).
    fn attend(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        window: Option<usize>,
        softcap: Option<f32>,
    ) -> Vec<f32> {
        let attn = Attention {
            heads: 1,
            kv_heads: 1,
            head_dim: 1,
            scale: 0.5,
            causal: true,
            q_offset: 0,
            window,
            softcap,
            bias: None,
            interrupt: None,
        };
        let kv = KeyValues {
            k,
            v,
            row_stride: k.len(),
            head_stride: k.len(),
            pos_stride: 1,
            len: k.len(),
            mask: None,
            row_map: None,
        };
        let mut out = vec![0.0; q.len()];
        attn.run(q, 1, q.len(), &kv, &mut out);
        out
    }

    #[test]
    fn a_window_hides_the_keys_it_has_passed() {
        let (q, k, v) = (
            [1.0, 2.0, 3.0, 4.0],
            [0.5, -1.0, 2.0, 1.5],
            [10.0, 20.0, 30.0, 40.0],
        );
        // A window of 1: every query sees only its own position.
        assert_eq!(attend(&q, &k, &v, Some(1), None), v);
        // A window of 2: query 3 sees keys 2 and 3 only: softmax over 0.5 * q * k.
        let (s2, s3) = (0.5f32 * 4.0 * 2.0, 0.5f32 * 4.0 * 1.5);
        let p2 = 1.0 / (1.0 + (s3 - s2).exp());
        let want = p2 * 30.0 + (1.0 - p2) * 40.0;
        let got = attend(&q, &k, &v, Some(2), None)[3];
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // A window longer than the sequence changes nothing.
        assert_eq!(
            attend(&q, &k, &v, Some(9), None),
            attend(&q, &k, &v, None, None)
        );
    }

    /// A deterministic pseudo-random value in [-1, 1) for index `i` of stream `seed`.
    fn noise(seed: u64, i: usize) -> f32 {
        let x = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Two rows over a cache of `len` positions (`[rows, heads, len, head_dim]`), row 0 left-padded
    /// by `pad` positions before the `real` positions it shares with row 1 (whose extra leading
    /// positions are real, other keys): the outputs of the last `n` queries of row 0.
    fn padded_row(pad: usize, real: usize, n: usize, window: Option<usize>) -> Vec<f32> {
        let (heads, kv_heads, hd) = (4, 2, 24);
        let len = pad + real;
        let at = |r: usize, h: usize, j: usize| ((r * kv_heads + h) * len + j) * hd;
        let mut k = vec![0.0; 2 * kv_heads * len * hd];
        let mut v = k.clone();
        for h in 0..kv_heads {
            for j in 0..len {
                for d in 0..hd {
                    // Row 0's real keys are the same whatever the padding; its padding holds junk.
                    let (key, val) = match j.checked_sub(pad) {
                        Some(p) => {
                            let i = (h * 1000 + p) * hd + d;
                            (noise(1, i), noise(2, i))
                        }
                        None => (1e3, -1e3),
                    };
                    k[at(0, h, j) + d] = key;
                    v[at(0, h, j) + d] = val;
                    k[at(1, h, j) + d] = noise(3, at(1, h, j) + d);
                    v[at(1, h, j) + d] = noise(4, at(1, h, j) + d);
                }
            }
        }
        let mut mask = vec![1u8; 2 * len];
        mask[..pad].fill(0);
        let width = heads * hd;
        let q: Vec<f32> = (0..2 * n * width)
            .map(|i| 3.0 * noise(5, i % (n * width)))
            .collect();
        let attn = Attention {
            heads,
            kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            causal: true,
            q_offset: len - n,
            window,
            softcap: Some(5.0),
            bias: None,
            interrupt: None,
        };
        let kv = KeyValues {
            k: &k,
            v: &v,
            row_stride: kv_heads * len * hd,
            head_stride: len * hd,
            pos_stride: hd,
            len,
            mask: Some((&mask, len)),
            row_map: None,
        };
        let mut out = vec![0.0; 2 * n * width];
        attn.run(&q, 2, n, &kv, &mut out);
        out.truncate(n * width);
        out
    }

    #[test]
    fn leading_padding_leaves_a_rows_results_bit_for_bit() {
        // Lengths across several SIMD widths, so the padding shifts the keys across lanes.
        for real in [1, 5, 17, 40] {
            for n in [1, real.min(3)] {
                for window in [None, Some(4), Some(16)] {
                    let alone = padded_row(0, real, n, window);
                    for pad in [1, 3, 8, 13] {
                        let padded = padded_row(pad, real, n, window);
                        let same = alone
                            .iter()
                            .zip(&padded)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "real {real}, n {n}, window {window:?}, pad {pad}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_query_that_sees_only_padding_averages_the_values_as_before() {
        // One head of size 1: keys 0..3 padding, the query at position 1 sees only padding.
        let attn = Attention {
            heads: 1,
            kv_heads: 1,
            head_dim: 1,
            scale: 1.0,
            causal: true,
            q_offset: 0,
            window: None,
            softcap: None,
            bias: None,
            interrupt: None,
        };
        let (k, v, mask) = ([1.0, 2.0, 3.0], [2.0, 4.0, 9.0], [0u8, 0, 1]);
        let kv = KeyValues {
            k: &k,
            v: &v,
            row_stride: 3,
            head_stride: 3,
            pos_stride: 1,
            len: 3,
            mask: Some((&mask, 3)),
            row_map: None,
        };
        let mut out = [0.0; 3];
        attn.run(&[1.0, 1.0, 1.0], 1, 3, &kv, &mut out);
        assert_eq!(out, [2.0, 3.0, 9.0]);
    }

    #[test]
    fn softcapping_squashes_the_scaled_scores() {
        let (q, k, v) = ([3.0, 3.0], [4.0, -2.0], [1.0, 5.0]);
        let cap = 2.0f32;
        let capped = |s: f32| cap * (s / cap).tanh();
        let (s0, s1) = (capped(0.5 * 3.0 * 4.0), capped(0.5 * 3.0 * -2.0));
        let p0 = 1.0 / (1.0 + (s1 - s0).exp());
        let want = p0 * 1.0 + (1.0 - p0) * 5.0;
        let got = attend(&q, &k, &v, None, Some(cap))[1];
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
