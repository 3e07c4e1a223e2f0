//! Sampling's logits warpers and the draw, per row, with transformers' semantics
//! (`TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`, `MinPLogitsWarper`, applied
//! in that order, then a draw from the softmax of what is left).
//!
//! Why native: over a 50k vocabulary the warpers' sorts and the draw's normalisation cost several
//! milliseconds a row in numpy, as much as a decoding step. Here the expensive parts are linear:
//! top-k is a selection, and top-p sorts only the few tokens that can hold the kept mass (the
//! rest of the row is split off with a selection, see [`top_p`]).
//!
//! The Python warpers in `fasttx.generation.processors` are the readable reference; both are tested
//! against transformers' outputs (tests/fixtures/processors).

use crate::error::{Error, Result};
use crate::kernels::{softmax::softmax, topk::topk};

/// Sampling settings of one call, as transformers names them. `top_k = 0`, `top_p = 1` and
/// `min_p = None` switch a warper off.
#[derive(Clone, Copy, Debug)]
pub struct Warpers {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: Option<f32>,
    /// Tokens every warper keeps at least (transformers' `min_keep`: 1, or 2 in beam search).
    pub min_keep: usize,
}

impl Warpers {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "temperature must be a positive number, got {}",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(Error::InvalidInput(format!(
                "top_p must be in [0, 1], got {}",
                self.top_p
            )));
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::InvalidInput(format!(
                    "min_p must be in [0, 1], got {p}"
                )));
            }
        }
        Ok(())
    }
}

/// The row after the warpers: removed tokens set to `-inf`, the others divided by the temperature
/// (what transformers' warpers leave in `scores`).
pub fn warp_row(scores: &mut [f32], w: &Warpers) {
    let kept = kept_tokens(scores, w);
    let mut keep = vec![false; scores.len()];
    for &i in &kept {
        keep[i as usize] = true;
    }
    for (s, k) in scores.iter_mut().zip(keep) {
        *s = if k {
            *s / w.temperature
        } else {
            f32::NEG_INFINITY
        };
    }
}

/// A token drawn from the warped distribution of `scores`, with `u` uniform in `[0, 1)`.
/// The same `(scores, settings, u)` give the same token on every machine and thread count.
pub fn sample_row(scores: &[f32], w: &Warpers, u: f64) -> u32 {
    let kept = kept_tokens(scores, w);
    let t = w.temperature;
    let mut probs: Vec<f32> = kept.iter().map(|&i| scores[i as usize] / t).collect();
    if probs.iter().all(|&v| v == f32::NEG_INFINITY) {
        // Nothing finite is left (every score -inf): transformers would fail; take the first kept
        // token (or token 0) rather than produce garbage.
        return kept.first().copied().unwrap_or(0);
    }
    softmax(&mut probs);
    // Cumulative probabilities in token order (summed in f64), then the first token whose
    // cumulative mass exceeds u · total.
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    let target = u.clamp(0.0, 1.0) * total;
    let mut acc = 0.0;
    for (&i, &p) in kept.iter().zip(&probs) {
        acc += p as f64;
        if acc > target && p > 0.0 {
            return i;
        }
    }
    // Rounding left `target` at the very end: the last token with a non-zero probability.
    kept.iter()
        .zip(&probs)
        .rev()
        .find(|(_, &p)| p > 0.0)
        .map_or(kept[kept.len() - 1], |(&i, _)| i)
}

/// Tokens the warpers keep, in ascending token order.
fn kept_tokens(scores: &[f32], w: &Warpers) -> Vec<u32> {
    let t = w.temperature;
    let min_keep = w.min_keep.max(1);
    // Temperature first, as transformers divides first.
    let k = w.top_k.max(min_keep);
    // Candidates as (warped score, token): the top-k (ties included), else the whole row.
    let mut cand: Vec<(f32, u32)> = if w.top_k > 0 && k < scores.len() {
        // transformers' TopKLogitsWarper keeps every scaled score >= the k-th largest scaled score.
        // Dividing by t > 0 keeps the order, so that is the k-th largest raw score, divided.
        let kth = topk(scores, k)
            .last()
            .map_or(f32::NEG_INFINITY, |&(_, v)| v)
            / t;
        scores
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| {
                let v = s / t;
                (v >= kth).then_some((v, i as u32))
            })
            .collect()
    } else {
        scores
            .iter()
            .enumerate()
            .map(|(i, &s)| (s / t, i as u32))
            .collect()
    };
    // -inf tokens hold no probability; the remaining warpers only ever remove tokens, and they
    // would remove these first (a -inf token is never among the `min_keep` best unless nothing
    // finite is left, handled below).
    let finite: Vec<(f32, u32)> = cand
        .iter()
        .copied()
        .filter(|c| c.0 > f32::NEG_INFINITY)
        .collect();
    if finite.len() >= min_keep {
        cand = finite;
    }
    if w.top_p < 1.0 {
        cand = top_p(cand, w.top_p, min_keep);
    }
    if let Some(p) = w.min_p {
        cand = min_p(cand, p, min_keep);
    }
    let mut kept: Vec<u32> = cand.into_iter().map(|(_, i)| i).collect();
    kept.sort_unstable();
    kept
}

