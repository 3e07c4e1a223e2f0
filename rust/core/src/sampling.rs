//! Sampling's logits warpers and the draw, per row, with transformers' semantics
//! (`TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`, `MinPLogitsWarper`, applied
//! in that order, then a draw from the softmax of what is left). These are fasttx's only warpers:
//! sampling draws with [`sample_row`], beam sampling warps its log-probabilities with
//! [`warp_row`]. Both are tested against transformers' outputs (tests/fixtures/processors).
//!
//! Why native: over a 50k vocabulary the warpers' sorts and the draw's normalisation cost several
//! milliseconds a row in numpy, as much as a decoding step. Here the expensive parts are linear:
//! top-k is a selection, and top-p finds its cut by a selection too (see [`top_p`]).
//!
//! Where transformers' result hangs on float rounding, the rounding is torch's: top-p's running
//! sum is accumulated in f64 and rounded to f32 and its bound `1 - p` is an f32, min-p compares
//! f32 probabilities with an f32 threshold. Among equal scores at a cut (which transformers leaves
//! to torch's unstable sort) lower token ids are kept, as argmax keeps them.

use crate::error::{Error, Result};
use crate::kernels::{softmax::softmax, topk::topk};

/// Sampling settings of one call, as transformers names them. `top_k = 0`, `top_p = 1` and
/// `min_p = None` switch a warper off.
#[derive(Clone, Copy, Debug)]
pub struct Warpers {
    pub temperature: f32,
    pub top_k: usize,
    /// f64: transformers compares with `1 - top_p` computed from the Python float, then rounded.
    pub top_p: f64,
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
    let finite = |c: &(f32, u32)| c.0 > f32::NEG_INFINITY;
    if cand.iter().filter(|c| finite(c)).count() >= min_keep {
        cand.retain(finite);
    }
    if w.top_p < 1.0 {
        cand = top_p(cand, w.top_p, min_keep);
    }
    // Until top-p, the candidates are in token order; top-p leaves them in selection order. The
    // order checks below skip sorting a vocabulary-sized row that is already in order (the
    // common min-p case: no top-p, most of a flat row kept), which cost more than the warper.
    if let Some(p) = w.min_p {
        // Min-p's softmax over the candidates in token order, as they stand in the row.
        if !cand.is_sorted_by_key(|c| c.1) {
            cand.sort_unstable_by_key(|c| c.1);
        }
        min_p(&mut cand, p, min_keep);
    }
    let mut kept: Vec<u32> = cand.into_iter().map(|(_, i)| i).collect();
    if !kept.is_sorted() {
        kept.sort_unstable();
    }
    kept
}

/// A candidate for top-p: (warped score, token, probability).
type Weighted = (f32, u32, f64);

/// The order transformers' top-p walks: ascending score; among equal scores (where transformers'
/// order is whatever torch's unstable sort leaves) higher tokens first, so that lower tokens are
/// kept, as argmax and min-p keep them. `-0.0` and `0.0` are equal, as in a sort.
fn ascending(a: &Weighted, b: &Weighted) -> std::cmp::Ordering {
    (a.0 + 0.0).total_cmp(&(b.0 + 0.0)).then(b.1.cmp(&a.1))
}

