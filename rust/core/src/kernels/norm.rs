//! Normalisations over the last dimension, row by row.

use super::cpu::{self, Isa};
#[cfg(target_arch = "x86_64")]
use super::x86_avx2;

/// T5LayerNorm / RMSNorm: `out = weight * (x * rsqrt(mean(x²) + eps))`, for each row of `dim`
/// (`dim = weight.len()`). The sum of squares is accumulated in f32, as transformers does; the SIMD
/// path sums in 16 interleaved partial sums, which is if anything more accurate than one chain.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_with(cpu::isa(), x, weight, eps, out)
}

/// [`rms_norm`] on an explicit instruction set. Panics if the CPU cannot run it.
pub(crate) fn rms_norm_with(isa: Isa, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(cpu::supported(isa), "{isa:?} is not supported on this CPU");
    let dim = weight.len();
    if dim == 0 {
        return;
    }
    debug_assert!(x.len().is_multiple_of(dim) && out.len() >= x.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => {
            for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
                // SAFETY: AVX2+FMA are present (checked above; AVX-512 implies them); the three
                // slices have length `dim`.
                unsafe {
                    let ms = x86_avx2::sum_squares(xr) / dim as f32;
                    x86_avx2::scale_by_weight(xr, weight, 1.0 / (ms + eps).sqrt(), or);
                }
            }
        }
        _ => rms_norm_scalar(x, weight, eps, out),
    }
}

/// Scalar reference (and the portable path).
pub fn rms_norm_scalar(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    if dim == 0 {
        return;
    }
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in or.iter_mut().zip(xr).zip(weight) {
            *o = w * (v * inv);
        }
    }
}

/// LayerNorm (GPT-2): `out = (x - mean) / sqrt(var + eps) * weight + bias` per row of `dim`, with
/// the biased variance, computed in two passes in f32 like PyTorch's CPU kernel.
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    if dim == 0 {
        return;
    }
    debug_assert!(bias.len() == dim && x.len().is_multiple_of(dim) && out.len() >= x.len());
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = xr.iter().sum::<f32>() / dim as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((o, v), w), b) in or.iter_mut().zip(xr).zip(weight).zip(bias) {
            *o = (v - mean) * inv * w + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, random, report_skipped};

    #[test]
    fn rms_norm_matches_f64() {
        report_skipped();
        for isa in cpu::supported_isas() {
            for &dim in &[1, 7, 8, 33, 512, 513, 2048] {
                let rows = 3;
                let x: Vec<f32> = random(rows * dim, 1).iter().map(|v| v * 5.0).collect();
                let w = random(dim, 2);
                let eps = 1e-6;
                let want: Vec<f32> = x
                    .chunks(dim)
                    .flat_map(|r| {
                        let ms = r.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
                        let inv = 1.0 / (ms + eps as f64).sqrt();
                        r.iter()
                            .zip(&w)
                            .map(move |(&v, &g)| (g as f64 * v as f64 * inv) as f32)
                    })
                    .collect();
                let mut got = vec![f32::NAN; rows * dim];
                rms_norm_with(isa, &x, &w, eps, &mut got);
                assert_close(&got, &want, 1e-5, 1e-7, &format!("{isa:?} dim={dim}"));
                let mut reference = vec![0.0; rows * dim];
                rms_norm_scalar(&x, &w, eps, &mut reference);
                assert_close(
                    &got,
                    &reference,
                    1e-5,
                    1e-7,
                    &format!("{isa:?} vs scalar dim={dim}"),
                );
            }
        }
    }

    #[test]
    fn rms_norm_zero_row_is_finite() {
        for isa in cpu::supported_isas() {
            let mut out = vec![f32::NAN; 9];
            rms_norm_with(isa, &[0.0; 9], &[1.0; 9], 1e-6, &mut out);
            assert!(out.iter().all(|&v| v == 0.0), "{isa:?}: {out:?}");
        }
    }

    #[test]
    fn layer_norm_matches_f64() {
        let dim = 37;
        let x: Vec<f32> = random(3 * dim, 5)
            .into_iter()
            .map(|v| v * 4.0 + 1.5)
            .collect();
        let w = random(dim, 6);
        let b = random(dim, 7);
        let mut out = vec![0.0; x.len()];
        layer_norm(&x, &w, &b, 1e-5, &mut out);
        for r in 0..3 {
            let row: Vec<f64> = x[r * dim..(r + 1) * dim]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let mean = row.iter().sum::<f64>() / dim as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
            for i in 0..dim {
                let want = (row[i] - mean) / (var + 1e-5).sqrt() * w[i] as f64 + b[i] as f64;
                assert!(
                    (out[r * dim + i] as f64 - want).abs() < 1e-5,
                    "row {r} [{i}]"
                );
            }
        }
    }
}
