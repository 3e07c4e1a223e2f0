//! Softmax and log-softmax of one row, in place, shifted by the row maximum so that large logits
//! do not overflow.
//!
//! Edge cases (the same on every path):
//! - a row with no finite maximum because every element is `-inf` (a fully masked attention row),
//!   or an empty row: `softmax` writes zeros (no probability anywhere, so a following
//!   `probs · V` contributes nothing instead of NaN), and `log_softmax` leaves the `-inf`s, which
//!   are `log 0`;
//! - a row containing `+inf` or NaN gives NaN, as in PyTorch.

use super::cpu::{self, Isa};
#[cfg(target_arch = "x86_64")]
use super::x86_avx2;

pub fn softmax(x: &mut [f32]) {
    softmax_with(cpu::isa(), x)
}

pub fn log_softmax(x: &mut [f32]) {
    log_softmax_with(cpu::isa(), x)
}

/// [`softmax`] on an explicit instruction set. Panics if the CPU cannot run it.
pub(crate) fn softmax_with(isa: Isa, x: &mut [f32]) {
    assert!(cpu::supported(isa), "{isa:?} is not supported on this CPU");
    match isa {
        // SAFETY: AVX2+FMA are present (checked above; AVX-512 implies them).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => unsafe { x86_avx2::softmax(x) },
        _ => softmax_scalar(x),
    }
}

/// [`log_softmax`] on an explicit instruction set. Panics if the CPU cannot run it.
pub(crate) fn log_softmax_with(isa: Isa, x: &mut [f32]) {
    assert!(cpu::supported(isa), "{isa:?} is not supported on this CPU");
    match isa {
        // SAFETY: AVX2+FMA are present (checked above; AVX-512 implies them).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => unsafe { x86_avx2::log_softmax(x) },
        _ => log_softmax_scalar(x),
    }
}

/// Scalar reference (and the portable path). The sum is kept in f64: a plain f32 running sum over
/// a vocabulary-sized row drifts by ~1e-5 relative.
pub fn softmax_scalar(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Scalar reference (and the portable path). The sum of exponentials is kept in f64: rows are
/// vocabulary-sized and beam search adds these values up over many steps.
pub fn log_softmax_scalar(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let sum: f64 = x.iter().map(|&v| (v - max).exp() as f64).sum();
    let lse = sum.ln() as f32;
    for v in x.iter_mut() {
        *v = (*v - max) - lse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, assert_close_to_ref, random, report_skipped};

    fn logits(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        random(n, seed).into_iter().map(|v| v * scale).collect()
    }

    /// Exact softmax / log-softmax in f64.
    fn reference(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let max = x
            .iter()
            .map(|&v| v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
        let p = x
            .iter()
            .map(|&v| ((v as f64 - max).exp() / sum) as f32)
            .collect();
        let l = x
            .iter()
            .map(|&v| (v as f64 - max - sum.ln()) as f32)
            .collect();
        (p, l)
    }

    #[test]
    fn softmax_paths_match_f64() {
        report_skipped();
        for isa in cpu::supported_isas() {
            for &n in &[1, 7, 8, 9, 33, 513, 32128] {
                for &scale in &[1.0, 30.0] {
                    let x = logits(n, n as u64, scale);
                    let (p, l) = reference(&x);
                    let mut got = x.clone();
                    softmax_with(isa, &mut got);
                    // exp(x - max) inherits the rounding of its argument: a relative error of
                    // about |x - max|·2⁻²⁴ on top of exp's own, so the bound grows with the gap.
                    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let scale: Vec<f32> = x
                        .iter()
                        .zip(&p)
                        .map(|(&v, &w)| w * (1.0 + (max - v) * 0.06))
                        .collect();
                    assert_close_to_ref(&got, &p, &scale, 2e-6, &format!("softmax {isa:?} n={n}"));
                    let mut got = x.clone();
                    log_softmax_with(isa, &mut got);
                    // Absolute: log-probabilities are compared at 1e-4 downstream.
                    assert_close(&got, &l, 1e-6, 2e-6, &format!("log_softmax {isa:?} n={n}"));
                }
            }
        }
    }

    #[test]
    fn masked_rows() {
        for isa in cpu::supported_isas() {
            for &n in &[0, 1, 5, 8, 13] {
                let mut x = vec![f32::NEG_INFINITY; n];
                softmax_with(isa, &mut x);
                assert!(x.iter().all(|&v| v == 0.0), "{isa:?}: {x:?}");
                let mut x = vec![f32::NEG_INFINITY; n];
                log_softmax_with(isa, &mut x);
                assert!(x.iter().all(|&v| v == f32::NEG_INFINITY), "{isa:?}: {x:?}");
            }
            // Partly masked: masked entries get exactly 0 / -inf, the rest normalise.
            let mut x = vec![
                f32::NEG_INFINITY,
                1.0,
                f32::NEG_INFINITY,
                1.0,
                0.5,
                -200.0,
                3.0,
                2.0,
                -1.0,
            ];
            let (p, l) = reference(&x);
            let mut lx = x.clone();
            softmax_with(isa, &mut x);
            log_softmax_with(isa, &mut lx);
            assert_eq!((x[0], x[2]), (0.0, 0.0));
            assert_eq!((lx[0], lx[2]), (f32::NEG_INFINITY, f32::NEG_INFINITY));
            assert_close(&x, &p, 2e-6, 1e-30, &format!("{isa:?} partly masked"));
            assert_close(&lx, &l, 1e-6, 2e-6, &format!("{isa:?} partly masked log"));
            assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            // Huge logits do not overflow.
            let mut x = vec![1e30, 1e30 - 1e24, 0.0];
            softmax_with(isa, &mut x);
            assert!(x.iter().all(|v| v.is_finite()), "{isa:?}: {x:?}");
            // NaN poisons the row rather than vanishing.
            let mut x = vec![1.0, f32::NAN, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
            softmax_with(isa, &mut x);
            assert!(x.iter().all(|v| v.is_nan()), "{isa:?}: {x:?}");
        }
    }
}