/// transformers' `TopPLogitsWarper`: sort ascending, `probs = softmax`, `cum = cumsum(probs)`,
/// drop the tokens where `cum <= 1 - p`, keeping at least the `min_keep` largest. As torch
/// computes it on the CPU: the cumulative sum of float32 probabilities is accumulated in f64 and
/// each entry rounded to f32, and `1 - p` (a Python float) is rounded to f32 for the comparison.
/// (The probabilities are this crate's f32 softmax, normalised in f64: within an ulp or so of
/// torch's.)
///
/// Without sorting where it can: [`dropped_by_selection`] finds the cut in linear time and
/// certifies it; only a cut within float rounding of the bound falls back to the sort.
fn top_p(cand: Vec<(f32, u32)>, p: f64, min_keep: usize) -> Vec<(f32, u32)> {
    let n = cand.len();
    if n <= min_keep {
        return cand;
    }
    let bound = (1.0 - p) as f32;
    let mut probs: Vec<f32> = cand.iter().map(|c| c.0).collect();
    softmax(&mut probs);
    // Normalised again in f64: the SIMD softmax sums in f32 lanes, ~1e-6 off over a 50k
    // vocabulary, which shifts every running sum by that much relative (moving the cut by a few
    // tokens' mass); torch's and numpy's probabilities carry no such common bias.
    let total: f64 = probs.iter().map(|&q| q as f64).sum();
    let mut items: Vec<Weighted> = cand
        .into_iter()
        .zip(probs)
        .map(|((s, i), q)| (s, i, q as f64 / total))
        .collect();
    let dropped = dropped_by_selection(&mut items, bound, min_keep)
        .unwrap_or_else(|| dropped_by_sorting(&mut items, bound));
    // `dropped` tokens are removed, but at least min_keep (the largest ones) kept.
    let first_kept = dropped.min(n - min_keep);
    if first_kept < dropped {
        items[..dropped].select_nth_unstable_by(first_kept, ascending);
    }
    items.drain(..first_kept);
    items.into_iter().map(|(s, i, _)| (s, i)).collect()
}

/// Is a token whose cumulative probability (in f64) is `cum` dropped? torch rounds `cum` to f32.
fn beyond_cut(cum: f64, bound: f32) -> bool {
    (cum as f32) <= bound
}

/// The reference cut: sorts `items` ascending and sums in that order, as torch does. Returns how
/// many tokens the cut drops (`items[..count]`).
fn dropped_by_sorting(items: &mut [Weighted], bound: f32) -> usize {
    items.sort_unstable_by(ascending);
    let mut cum = 0.0f64;
    items
        .iter()
        .take_while(|c| {
            cum += c.2;
            beyond_cut(cum, bound)
        })
        .count()
}

/// The cut of [`dropped_by_sorting`] without the sort: a selection by cumulative mass
/// (quickselect that carries the mass of the part it discards). Moves the dropped tokens to the
/// front and returns their count, or `None` where the answer is not certain.
///
/// The selection adds the same probabilities as the sorted walk in another order, so its sums
/// differ from torch's by f64 rounding (at most about `n · 2^-53` relative). The cut is certain
/// when the last dropped and the first kept token stay on their side of the bound by more than
/// that; otherwise (a cumulative sum within ~1e-15 of an f32 rounding boundary) the caller sorts.
fn dropped_by_selection(items: &mut [Weighted], bound: f32, min_keep: usize) -> Option<usize> {
    let n = items.len();
    // Every token with probability <= bound / n is dropped: those tokens come first in the
    // ascending order and, being at most n, weigh at most the bound together. On a peaked
    // distribution that settles almost the whole row in one pass. (Skipped if fewer than
    // min_keep tokens would remain: some of the smallest would then be kept.)
    let small = bound as f64 / n as f64;
    let (mut lo, mut dropped) = (0, 0.0f64);
    let mut last_dropped = None; // cumulative sum through the last dropped token
    if items.iter().filter(|c| c.2 > small).count() >= min_keep {
        for j in 0..n {
            if items[j].2 <= small {
                items.swap(lo, j);
                dropped += items[lo].2;
                lo += 1;
            }
        }
        if lo > 0 {
            last_dropped = Some(dropped);
        }
    }
    // Invariant: items[..lo] are dropped (mass `dropped`), items[hi..] kept; decide items[lo..hi].
    let mut hi = n;
    let mut first_kept = None; // cumulative sum through the first kept token
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        items[lo..hi].select_nth_unstable_by(mid - lo, ascending);
        // items[lo..mid] <= items[mid] <= items[mid+1..hi] in the ascending order.
        let cum = dropped + items[lo..mid].iter().map(|c| c.2).sum::<f64>() + items[mid].2;
        if beyond_cut(cum, bound) {
            dropped = cum;
            lo = mid + 1;
            last_dropped = Some(cum);
        } else {
            hi = mid;
            first_kept = Some(cum);
        }
    }
    // Either order's sum is within (n - 1) · 2^-53 of the exact one, relative; twice the gap
    // between the two, to spare.
    let slack = 2.0 * n as f64 * f64::EPSILON;
    let certain = last_dropped.is_none_or(|s| beyond_cut(s * (1.0 + slack), bound))
        && first_kept.is_none_or(|s| !beyond_cut(s * (1.0 - slack), bound));
    certain.then_some(lo)
}

