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
    for (index, &value) in values.iter().enumerate() {
        let candidate = Ranked { value, index };
        if heap.len() < k {
            heap.push(std::cmp::Reverse(candidate));
        } else if let Some(mut worst) = heap.peek_mut() {
            // Later indices lose ties, so only a strictly better value gets in.
            if candidate > worst.0 {
                worst.0 = candidate;
            }
        }
    }
    // Ascending order of Reverse = best first.
    heap.into_sorted_vec()
        .into_iter()
        .map(|r| (r.0.index, r.0.value))
        .collect()
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