/// transformers' `TopPLogitsWarper`: in ascending (stable) order, drop the prefix whose cumulative
/// probability is `<= 1 - p`, keeping at least `min_keep` tokens.
///
/// Without sorting: a selection by cumulative mass (quickselect that carries the mass of the
/// part it discards). The order is ascending score; among equal scores (where transformers' order
/// is whatever torch's unstable sort leaves) higher tokens come first, so lower tokens are kept,
/// as in the numpy reference, argmax and min-p.
fn top_p(mut cand: Vec<(f32, u32)>, p: f32, min_keep: usize) -> Vec<(f32, u32)> {
    let n = cand.len();
    if n <= min_keep {
        return cand;
    }
    // Probabilities as transformers computes them (an f32 softmax; SIMD here), summed in f64.
    let mut probs: Vec<f32> = cand.iter().map(|c| c.0).collect();
    softmax(&mut probs);
    let total: f64 = probs.iter().map(|&q| q as f64).sum();
    let drop_mass = (1.0 - p as f64) * total;
    // Every token with probability <= drop_mass / n is dropped: those tokens come first in the
    // ascending order and, being at most n, weigh at most drop_mass together. On a peaked
    // distribution that settles almost the whole row in one pass.
    // (If fewer than min_keep tokens would remain, the pre-pass is skipped.)
    let small = drop_mass / n as f64;
    let all: Vec<(f32, u32, f64)> = cand
        .drain(..)
        .zip(probs)
        .map(|((s, i), w)| (s, i, w as f64))
        .collect();
    let above = all.iter().filter(|c| c.2 > small).count();
    let (mut items, mut dropped) = if above >= min_keep {
        let dropped: f64 = all.iter().filter(|c| c.2 <= small).map(|c| c.2).sum();
        (
            all.into_iter().filter(|c| c.2 > small).collect::<Vec<_>>(),
            dropped,
        )
    } else {
        (all, 0.0)
    };
    let asc = |a: &(f32, u32, f64), b: &(f32, u32, f64)| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1));
    // Invariant: items[..lo] are dropped (mass `dropped`), items[hi..] kept; decide items[lo..hi].
    let n = items.len();
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        items[lo..hi].select_nth_unstable_by(mid - lo, asc);
        // items[lo..mid] <= items[mid] <= items[mid+1..hi] in the ascending order.
        let low_mass: f64 = items[lo..mid].iter().map(|c| c.2).sum();
        if dropped + low_mass + items[mid].2 <= drop_mass {
            // The cumulative sum through items[mid] stays within the budget: all dropped.
            dropped += low_mass + items[mid].2;
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    // `lo` tokens are dropped; keep at least min_keep (the largest ones, at the end).
    let first_kept = lo.min(n - min_keep);
    items.drain(..first_kept);
    items.into_iter().map(|(s, i, _)| (s, i)).collect()
}