/// transformers' `MinPLogitsWarper`: drop tokens whose probability is below `p` times the top
/// probability, keeping at least the `min_keep` best. As torch computes it: f32 probabilities,
/// `p` rounded to f32, the threshold an f32 product. `cand` is in token order (the order of the
/// softmax's sums) and stays so: the kept tokens are filtered in place, without another sort.
fn min_p(cand: &mut Vec<(f32, u32)>, p: f32, min_keep: usize) {
    if cand.len() <= min_keep {
        return;
    }
    let mut probs: Vec<f32> = cand.iter().map(|c| c.0).collect();
    softmax(&mut probs);
    let threshold = p * probs.iter().copied().fold(0.0, f32::max);
    // The `min_keep` best are kept whatever their probability: mark them above any threshold.
    for i in best_positions(cand, min_keep) {
        probs[i] = f32::INFINITY;
    }
    // `retain` visits the candidates once each, in order: `probs` walks alongside.
    let mut q = probs.into_iter();
    cand.retain(|_| q.next().is_some_and(|q| q >= threshold));
}

/// Positions of the `k` best candidates (0 < k < `cand.len()`): highest score first, among equal
/// scores lower tokens first (transformers leaves that order to torch's sort). Unordered.
fn best_positions(cand: &[(f32, u32)], k: usize) -> Vec<usize> {
    let desc =
        |a: &(f32, u32), b: &(f32, u32)| (b.0 + 0.0).total_cmp(&(a.0 + 0.0)).then(a.1.cmp(&b.1));
    if k == 1 {
        // The common case: one scan instead of a selection.
        let best = (1..cand.len()).fold(0, |b, i| {
            if desc(&cand[i], &cand[b]).is_lt() {
                i
            } else {
                b
            }
        });
        return vec![best];
    }
    let mut order: Vec<usize> = (0..cand.len()).collect();
    order.select_nth_unstable_by(k - 1, |&a, &b| desc(&cand[a], &cand[b]));
    order.truncate(k);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warpers(temperature: f32, top_k: usize, top_p: f64, min_p: Option<f32>) -> Warpers {
        Warpers {
            temperature,
            top_k,
            top_p,
            min_p,
            min_keep: 1,
        }
    }

    /// Straightforward reference: a full sort and a sequential running sum, as transformers walks
    /// it (the probabilities from the same softmax as the warpers', so that only the selection
    /// machinery is under test).
    fn reference_kept(scores: &[f32], w: &Warpers) -> Vec<u32> {
        let t = w.temperature;
        let mut s: Vec<f32> = scores.iter().map(|&x| x / t).collect();
        let n = s.len();
        let k = w.top_k.max(w.min_keep);
        if w.top_k > 0 && k < n {
            let mut sorted = s.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            for v in s.iter_mut() {
                if *v < kth {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        if w.top_p < 1.0 {
            let probs = finite_softmax(&s);
            let total: f64 = probs.iter().map(|&q| q as f64).sum();
            let mut order: Vec<usize> = (0..n).filter(|&i| s[i] > f32::NEG_INFINITY).collect();
            // Ascending; ties: higher token first (dropped first).
            order.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(b.cmp(&a)));
            let bound = (1.0 - w.top_p) as f32;
            let kept_anyway = order.len().saturating_sub(w.min_keep);
            let mut cum = 0.0f64;
            for (j, &i) in order.iter().enumerate() {
                cum += probs[i] as f64 / total;
                if (cum as f32) <= bound && j < kept_anyway {
                    s[i] = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(p) = w.min_p {
            let probs = finite_softmax(&s);
            let mut desc: Vec<usize> = (0..n).collect();
            desc.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            let best = &desc[..w.min_keep.min(n)];
            let threshold = p * probs.iter().copied().fold(0.0, f32::max);
            for (i, v) in s.iter_mut().enumerate() {
                if !best.contains(&i) && probs[i] < threshold {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        (0..n as u32)
            .filter(|&i| s[i as usize] > f32::NEG_INFINITY)
            .collect()
    }

    /// Softmax of the finite scores, in token order (zero elsewhere).
    fn finite_softmax(s: &[f32]) -> Vec<f32> {
        let finite: Vec<usize> = (0..s.len()).filter(|&i| s[i] > f32::NEG_INFINITY).collect();
        let mut p: Vec<f32> = finite.iter().map(|&i| s[i]).collect();
        softmax(&mut p);
        let mut out = vec![0.0; s.len()];
        for (&i, q) in finite.iter().zip(p) {
            out[i] = q;
        }
        out
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
                for mut w in [
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
                    // 1 in sampling; beam sampling keeps 1 + the number of EOS ids (at least 2).
                    for min_keep in [1, 2, 3] {
                        w.min_keep = min_keep;
                        assert_eq!(
                            kept_tokens(&scores, &w),
                            reference_kept(&scores, &w),
                            "n={n} seed={seed} {w:?}"
                        );
                    }
                }
            }
        }
    }

    /// `kept_tokens` as it was before the sorts of rows already in token order were skipped: it
    /// sorted unconditionally and min-p collected (score, token, probability) triples.
    fn previous_kept_tokens(scores: &[f32], w: &Warpers) -> Vec<u32> {
        let t = w.temperature;
        let min_keep = w.min_keep.max(1);
        let k = w.top_k.max(min_keep);
        let mut cand: Vec<(f32, u32)> = if w.top_k > 0 && k < scores.len() {
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
            cand.sort_unstable_by_key(|c| c.1);
            cand = previous_min_p(cand, p, min_keep);
        }
        let mut kept: Vec<u32> = cand.into_iter().map(|(_, i)| i).collect();
        kept.sort_unstable();
        kept
    }

    /// The min-p before it filtered in place (19a1f7d): drop tokens whose probability is below `p` times the top
    /// probability, keeping at least the `min_keep` best. As torch computes it: f32 probabilities,
    /// `p` rounded to f32, the threshold an f32 product.
    fn previous_min_p(cand: Vec<(f32, u32)>, p: f32, min_keep: usize) -> Vec<(f32, u32)> {
        if cand.len() <= min_keep {
            return cand;
        }
        let mut probs: Vec<f32> = cand.iter().map(|c| c.0).collect();
        softmax(&mut probs);
        let threshold = p * probs.iter().copied().fold(0.0, f32::max);
        let mut items: Vec<(f32, u32, f32)> = cand
            .into_iter()
            .zip(probs)
            .map(|((s, i), q)| (s, i, q))
            .collect();
        // Best first; among equal scores lower tokens first (transformers leaves that order to torch's
        // sort).
        let desc = |a: &(f32, u32, f32), b: &(f32, u32, f32)| {
            (b.0 + 0.0).total_cmp(&(a.0 + 0.0)).then(a.1.cmp(&b.1))
        };
        if min_keep == 1 {
            // The best token to the front in one scan (the common case) instead of a selection.
            let best = (0..items.len()).fold(0, |b, i| {
                if desc(&items[i], &items[b]).is_lt() {
                    i
                } else {
                    b
                }
            });
            items.swap(0, best);
        } else {
            items.select_nth_unstable_by(min_keep - 1, desc);
        }
        let (best, rest) = items.split_at(min_keep);
        best.iter()
            .chain(rest.iter().filter(|c| c.2 >= threshold))
            .map(|&(s, i, _)| (s, i))
            .collect()
    }

    #[test]
    fn min_p_keeps_what_the_sorting_version_kept() {
        // Random rows: flat and peaked, with ties (scores on a coarse grid) and -inf, under
        // settings that leave the candidates in token order (no top-p) and that do not.
        let mut state = 0x2545_f491_u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for case in 0..600 {
            let n = [1, 2, 3, 5, 64, 1000, 32128][case % 7];
            let spread = [0.5f32, 4.0, 20.0][case / 7 % 3];
            let grid = [0.0f32, 0.25][case / 21 % 2];
            let neg_inf_in = [0u32, 10, 2][case / 42 % 3]; // 1 in that many -inf (0: none)
            let scores: Vec<f32> = (0..n)
                .map(|_| {
                    let r = next();
                    if neg_inf_in > 0 && r % neg_inf_in == 0 {
                        return f32::NEG_INFINITY;
                    }
                    let v = (r >> 8) as f32 / (1u32 << 24) as f32 * spread;
                    if grid > 0.0 {
                        (v / grid).round() * grid
                    } else {
                        v
                    }
                })
                .collect();
            let min_p = [0.0f32, 0.05, 0.1, 0.5, 1.0][next() as usize % 5];
            let top_p = [1.0f64, 1.0, 0.9, 0.5][next() as usize % 4];
            let top_k = [0usize, 0, 50][next() as usize % 3];
            let temperature = [1.0f32, 0.7, 1.5][next() as usize % 3];
            let mut w = warpers(temperature, top_k, top_p, Some(min_p));
            for min_keep in 1..=3 {
                w.min_keep = min_keep;
                assert_eq!(
                    kept_tokens(&scores, &w),
                    previous_kept_tokens(&scores, &w),
                    "case {case}: {w:?}"
                );
            }
        }
    }

    #[test]
    fn top_p_rounds_as_torch() {
        // Ten equal scores: probabilities 0.1f32, running sums 0.1f32, 2 · 0.1f32 = 0.2f32, ...
        // and 1 - 0.8 rounds to 0.2f32 too: torch drops two tokens (an f64 comparison of the
        // running sum with 1 - 0.8 would drop one). Among equal scores the highest ids go first.
        let mut s = [0.5f32; 10];
        warp_row(&mut s, &warpers(1.0, 0, 0.8, None));
        let kept: Vec<bool> = s.iter().map(|v| v.is_finite()).collect();
        assert_eq!(
            kept,
            [true, true, true, true, true, true, true, true, false, false]
        );
    }

    #[test]
    fn top_p_sorts_when_the_selection_is_not_certain() {
        // Running sums 0.5, then exactly halfway between 0.5f32 and the next f32 (0.5 + 2^-25),
        // which rounds (to even) onto the bound 0.5: both dropped. The selection's sums carry no
        // margin there, so it defers to the sorted walk.
        let half_ulp = 2f64.powi(-25);
        let items = [(1.0, 0, 0.5), (0.0, 1, half_ulp), (2.0, 2, 0.5 - half_ulp)];
        let mut a = items;
        assert_eq!(dropped_by_selection(&mut a, 0.5, 1), None);
        let mut b = items;
        assert_eq!(dropped_by_sorting(&mut b, 0.5), 2);
        // Clear of the bound, the selection answers, as the sort does.
        let mut c = [(1.0, 0, 0.25), (0.0, 1, 0.125), (2.0, 2, 0.625)];
        assert_eq!(dropped_by_selection(&mut c, 0.5, 1), Some(2));
        assert_eq!(dropped_by_sorting(&mut c, 0.5), 2);
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
