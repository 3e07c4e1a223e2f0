//! The two vector loops of one attention head over its keys: the scores `q · k_j` of every key
//! and the weighted sum `Σ p_j v_j` of the values. They give exactly the bits of the one-key
//! primitives they replace ([`vector::dot`] per key; [`vector::axpy`] per nonzero weight into a
//! zeroed output), but a decoding step calls them once per (row, head) instead of once per key:
//! on AVX-512 the scores of four keys are computed side by side (four independent FMA chains
//! instead of one), and the weighted sum keeps the output in registers across the keys instead of
//! loading and storing it for each one (a store-to-load chain per key). At batch 32 that cut is
//! most of the attention's time, which used to be ~15% of a Marian decoding step for 0.7% of its
//! multiply-adds.
//!
//! Same bits by construction: each key's dot product is the same FMAs into one 16-lane
//! accumulator, in the same order, reduced by the same horizontal sum as [`vector::dot`]'s
//! AVX-512 path (itself equal to the AVX2 path's); each output lane of the weighted sum is the
//! same sequence of FMAs `acc = p_j * v_j + acc` from zero, over the keys in order, skipping zero
//! weights. Head sizes that are not a multiple of 16 lanes (and other instruction sets) take the
//! per-key primitives themselves.

use super::cpu::{self, Isa};
use super::vector;

/// `scores[i] = q · k[i * stride..][..q.len()]` for every `i`, with [`vector::dot`]'s bits.
///
/// # Panics
/// If `k` is too short for `scores.len()` keys of `q.len()` values `stride` apart.
pub fn dots(q: &[f32], k: &[f32], stride: usize, scores: &mut [f32]) {
    dots_with(cpu::isa(), q, k, stride, scores)
}

/// `out = Σ_i p[i] · v[i * stride..][..out.len()]`, summed from zero over the `i` in order and
/// skipping `p[i] == 0` (whose values may be anything, even non-finite), with the bits of
/// `out.fill(0.0)` followed by [`vector::axpy`] for each nonzero `p[i]`.
///
/// # Panics
/// If `v` is too short for `p.len()` rows of `out.len()` values `stride` apart.
pub fn weighted_sum(p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    weighted_sum_with(cpu::isa(), p, v, stride, out)
}

/// The slice length `rows` rows of `width` values `stride` apart need.
fn span(rows: usize, width: usize, stride: usize) -> usize {
    if rows == 0 {
        0
    } else {
        (rows - 1) * stride + width
    }
}

/// [`dots`] on an explicit instruction set (tests). Panics if the CPU cannot run it.
pub(crate) fn dots_with(isa: Isa, q: &[f32], k: &[f32], stride: usize, scores: &mut [f32]) {
    let hd = q.len();
    assert!(k.len() >= span(scores.len(), hd, stride), "keys too short");
    match isa {
        // SAFETY: `supported` checks the CPU features; the length was checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if cpu::supported(isa) && hd.is_multiple_of(avx512::LANES) => unsafe {
            avx512::dots(q, k, stride, scores)
        },
        _ => {
            for (i, s) in scores.iter_mut().enumerate() {
                *s = vector::dot_with(isa, q, &k[i * stride..][..hd]);
            }
        }
    }
}

