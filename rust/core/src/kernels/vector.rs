//! Small vector primitives used by attention over the KV cache (lengths of a head dimension,
//! 8..128). The result for given inputs depends only on the instruction set, never on alignment.

use super::cpu::{self, Isa};
#[cfg(target_arch = "x86_64")]
use super::{x86_avx2, x86_avx512};

/// Sum of `a[i] * b[i]`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    dot_with(cpu::isa(), a, b)
}

/// `y += alpha * x`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    axpy_with(cpu::isa(), alpha, x, y)
}

/// [`dot`] on an explicit instruction set. Panics if the CPU cannot run it.
pub(crate) fn dot_with(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    match isa {
        // SAFETY: `supported` checks the CPU features the function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if cpu::supported(isa) => unsafe { x86_avx512::dot(a, b) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if cpu::supported(isa) => unsafe { x86_avx2::dot(a, b) },
        Isa::Scalar | Isa::Neon => dot_portable(a, b),
        _ => panic!("{isa:?} is not supported on this CPU"),
    }
}

/// [`axpy`] on an explicit instruction set. Panics if the CPU cannot run it.
pub(crate) fn axpy_with(isa: Isa, alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    match isa {
        // SAFETY: `supported` checks the CPU features the function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if cpu::supported(isa) => unsafe { x86_avx512::axpy(alpha, x, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if cpu::supported(isa) => unsafe { x86_avx2::axpy(alpha, x, y) },
        Isa::Scalar | Isa::Neon => axpy_scalar(alpha, x, y),
        _ => panic!("{isa:?} is not supported on this CPU"),
    }
}

/// Eight independent partial sums (which the compiler can keep in vector registers), reduced in
/// the same order as the SIMD paths.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += xa[l] * xb[l];
        }
    }
    for (l, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[l] += x * y;
    }
    let s = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (s[0] + s[2]) + (s[1] + s[3])
}

pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn axpy_scalar(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close_to_ref, random, report_skipped};

    const LENS: &[usize] = &[0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 128, 513];

    #[test]
    fn dot_matches_scalar() {
        report_skipped();
        for isa in cpu::supported_isas() {
            for &n in LENS {
                let a = random(n + 3, 1);
                let b = random(n + 3, 2);
                // Unaligned starts as well.
                for off in 0..3 {
                    let (a, b) = (&a[off..off + n], &b[off..off + n]);
                    let want = dot_scalar(a, b);
                    let scale: f32 = a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum();
                    let got = dot_with(isa, a, b);
                    assert_close_to_ref(&[got], &[want], &[scale], 1e-6, &format!("{isa:?} n={n}"));
                }
            }
        }
    }

    /// AVX-512 and AVX2 give the same bits (one fixed order): a quantized model's decoding then
    /// does not depend on which of the two the CPU has.
    #[test]
    fn dot_is_the_same_on_avx512_and_avx2() {
        let isas = cpu::supported_isas();
        if !(isas.contains(&Isa::Avx512) && isas.contains(&Isa::Avx2)) {
            report_skipped();
            return;
        }
        for n in 0..80 {
            let (a, b) = (random(n + 1, 5), random(n + 1, 6));
            for off in 0..2 {
                let (a, b) = (&a[off..off + n], &b[off..off + n]);
                let (x, y) = (dot_with(Isa::Avx512, a, b), dot_with(Isa::Avx2, a, b));
                assert_eq!(x.to_bits(), y.to_bits(), "n={n}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn axpy_matches_scalar() {
        for isa in cpu::supported_isas() {
            for &n in LENS {
                let x = random(n, 3);
                let y0 = random(n + 1, 4);
                let mut want = y0[1..].to_vec();
                axpy_scalar(0.37, &x, &mut want);
                let mut got = y0[1..].to_vec();
                axpy_with(isa, 0.37, &x, &mut got);
                let scale: Vec<f32> = x
                    .iter()
                    .zip(&y0[1..])
                    .map(|(a, b)| 0.37 * a.abs() + b.abs())
                    .collect();
                assert_close_to_ref(&got, &want, &scale, 1e-6, &format!("{isa:?} n={n}"));
            }
        }
    }
}