/// transformers' `MinPLogitsWarper`: drop tokens whose probability is below `p` times the top
/// probability, keeping at least the `min_keep` best.
fn min_p(mut cand: Vec<(f32, u32)>, p: f32, min_keep: usize) -> Vec<(f32, u32)> {
    if cand.len() <= min_keep {
        return cand;
    }
    let max = cand.iter().map(|c| c.0).fold(f32::NEG_INFINITY, f32::max);
    // prob_i >= p · prob_max  <=>  s_i - max >= ln p (the normaliser cancels).
    let threshold = (p as f64).ln();
    let desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if min_keep == 1 {
        // The best token to the front in one scan (the common case) instead of a selection.
        let best = (0..cand.len()).fold(0, |b, i| {
            if desc(&cand[i], &cand[b]).is_lt() {
                i
            } else {
                b
            }
        });
        cand.swap(0, best);
    } else {
        cand.select_nth_unstable_by(min_keep - 1, desc);
    }
    let (best, rest) = cand.split_at(min_keep);
    let mut out = best.to_vec();
    out.extend(
        rest.iter()
            .copied()
            .filter(|c| (c.0 - max) as f64 >= threshold),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warpers(temperature: f32, top_k: usize, top_p: f32, min_p: Option<f32>) -> Warpers {
        Warpers {
            temperature,
            top_k,
            top_p,
            min_p,
            min_keep: 1,
        }
    }

    /// Straightforward reference: full stable sort, as transformers computes it (in f64).
    fn reference_kept(scores: &[f32], w: &Warpers) -> Vec<u32> {
        let t = w.temperature;
        let mut s: Vec<f32> = scores.iter().map(|&x| x / t).collect();
        let n = s.len();
        if w.top_k > 0 && w.top_k < n {
            let mut sorted = s.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[w.top_k - 1];
            for v in s.iter_mut() {
                if *v < kth {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        if w.top_p < 1.0 {
            let mut order: Vec<usize> = (0..n).collect();
            // Ascending; ties: higher token first (dropped first).
            order.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(b.cmp(&a)));
            let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = order.iter().map(|&i| ((s[i] - max) as f64).exp()).collect();
            let total: f64 = e.iter().sum();
            let mut cum = 0.0;
            for (j, &i) in order.iter().enumerate() {
                cum += e[j] / total;
                if cum <= 1.0 - w.top_p as f64 && j < n - 1 {
                    s[i] = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(p) = w.min_p {
            let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let best = s.iter().position(|&v| v == max).unwrap();
            for (i, v) in s.iter_mut().enumerate() {
                if i != best && (((*v - max) as f64).exp()) < p as f64 {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        (0..n as u32)
            .filter(|&i| s[i as usize] > f32::NEG_INFINITY)
            .collect()
    }

    fn row(n: usize, seed: u32) -> Vec<f32> {
        // Deterministic, spread-out scores with a few repeated values (ties).
        (0..n)
            .map(|i| {
                let x = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 10007) as f32;
                (x / 1000.0).round() * 0.7 - 3.0 + (i % 5) as f32 * 0.01
            })
            .collect()
    }

    #[test]
    fn matches_a_full_sort_reference() {
        for &n in &[1usize, 2, 7, 100, 5000] {
            for seed in 0..3 {
                let scores = row(n, seed);
                for w in [
                    warpers(1.0, 0, 1.0, None),
                    warpers(0.7, 50, 1.0, None),
                    warpers(1.3, 0, 0.9, None),
                    warpers(1.0, 0, 0.3, None),
                    warpers(1.0, 0, 0.0, None),
                    warpers(0.5, 40, 0.95, None),
                    warpers(1.0, 0, 1.0, Some(0.05)),
                    warpers(1.0, 0, 1.0, Some(0.5)),
                    warpers(0.7, 50, 0.9, Some(0.05)),
                ] {
                    assert_eq!(
                        kept_tokens(&scores, &w),
                        reference_kept(&scores, &w),
                        "n={n} seed={seed} {w:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn draw_follows_the_cumulative_mass() {
        // Two tokens with probabilities 1/4 and 3/4 (scores ln 1 and ln 3).
        let scores = [f32::NEG_INFINITY, 0.0, 3f32.ln(), f32::NEG_INFINITY];
        let w = warpers(1.0, 0, 1.0, None);
        assert_eq!(sample_row(&scores, &w, 0.0), 1);
        assert_eq!(sample_row(&scores, &w, 0.2499), 1);
        assert_eq!(sample_row(&scores, &w, 0.2501), 2);
        assert_eq!(sample_row(&scores, &w, 0.999_999), 2);
        // top_k 1 leaves the best token only.
        assert_eq!(sample_row(&scores, &warpers(1.0, 1, 1.0, None), 0.0), 2);
    }

    #[test]
    fn warp_row_marks_removed_tokens() {
        let mut s = [1.0, 3.0, 2.0, 0.0];
        warp_row(&mut s, &warpers(2.0, 2, 1.0, None));
        assert_eq!(s, [f32::NEG_INFINITY, 1.5, 1.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn bad_settings_are_rejected() {
        assert!(warpers(0.0, 0, 1.0, None).validate().is_err());
        assert!(warpers(1.0, 0, 1.5, None).validate().is_err());
        assert!(warpers(1.0, 0, 1.0, Some(-0.1)).validate().is_err());
        assert!(warpers(1.0, 0, 1.0, Some(0.1)).validate().is_ok());
    }
}