/// [`weighted_sum`] on an explicit instruction set (tests). Panics if the CPU cannot run it.
pub(crate) fn weighted_sum_with(isa: Isa, p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    let hd = out.len();
    assert!(v.len() >= span(p.len(), hd, stride), "values too short");
    match isa {
        // SAFETY: `supported` checks the CPU features; the length was checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if cpu::supported(isa) && hd.is_multiple_of(avx512::LANES) => unsafe {
            avx512::weighted_sum(p, v, stride, out)
        },
        _ => {
            out.fill(0.0);
            for (i, &pi) in p.iter().enumerate() {
                if pi != 0.0 {
                    vector::axpy_with(isa, pi, &v[i * stride..][..hd], out);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::x86_avx2;

    pub(super) const LANES: usize = 16;
    /// Keys whose scores are computed side by side.
    const KEYS: usize = 4;
    /// Output vectors the weighted sum keeps in registers per pass over the keys.
    const OUT_REGS: usize = 8;

    /// `x86_avx512::dot`'s final sum: lane `l` plus lane `l + 8`, then the AVX2 order.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn hsum(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        x86_avx2::hsum(_mm256_add_ps(lo, hi))
    }

    /// # Safety
    /// AVX-512F+AVX2+FMA available; `q.len()` a multiple of [`LANES`]; `k` holds
    /// `scores.len()` rows of `q.len()` values `stride` apart.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn dots(q: &[f32], k: &[f32], stride: usize, scores: &mut [f32]) {
        let (hd, n) = (q.len(), scores.len());
        let (pq, pk) = (q.as_ptr(), k.as_ptr());
        let mut i = 0;
        while i + KEYS <= n {
            let rows: [*const f32; KEYS] = std::array::from_fn(|r| pk.add((i + r) * stride));
            let mut acc = [_mm512_setzero_ps(); KEYS];
            let mut c = 0;
            while c < hd {
                let qc = _mm512_loadu_ps(pq.add(c));
                for r in 0..KEYS {
                    acc[r] = _mm512_fmadd_ps(qc, _mm512_loadu_ps(rows[r].add(c)), acc[r]);
                }
                c += LANES;
            }
            for r in 0..KEYS {
                scores[i + r] = hsum(acc[r]);
            }
            i += KEYS;
        }
        while i < n {
            let row = pk.add(i * stride);
            let mut acc = _mm512_setzero_ps();
            let mut c = 0;
            while c < hd {
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(pq.add(c)), _mm512_loadu_ps(row.add(c)), acc);
                c += LANES;
            }
            scores[i] = hsum(acc);
            i += 1;
        }
    }

    /// # Safety
    /// AVX-512F+AVX2+FMA available; `out.len()` a multiple of [`LANES`]; `v` holds `p.len()`
    /// rows of `out.len()` values `stride` apart.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn weighted_sum(p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
        let hd = out.len();
        let (pv, po) = (v.as_ptr(), out.as_mut_ptr());
        // Output columns in passes of up to OUT_REGS vectors (one pass for head sizes up to 128).
        let mut c0 = 0;
        while c0 < hd {
            let regs = ((hd - c0) / LANES).min(OUT_REGS);
            let mut acc = [_mm512_setzero_ps(); OUT_REGS];
            for (i, &pi) in p.iter().enumerate() {
                if pi == 0.0 {
                    continue;
                }
                let a = _mm512_set1_ps(pi);
                let row = pv.add(i * stride + c0);
                for (r, acc) in acc.iter_mut().enumerate().take(regs) {
                    *acc = _mm512_fmadd_ps(a, _mm512_loadu_ps(row.add(r * LANES)), *acc);
                }
            }
            for (r, acc) in acc.iter().enumerate().take(regs) {
                _mm512_storeu_ps(po.add(c0 + r * LANES), *acc);
            }
            c0 += regs * LANES;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{random, report_skipped};

    /// Each key's score as attention computed it before: one `dot` per key.
    fn per_key_scores(isa: Isa, q: &[f32], k: &[f32], stride: usize, n: usize) -> Vec<f32> {
        let hd = q.len();
        (0..n)
            .map(|i| vector::dot_with(isa, q, &k[i * stride..][..hd]))
            .collect()
    }

    #[test]
    fn keys_at_once_give_the_bits_of_one_key_at_a_time() {
        report_skipped();
        for isa in cpu::supported_isas() {
            for hd in [1, 7, 16, 32, 48, 64, 80, 128, 144, 256, 260] {
                for n in [0, 1, 3, 4, 5, 8, 9, 25, 64] {
                    for stride in [hd, hd + 3, 4 * hd + 16] {
                        let seed = (hd * 1000 + n * 10 + stride) as u64;
                        let q = random(hd, seed);
                        let k = random(span(n, hd, stride), seed + 1);
                        // Weights with exact zeros (skipped, as masked keys are) next to a
                        // non-finite value they must not touch.
                        let mut v = random(span(n, hd, stride), seed + 2);
                        let mut p: Vec<f32> = random(n, seed + 3);
                        for (i, pi) in p.iter_mut().enumerate() {
                            if i % 3 == 1 {
                                *pi = 0.0;
                                v[i * stride] = f32::NAN;
                            }
                        }
                        let want_scores = per_key_scores(isa, &q, &k, stride, n);
                        let mut scores = vec![f32::NAN; n];
                        dots_with(isa, &q, &k, stride, &mut scores);
                        assert_eq!(
                            scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                            want_scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                            "{isa:?} dots hd {hd} n {n} stride {stride}"
                        );
                        let mut want = vec![0.0; hd];
                        for (i, &pi) in p.iter().enumerate() {
                            if pi != 0.0 {
                                vector::axpy_with(isa, pi, &v[i * stride..][..hd], &mut want);
                            }
                        }
                        let mut out = vec![f32::NAN; hd];
                        weighted_sum_with(isa, &p, &v, stride, &mut out);
                        assert_eq!(
                            out.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                            want.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                            "{isa:?} weighted_sum hd {hd} n {n} stride {stride}"
                        );
                    }
                }
            }
        }
    }
}
