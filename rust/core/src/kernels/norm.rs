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
///
/// Each row's sums are one sequential chain of additions (the bits of [`layer_norm_scalar`]);
/// groups of [`GROUP`] rows run their chains side by side, which hides the latency of the
/// additions (a decoding step normalises 32 rows of 512 three times per layer: one chain at a
/// time, that was 2% of a Marian batch step).
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    if dim == 0 {
        return;
    }
    debug_assert!(bias.len() == dim && x.len().is_multiple_of(dim) && out.len() >= x.len());
    let whole = x.len() / (GROUP * dim) * GROUP * dim;
    for (xg, og) in x[..whole]
        .chunks_exact(GROUP * dim)
        .zip(out.chunks_exact_mut(GROUP * dim))
    {
        let mut sum = [SUM_START; GROUP];
        for j in 0..dim {
            for (r, s) in sum.iter_mut().enumerate() {
                *s += xg[r * dim + j];
            }
        }
        let mean = sum.map(|s| s / dim as f32);
        let mut sq = [SUM_START; GROUP];
        for j in 0..dim {
            for (r, s) in sq.iter_mut().enumerate() {
                let d = xg[r * dim + j] - mean[r];
                *s += d * d;
            }
        }
        for (r, (xr, or)) in xg
            .chunks_exact(dim)
            .zip(og.chunks_exact_mut(dim))
            .enumerate()
        {
            normalise_row(xr, mean[r], sq[r] / dim as f32, weight, bias, eps, or);
        }
    }
    layer_norm_scalar(&x[whole..], weight, bias, eps, &mut out[whole..]);
}

/// Rows whose sums [`layer_norm`] interleaves: a caller splitting rows over threads keeps whole
/// groups together (the rows of a smaller slice are summed one at a time: the same bits, slower).
pub const LAYER_NORM_GROUP: usize = 8;
const GROUP: usize = LAYER_NORM_GROUP;
/// Where `Iterator::sum` of `f32` starts (its neutral element, `-0.0`): a row of negative zeros
/// sums to `-0.0` in both forms.
const SUM_START: f32 = -0.0;

/// `out = (x - mean) * (1 / sqrt(var + eps)) * weight + bias`.
fn normalise_row(
    x: &[f32],
    mean: f32,
    var: f32,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, v), w), b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (v - mean) * inv * w + b;
    }
}

/// [`layer_norm`] one row at a time (the reference, and rows past the last whole group).
pub fn layer_norm_scalar(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    if dim == 0 {
        return;
    }
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = xr.iter().sum::<f32>() / dim as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        normalise_row(xr, mean, var, weight, bias, eps, or);
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
    fn grouped_rows_give_the_bits_of_one_row_at_a_time() {
        for dim in [1, 7, 37, 512] {
            for rows in [1, 7, 8, 9, 17, 32] {
                let mut x: Vec<f32> = random(rows * dim, (dim * 100 + rows) as u64)
                    .into_iter()
                    .map(|v| v * 3.0 - 0.5)
                    .collect();
                // A row of negative zeros: the sums' starting value shows in the output's signs.
                x[..dim].fill(-0.0);
                // A bias of -0.0 keeps the sign of a zero output (+0.0 would erase it).
                for b in [random(dim, 9), vec![-0.0; dim]] {
                    let w = random(dim, 8);
                    let (mut got, mut want) = (vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]);
                    layer_norm(&x, &w, &b, 1e-5, &mut got);
                    layer_norm_scalar(&x, &w, &b, 1e-5, &mut want);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "dim {dim} rows {rows}");
                }
            }
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
