//! Top-k selection (beam search candidates, over rows of up to `beams · vocab` values).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// The `min(k, len)` largest values of `values` as `(index, value)`, largest first; equal values
/// keep index order (`-0.0` equals `0.0`). NaN ranks below every number (NaNs among themselves by
/// index).
///
/// O(n log k): one pass keeps the best `k` so far in a heap whose top is the worst of them, so
/// most values are rejected by a single comparison with that top.
pub fn topk(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let k = k.min(values.len());
    if k == 0 {
        return Vec::new();
    }
    // `Ranked`'s order is "better = greater"; Reverse puts the worst kept entry on top.
    let mut heap: BinaryHeap<std::cmp::Reverse<Ranked>> = BinaryHeap::with_capacity(k + 1);
    let offer = |heap: &mut BinaryHeap<std::cmp::Reverse<Ranked>>, index: usize, value: f32| {
        let candidate = Ranked { value, index };
        if heap.len() < k {
            heap.push(std::cmp::Reverse(candidate));
        } else if let Some(mut worst) = heap.peek_mut() {
            // Later indices lose ties, so only a strictly better value gets in.
            if candidate > worst.0 {
                worst.0 = candidate;
            }
        }
    };
    // Chunks whose largest number does not beat the worst kept value are skipped whole (one
    // vectorisable max per chunk): once the heap is full that is nearly every chunk of a long row.
    // A skipped value cannot get in: it is a NaN (ranks below every number), or a number that is
    // not greater than the worst kept number (ties lose to the earlier index).
    let mut worst_kept = f32::NAN; // NaN while the heap is not full of numbers
    for (c, chunk) in values.chunks(SKIP_CHUNK).enumerate() {
        if !worst_kept.is_nan() && chunk_max(chunk) <= worst_kept {
            continue;
        }
        for (j, &value) in chunk.iter().enumerate() {
            offer(&mut heap, c * SKIP_CHUNK + j, value);
        }
        worst_kept = match heap.peek() {
            Some(w) if heap.len() == k => w.0.value,
            _ => f32::NAN,
        };
    }
    // Ascending order of Reverse = best first.
    heap.into_sorted_vec()
        .into_iter()
        .map(|r| (r.0.index, r.0.value))
        .collect()
}

/// Values per chunk tested at once against the worst kept value.
const SKIP_CHUNK: usize = 64;

/// The largest number of `chunk` (NaNs ignored; `-inf` when there is none).
#[inline]
fn chunk_max(chunk: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut blocks = chunk.chunks_exact(8);
    for b in &mut blocks {
        for l in 0..8 {
            // `>` is false for NaN, so NaNs never raise the maximum.
            lanes[l] = if b[l] > lanes[l] { b[l] } else { lanes[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(blocks.remainder()) {
        m = if v > m { v } else { m };
    }
    m
}

/// Scalar reference: a full sort under the same order.
pub fn topk_scalar(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<Ranked> = values
        .iter()
        .enumerate()
        .map(|(index, &value)| Ranked { value, index })
        .collect();
    ranked.sort_by(|a, b| b.cmp(a));
    ranked.truncate(k);
    ranked.into_iter().map(|r| (r.index, r.value)).collect()
}

/// A value with its position, ordered by rank: greater = ranks higher.
#[derive(Clone, Copy, Debug)]
struct Ranked {
    value: f32,
    index: usize,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_value = match (self.value.is_nan(), other.value.is_nan()) {
            (false, false) => self.value.partial_cmp(&other.value).unwrap(),
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
        };
        // Equal values: the lower index ranks higher.
        by_value.then(other.index.cmp(&self.index))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::random;

    fn same(a: &[(usize, f32)], b: &[(usize, f32)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    #[test]
    fn matches_full_sort() {
        for &n in &[0, 1, 2, 7, 33, 513, 4 * 32128] {
            // Coarse values so that ties are common.
            let v: Vec<f32> = random(n, n as u64)
                .iter()
                .map(|x| (x * 50.0).round())
                .collect();
            for &k in &[0, 1, 2, 3, 8, 10, 100, n, n + 5] {
                let got = topk(&v, k);
                assert_eq!(got.len(), k.min(n));
                assert!(same(&got, &topk_scalar(&v, k)), "n={n} k={k}");
            }
        }
    }

    /// Long rows with NaNs, infinities and runs of equal values across chunk boundaries.
    #[test]
    fn long_rows_with_nans_match_full_sort() {
        for seed in 0..4u64 {
            let n = 5000 + 37 * seed as usize;
            let mut v: Vec<f32> = random(n, seed + 100)
                .iter()
                .map(|x| (x * 20.0).round())
                .collect();
            for i in (0..n).step_by(97) {
                v[i] = f32::NAN;
            }
            for i in (5..n).step_by(331) {
                v[i] = f32::NEG_INFINITY;
            }
            if seed == 3 {
                v.iter_mut().take(200).for_each(|x| *x = f32::NAN);
            }
            for &k in &[1, 5, 64, 65, 300] {
                assert!(same(&topk(&v, k), &topk_scalar(&v, k)), "seed={seed} k={k}");
            }
        }
    }

    #[test]
    fn ties_nan_and_zeros() {
        let nan = f32::NAN;
        let v = [
            1.0,
            nan,
            3.0,
            3.0,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            nan,
            3.0,
            -nan,
        ];
        let got = topk(&v, 10);
        let idx: Vec<usize> = got.iter().map(|p| p.0).collect();
        assert_eq!(idx, [2, 3, 8, 0, 5, 6, 4, 1, 7, 9]);
        assert!(same(&got, &topk_scalar(&v, 10)));
        // NaN never displaces a number, even -inf.
        assert_eq!(
            topk(&[nan, f32::NEG_INFINITY, nan], 1),
            [(1, f32::NEG_INFINITY)]
        );
        let all_nan = topk(&[nan, nan, nan], 2);
        assert_eq!(all_nan.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1]);
    }
}
