use half::f16;

use super::*;
use crate::kernels::testutil::{random, report_skipped, with_threads};

/// The block types the kernels run.
fn formats() -> impl Iterator<Item = QuantFormat> {
    QuantFormat::all().filter(|f| f.has_kernels())
}

/// The kernels run 32-value blocks and super-blocks of 256 described by a `SuperBlock`
/// (`check_args` refuses anything else).
#[test]
fn kernel_types_have_32_value_blocks_or_super_blocks() {
    for fmt in formats() {
        match fmt.super_block() {
            None => assert_eq!(fmt.block_values(), QK, "{fmt:?}"),
            Some(_) => assert_eq!(fmt.block_values(), super_block::VALUES, "{fmt:?}"),
        }
    }
    for fmt in [
        QuantFormat::Q4_K,
        QuantFormat::Q6_K,
        QuantFormat::Q5_K,
        QuantFormat::Q3_K,
        QuantFormat::Q2_K,
        QuantFormat::IQ4_XS,
    ] {
        assert!(fmt.has_kernels(), "{fmt:?}");
    }
}

/// Sets the little-endian `f16` at byte `at` of `b`.
fn set_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// `n` rows of random blocks: every byte of `qs` random (all nibbles, Q8_0 values -128..=127
/// included, every Q5_0 fifth bit), scales of realistic size (Q4_0 `d` of either sign, Q4_1 `m` negative as the
/// quantizer makes it for centred weights; the K-quants' integer scales and minimums random,
/// their `d` sized for weights of about ±0.1; Q6_K's, Q3_K's and IQ4_XS's of either sign, Q6_K's
/// and IQ4_XS's down to `f16` subnormals as in real files).
fn random_weights(fmt: QuantFormat, n: usize, k: usize, seed: u64) -> Vec<u8> {
    let bytes = random(n * fmt.row_bytes(k), seed);
    let mut w: Vec<u8> = bytes.iter().map(|v| ((v + 1.0) * 128.0) as u8).collect();
    let scales = random(2 * n * k / QK, seed + 1);
    for (b, blk) in w.chunks_exact_mut(fmt.block_bytes()).enumerate() {
        let (r0, r1) = (scales[2 * b], scales[2 * b + 1]);
        match fmt {
            QuantFormat::Q4_0 => set_f16(blk, 0, 0.02 * r0),
            QuantFormat::Q4_1 => {
                set_f16(blk, 0, 0.01 * (1.5 + r0));
                set_f16(blk, 2, -0.08 * (1.5 + r1));
            }
            QuantFormat::Q5_1 => {
                set_f16(blk, 0, 0.005 * (1.5 + r0));
                set_f16(blk, 2, -0.08 * (1.5 + r1));
            }
            QuantFormat::Q8_0 => set_f16(blk, 0, 0.002 * r0),
            QuantFormat::Q5_0 => set_f16(blk, 0, 0.01 * r0),
            QuantFormat::Q4_K => {
                set_f16(blk, 0, 2e-4 * (1.5 + r0));
                set_f16(blk, 2, 1e-3 * (1.5 + r1));
            }
            QuantFormat::Q6_K => set_f16(blk, 208, 3e-5 * r0),
            QuantFormat::Q5_K => {
                set_f16(blk, 0, 1e-4 * (1.5 + r0));
                set_f16(blk, 2, 1e-3 * (1.5 + r1));
            }
            QuantFormat::Q3_K => set_f16(blk, 108, 1e-3 * r0),
            QuantFormat::IQ4_XS => set_f16(blk, 0, 3e-5 * r0),
            QuantFormat::Q2_K => {
                set_f16(blk, 80, 2e-3 * (1.5 + r0));
                set_f16(blk, 82, 3e-3 * (1.5 + r1));
            }
            _ => unreachable!("{fmt:?} has no kernels"),
        }
    }
    w
}

/// The weights as `f32` through the types' exact dequantizers (ggml's reference, not the
/// kernels' code).
fn dequantize(fmt: QuantFormat, w: &[u8], n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * k];
    fmt.dequantize(w, &mut out);
    out
}

/// `x` with rows of different magnitudes and a few outliers, like hidden states.
fn activations(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut x = random(m * k, seed);
    for (i, row) in x.chunks_mut(k.max(1)).enumerate() {
        let scale = 0.5 + i as f32;
        for (p, v) in row.iter_mut().enumerate() {
            *v *= if p % 97 == 5 { 8.0 * scale } else { scale };
        }
    }
    x
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    threads: usize,
    fmt: QuantFormat,
    x: &[f32],
    w: &[u8],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let w = pack_rows(fmt, w, fmt.padded_cols(k));
    let mut y = vec![f32::NAN; m * n];
    with_threads(threads, || {
        quant_matmul_with(isa, fmt, x, &w, &mut y, m, k, n)
    });
    y
}

/// [`quant_matmul_scalar`] on GGUF-order weights (packed here).
#[allow(clippy::too_many_arguments)]
fn scalar(fmt: QuantFormat, x: &[f32], w: &[u8], y: &mut [f32], m: usize, k: usize, n: usize) {
    quant_matmul_scalar(fmt, x, &pack_rows(fmt, w, fmt.padded_cols(k)), y, m, k, n)
}

const KS: [usize; 4] = [32, 96, 576, 1536];
const NS: [usize; 5] = [1, 7, 33, 192, 577];
const MS: [usize; 3] = [1, 3, 8];

/// Every path, thread count and odd shape gives the scalar reference's bits (the integer
/// sums are exact and the f32 steps are the same sequence on every path).
#[test]
fn quant_matmul_matches_scalar_bitwise() {
    report_skipped();
    for fmt in formats() {
        for k in KS.map(|k| fmt.padded_cols(k)) {
            for n in NS {
                let w = random_weights(fmt, n, k, (k * 1000 + n) as u64);
                for m in MS {
                    let x = activations(m, k, (m * 7 + k) as u64);
                    let mut want = vec![0.0; m * n];
                    scalar(fmt, &x, &w, &mut want, m, k, n);
                    for isa in cpu::supported_isas() {
                        for threads in [1, 2] {
                            let got = run(isa, threads, fmt, &x, &w, m, k, n);
                            if bits(&got) != bits(&want) {
                                let worst = got
                                    .iter()
                                    .zip(&want)
                                    .map(|(g, w)| ((g - w) / w.abs().max(1e-6)).abs())
                                    .fold(0.0f32, f32::max);
                                panic!(
                                    "{fmt:?} {isa:?} m={m} k={k} n={n} threads={threads}: \
                                     differs from scalar (max rel diff {worst:e})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `k` not a multiple of 32 (int8 rows padded to whole blocks): every path gives the bits of
/// the scalar reference, which are those of `x` explicitly zero-padded to the blocks.
#[test]
fn ragged_k_is_the_zero_padded_product() {
    // (Super-block rows are whole super-blocks: no padding.)
    for fmt in formats().filter(|f| f.block_values() == QK) {
        for (m, k, n) in [(1, 1, 5), (3, 48, 7), (2, 33, 9), (5, 100, 33)] {
            let kp = fmt.padded_cols(k);
            let w = random_weights(fmt, n, kp, (k * 31 + n) as u64);
            let x = activations(m, k, (m * 5 + k) as u64);
            let mut xp = vec![0.0; m * kp];
            for (dst, src) in xp.chunks_exact_mut(kp).zip(x.chunks_exact(k)) {
                dst[..k].copy_from_slice(src);
            }
            let mut want = vec![0.0; m * n];
            scalar(fmt, &xp, &w, &mut want, m, kp, n);
            let mut unpadded = vec![0.0; m * n];
            scalar(fmt, &x, &w, &mut unpadded, m, k, n);
            assert_eq!(
                bits(&unpadded),
                bits(&want),
                "{fmt:?} m={m} k={k} n={n}: scalar"
            );
            for isa in cpu::supported_isas() {
                for threads in [1, 2] {
                    let got = run(isa, threads, fmt, &x, &w, m, k, n);
                    assert_eq!(bits(&got), bits(&want), "{fmt:?} {isa:?} m={m} k={k} n={n}");
                }
            }
        }
    }
}

/// Large m: several blocks of `x` rows and several tasks.
#[test]
fn quant_matmul_prefill_shape_matches_scalar() {
    let (m, k, n) = (37, 4096, 100);
    for fmt in formats() {
        let w = random_weights(fmt, n, k, 21);
        let x = activations(m, k, 22);
        let mut want = vec![0.0; m * n];
        scalar(fmt, &x, &w, &mut want, m, k, n);
        for isa in cpu::supported_isas() {
            let got = run(isa, 2, fmt, &x, &w, m, k, n);
            assert_eq!(bits(&got), bits(&want), "{fmt:?} {isa:?} prefill");
        }
    }
}

/// y[i] has the same bits whether x[i] is alone (m = 1), row i of a batch of 7, or in a pair,
/// with 1 or 2 threads.
#[test]
fn quant_matmul_bitwise_independent_of_m_and_threads() {
    for fmt in formats() {
        for isa in cpu::supported_isas() {
            for &(k, n) in &[(576, 1031), (96, 50), (2048, 97)] {
                let k = fmt.padded_cols(k);
                let m = 7;
                let x = activations(m, k, 5);
                let w = random_weights(fmt, n, k, 6);
                let batch1 = run(isa, 1, fmt, &x, &w, m, k, n);
                let batch2 = run(isa, 2, fmt, &x, &w, m, k, n);
                let what = format!("{fmt:?} {isa:?} k={k} n={n}");
                assert_eq!(bits(&batch1), bits(&batch2), "{what}: 1 vs 2 threads");
                for i in 0..m {
                    for threads in [1, 2] {
                        let single = run(isa, threads, fmt, &x[i * k..(i + 1) * k], &w, 1, k, n);
                        assert_eq!(
                            bits(&single),
                            bits(&batch1[i * n..(i + 1) * n]),
                            "{what} row {i}: m=1 ({threads} threads) vs m=7"
                        );
                    }
                }
                let pair = run(isa, 2, fmt, &x[5 * k..], &w, 2, k, n);
                assert_eq!(
                    bits(&pair),
                    bits(&batch1[5 * n..]),
                    "{what}: rows 5..7 as m=2"
                );
            }
        }
    }
}

/// Every edge of the kernels' tiles (up to 8 rows of `x` by two weight rows, `x` rows handed over
/// 8 at a time): `m` = 1..=9 and 17, `n` = 1..=17, rows of one full group and a short one (two
/// super-blocks), each type and instruction set, give the scalar reference's bits.
#[test]
fn every_tile_edge_matches_scalar_bitwise() {
    for fmt in formats() {
        let k = if fmt.block_values() == QK {
            11 * QK
        } else {
            2 * fmt.block_values()
        };
        let n_max = 17;
        let w = random_weights(fmt, n_max, k, 91);
        let packed = pack_rows(fmt, &w, k);
        let rb = fmt.packed_row_bytes(k);
        for m in (1..=9).chain([17]) {
            let x = activations(m, k, 92 + m as u64);
            for n in 1..=n_max {
                let mut want = vec![0.0; m * n];
                quant_matmul_scalar(fmt, &x, &packed[..n * rb], &mut want, m, k, n);
                for isa in cpu::supported_isas() {
                    let mut got = vec![f32::NAN; m * n];
                    quant_matmul_with(isa, fmt, &x, &packed[..n * rb], &mut got, m, k, n);
                    assert_eq!(bits(&got), bits(&want), "{fmt:?} {isa:?} m={m} n={n}");
                }
            }
        }
    }
}

/// A short last group of every length (1..=7 blocks after a full group: the NEON kernels' half
/// groups of 4 lanes end full, partial or empty) under every tile edge of up to 5 rows of `x` and
/// 3 weight rows, for each 32-value type and instruction set: the scalar reference's bits.
#[test]
fn short_groups_of_every_length_match_scalar_bitwise() {
    for fmt in formats().filter(|f| f.block_values() == QK) {
        for t in 1..LANES {
            let k = (LANES + t) * QK;
            let w = random_weights(fmt, 3, k, 95 + t as u64);
            let packed = pack_rows(fmt, &w, k);
            let rb = fmt.packed_row_bytes(k);
            for m in 1..=5 {
                let x = activations(m, k, 96 + m as u64);
                for n in 1..=3 {
                    let mut want = vec![0.0; m * n];
                    quant_matmul_scalar(fmt, &x, &packed[..n * rb], &mut want, m, k, n);
                    for isa in cpu::supported_isas() {
                        let mut got = vec![f32::NAN; m * n];
                        quant_matmul_with(isa, fmt, &x, &packed[..n * rb], &mut got, m, k, n);
                        assert_eq!(bits(&got), bits(&want), "{fmt:?} {isa:?} t={t} m={m} n={n}");
                    }
                }
            }
        }
    }
}

/// The AVX2 tiles' heights on both sides of their `k` threshold (8 rows of `x` up to `k` = 2048,
/// 4 above: `x86_avx2::rows_per_tile`), for every type: `m` = 1..=9 and 17, odd `n` (5 and 37),
/// and for the 32-value types a short last group, give the scalar reference's bits.
#[test]
fn avx2_tile_heights_match_scalar_bitwise() {
    if !cpu::supported(Isa::Avx2) {
        return;
    }
    for fmt in formats() {
        let ks: &[usize] = if fmt.block_values() == QK {
            &[2048 - 3 * QK, 2048, 2048 + 5 * QK, 4096 + 13 * QK]
        } else {
            &[2048, 2304, 4608]
        };
        for (&k, n) in ks.iter().flat_map(|k| [(k, 5), (k, 37)]) {
            let w = random_weights(fmt, n, k, 95);
            let packed = pack_rows(fmt, &w, k);
            for m in (1..=9).chain([17]) {
                let x = activations(m, k, 96 + m as u64);
                let mut want = vec![0.0; m * n];
                quant_matmul_scalar(fmt, &x, &packed, &mut want, m, k, n);
                let mut got = vec![f32::NAN; m * n];
                quant_matmul_with(Isa::Avx2, fmt, &x, &packed, &mut got, m, k, n);
                assert_eq!(bits(&got), bits(&want), "{fmt:?} k={k} m={m}");
            }
        }
    }
}

/// A row of `x` gives the same bits alone and anywhere in a batch large enough for several blocks
/// of rows, tasks and partial tiles (m = 101 at k = 1536: three blocks of `x` rows), on 1 and 2
/// threads.
#[test]
fn a_row_alone_and_in_a_big_batch_give_the_same_bits() {
    let (m, k, n) = (101, 1536, 37);
    let x = activations(m, k, 93);
    for fmt in formats() {
        let w = random_weights(fmt, n, k, 94);
        for isa in cpu::supported_isas() {
            for threads in [1, 2] {
                let batch = run(isa, threads, fmt, &x, &w, m, k, n);
                for i in [0, 7, 8, 50, 96, 100] {
                    let alone = run(isa, threads, fmt, &x[i * k..(i + 1) * k], &w, 1, k, n);
                    assert_eq!(
                        bits(&alone),
                        bits(&batch[i * n..(i + 1) * n]),
                        "{fmt:?} {isa:?} threads={threads} row {i}"
                    );
                }
            }
        }
    }
}

/// Against the product of the exactly dequantized weights with the exactly dequantized
/// 8-bit activations, in f64: checks the integer and scale arithmetic on its own (only f32
/// rounding remains, so the tolerance is tight).
#[test]
fn quant_matmul_equals_dequantized_product_of_quantized_activations() {
    let (m, k, n) = (3, 1536, 65);
    for fmt in formats() {
        let w = random_weights(fmt, n, k, 31);
        let wf = dequantize(fmt, &w, n, k);
        let x = activations(m, k, 32);
        let mut act = Activations::default();
        act.quantize(Kernel::Portable, &x, m, k, false);
        for isa in cpu::supported_isas() {
            let y = run(isa, 2, fmt, &x, &w, m, k, n);
            for i in 0..m {
                let xr = act.row(i);
                let xh: Vec<f64> = (0..k)
                    .map(|p| xr.value(p) as f64 * xr.d[p / QK] as f64)
                    .collect();
                for j in 0..n {
                    let wr = &wf[j * k..(j + 1) * k];
                    let exact: f64 = wr.iter().zip(&xh).map(|(&a, &b)| a as f64 * b).sum();
                    let scale: f64 = wr
                        .iter()
                        .zip(&xh)
                        .map(|(&a, &b)| (a as f64 * b).abs())
                        .sum();
                    let err = (y[i * n + j] as f64 - exact).abs();
                    assert!(
                        err <= 1e-5 * scale,
                        "{fmt:?} {isa:?} [{i}][{j}]: {} vs {exact} (scale {scale})",
                        y[i * n + j]
                    );
                }
            }
        }
    }
}

/// Against the exact f32 weights times the unquantized `x`: the error is what 8-bit
/// activations cost. Measured relative to `‖x_i‖·‖w_j‖` (the size a dot product can have) and
/// to `|y|`, printed for the record (`--nocapture`).
#[test]
fn quant_matmul_accuracy_vs_f32() {
    for fmt in formats() {
        let (mut worst_norm, mut sum_norm, mut count) = (0.0f64, 0.0f64, 0usize);
        let mut worst_y = 0.0f64;
        for &(m, k, n) in &[(3, 576, 192), (2, 1536, 577), (8, 96, 33)] {
            let k = fmt.padded_cols(k);
            let w = random_weights(fmt, n, k, 41);
            let wf = dequantize(fmt, &w, n, k);
            let x = activations(m, k, 42);
            let y = run(cpu::isa(), 2, fmt, &x, &w, m, k, n);
            for i in 0..m {
                let xr = &x[i * k..(i + 1) * k];
                let xn = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                for j in 0..n {
                    let wr = &wf[j * k..(j + 1) * k];
                    let wn = wr.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                    let exact: f64 = wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let err = (y[i * n + j] as f64 - exact).abs();
                    let rel = err / (xn * wn);
                    worst_norm = worst_norm.max(rel);
                    sum_norm += rel;
                    count += 1;
                    if exact.abs() > 0.1 * xn * wn {
                        worst_y = worst_y.max(err / exact.abs());
                    }
                }
            }
        }
        println!(
            "{fmt:?}: |y - y_f32| / (‖x‖·‖w‖): max {worst_norm:.2e}, mean {:.2e}; \
             / |y| where |y| > 0.1‖x‖‖w‖: max {worst_y:.2e}",
            sum_norm / count as f64
        );
        assert!(
            worst_norm < 1e-2,
            "{fmt:?}: error {worst_norm:e} of ‖x‖·‖w‖"
        );
    }
}

/// Pins the block layouts and nibble order with hand-made blocks. `x` holds integers with
/// max |x| = 127, so it quantizes exactly (d = 1) and every product is exact.
#[test]
fn known_nibbles() {
    let k = 64;
    let x: Vec<f32> = (0..k)
        .map(|p| [127.0, -3.0, 5.0, 1.0, -127.0, 0.0, 2.0][p % 7])
        .collect();
    for isa in cpu::supported_isas() {
        // Q4_0, d = 0.5: byte j = nibbles (j, 15 - j), i.e. element j = j - 8 and element
        // j + 16 = 7 - j.
        let mut w = Vec::new();
        for _ in 0..k / QK {
            w.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
            w.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        }
        let want: f32 = (0..k)
            .map(|p| {
                let j = p % QK;
                let q = if j < 16 {
                    j as f32 - 8.0
                } else {
                    7.0 - (j - 16) as f32
                };
                0.5 * q * x[p]
            })
            .sum();
        let got = run(isa, 1, QuantFormat::Q4_0, &x, &w, 1, k, 1);
        assert_eq!(got[0], want, "Q4_0 {isa:?}");

        // Q4_1, d = 0.25, m = -1: same nibbles, element = q·0.25 - 1.
        let mut w = Vec::new();
        for _ in 0..k / QK {
            w.extend_from_slice(&f16::from_f32(0.25).to_le_bytes());
            w.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
            w.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        }
        let want: f32 = (0..k)
            .map(|p| {
                let j = p % QK;
                let q = if j < 16 {
                    j as f32
                } else {
                    15.0 - (j - 16) as f32
                };
                (0.25 * q - 1.0) * x[p]
            })
            .sum();
        let got = run(isa, 1, QuantFormat::Q4_1, &x, &w, 1, k, 1);
        assert_eq!(got[0], want, "Q4_1 {isa:?}");

        // Q8_0, d = 1: values -128, -119, ... covering both extremes.
        let mut w = Vec::new();
        let mut vals = Vec::new();
        for blk in 0..k / QK {
            w.extend_from_slice(&f16::from_f32(1.0).to_le_bytes());
            for j in 0..QK {
                let v = if blk == 0 && j == 0 {
                    127
                } else {
                    (j as i32 * 9 - 128 + blk as i32) as i8
                };
                w.push(v as u8);
                vals.push(v as f32);
            }
        }
        let want: f32 = vals.iter().zip(&x).map(|(a, b)| a * b).sum();
        let got = run(isa, 1, QuantFormat::Q8_0, &x, &w, 1, k, 1);
        assert_eq!(got[0], want, "Q8_0 {isa:?}");
        // And the reference dequantizer agrees on the meaning of those bytes.
        let wf = dequantize(QuantFormat::Q8_0, &w, 1, k);
        assert_eq!(wf, vals);

        // Q5_0, d = 0.5: Q4_0's nibbles, and qh = 0xA5A5_0F3C, so value j has fifth bit
        // bit j of qh: q = nibble + 16·bit, element (q - 16)·0.5. Three blocks: a row ending in
        // a short group.
        let k5 = 96;
        let x5: Vec<f32> = (0..k5).map(|p| x[p % k]).collect();
        let qh: u32 = 0xA5A5_0F3C;
        let mut w = Vec::new();
        for _ in 0..k5 / QK {
            w.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
            w.extend_from_slice(&qh.to_le_bytes());
            w.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        }
        let want: f32 = (0..k5)
            .map(|p| {
                let j = p % QK;
                let nibble = if j < 16 { j } else { 15 - (j - 16) } as f32;
                let q = nibble + 16.0 * ((qh >> j) & 1) as f32;
                0.5 * (q - 16.0) * x5[p]
            })
            .sum();
        let got = run(isa, 1, QuantFormat::Q5_0, &x5, &w, 1, k5, 1);
        assert_eq!(got[0], want, "Q5_0 {isa:?}");
    }
}

/// The largest products the integer steps meet: Q8_0 weights of -128 against activations of
/// ±127 (pair sums of ±32512 in `maddubs`, just inside i16), 15-nibbles, and Q5_1's and Q5_0's
/// 31s (four pieces of pair sums `2·31·127` in one `i16`), Q5_0's 0s (`-16`).
#[test]
fn extreme_values_do_not_saturate() {
    let k = 64;
    for isa in cpu::supported_isas() {
        for sign in [1.0f32, -1.0] {
            // All x = ±1 quantize to q = ±127 with d = 1/127.
            let x = vec![sign; k];
            for (fmt, byte) in [
                (QuantFormat::Q8_0, 0x80u8),
                (QuantFormat::Q8_0, 0x7F),
                (QuantFormat::Q4_0, 0xFF),
                (QuantFormat::Q4_0, 0x00),
                (QuantFormat::Q4_1, 0xFF),
                (QuantFormat::Q5_1, 0xFF),
                (QuantFormat::Q5_0, 0xFF),
                (QuantFormat::Q5_0, 0x00),
            ] {
                let mut w = vec![byte; fmt.row_bytes(k)];
                for blk in w.chunks_exact_mut(fmt.block_bytes()) {
                    blk[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
                    if matches!(fmt, QuantFormat::Q4_1 | QuantFormat::Q5_1) {
                        blk[2..4].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
                    }
                }
                let want: f32 = dequantize(fmt, &w, 1, k).iter().map(|v| v * sign).sum();
                let got = run(isa, 1, fmt, &x, &w, 1, k, 1)[0];
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs(),
                    "{fmt:?} {isa:?} byte {byte:#x} x = {sign}: {got} vs {want}"
                );
            }
        }
    }
}

/// The largest integers the super-block kernels meet, with `x = ±1` (all `q = ±127`): Q6_K
/// values 0 (`-32`) and 63 under scales -128 and 127 (`maddubs` pairs of `2·63·127`, `|isum|`
/// near `2^24`), Q4_K nibbles 15 with scales and minimums 63, Q5_K's 31 likewise, Q3_K values
/// -4 and 3 under scales -32 and 31, Q2_K values 3 with scales and minimums 15, IQ4_XS codebook
/// values -127 and 113 under scales -32 and 31 (`|isum|` up to `32·127·127·32`, near `2^24`).
#[test]
fn super_block_extremes_do_not_saturate() {
    let k = 512;
    let mut cases = Vec::new();
    for (low, high, scale) in [
        (0x00u8, 0x00u8, 0x80u8),
        (0xFF, 0xFF, 0x7F),
        (0xFF, 0x00, 0x80),
    ] {
        let mut blk = [low; 210];
        blk[128..192].fill(high);
        blk[192..208].fill(scale);
        set_f16(&mut blk, 208, 1.0);
        cases.push((QuantFormat::Q6_K, blk.to_vec()));
    }
    for (byte, scales) in [(0xFFu8, 0xFFu8), (0x00, 0xFF), (0xFF, 0x3F)] {
        let mut blk = [byte; 144];
        blk[4..16].fill(scales);
        set_f16(&mut blk, 0, 1.0);
        set_f16(&mut blk, 2, 0.5);
        cases.push((QuantFormat::Q4_K, blk.to_vec()));
    }
    for (bits, scales) in [(0xFFu8, 0xFFu8), (0x00, 0xFF), (0xFF, 0x3F)] {
        let mut blk = [bits; 176];
        blk[4..16].fill(scales);
        set_f16(&mut blk, 0, 1.0);
        set_f16(&mut blk, 2, 0.5);
        cases.push((QuantFormat::Q5_K, blk.to_vec()));
    }
    // Q3_K scale bytes 0x00: every scale -32; 0xFF: 31. Values: hmask 0 with qs 0 is -4,
    // hmask and qs 0xFF is 3.
    for (values, scales) in [(0x00u8, 0x00u8), (0xFF, 0xFF), (0x00, 0xFF), (0xFF, 0x00)] {
        let mut blk = [values; 110];
        blk[96..108].fill(scales);
        set_f16(&mut blk, 108, 1.0);
        cases.push((QuantFormat::Q3_K, blk.to_vec()));
    }
    for (values, scales) in [(0xFFu8, 0xFFu8), (0x00, 0xFF), (0xFF, 0x0F)] {
        let mut blk = [values; 84];
        blk[..16].fill(scales);
        set_f16(&mut blk, 80, 1.0);
        set_f16(&mut blk, 82, 0.5);
        cases.push((QuantFormat::Q2_K, blk.to_vec()));
    }
    for (values, scales) in [(0x00u8, 0x00u8), (0xFF, 0xFF), (0x00, 0xFF), (0xFF, 0x00)] {
        let mut blk = [values; 136];
        blk[2..8].fill(scales);
        set_f16(&mut blk, 0, 1.0);
        cases.push((QuantFormat::IQ4_XS, blk.to_vec()));
    }
    for isa in cpu::supported_isas() {
        for sign in [1.0f32, -1.0] {
            let x = vec![sign; k];
            for (fmt, blk) in &cases {
                let w = blk.repeat(k / fmt.block_values());
                let want: f32 = dequantize(*fmt, &w, 1, k).iter().map(|v| v * sign).sum();
                let got = run(isa, 1, *fmt, &x, &w, 1, k, 1)[0];
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs(),
                    "{fmt:?} {isa:?} x = {sign}: {got} vs {want}"
                );
            }
        }
    }
}

/// Packed rows read back (`dequantize_packed`: embedding lookups, int8's source) give the bits
/// of the type's own dequantizer, on realistic blocks and on blocks of random bytes (any scale,
/// `f16` infinities and NaNs included), rows of 32 blocks (whole groups) and of 28 (Qwen2.5's
/// 896 values: a short last group).
#[test]
fn packed_rows_dequantize_as_the_type() {
    for fmt in formats() {
        for k in [1024usize, 896]
            .into_iter()
            .filter(|k| k.is_multiple_of(fmt.block_values()))
        {
            let n = 6;
            let noise: Vec<u8> = random(n * fmt.row_bytes(k), 77)
                .iter()
                .map(|v| ((v + 1.0) * 128.0) as u8)
                .collect();
            for w in [random_weights(fmt, n, k, 71), noise] {
                let want = dequantize(fmt, &w, n, k);
                let packed = pack_rows(fmt, &w, k);
                let pb = fmt.packed_row_bytes(k);
                assert_eq!(packed.len(), n * pb, "{fmt:?}");
                let mut got = vec![0.0; n * k];
                for (row, out) in packed.chunks_exact(pb).zip(got.chunks_exact_mut(k)) {
                    dequantize_packed(fmt, row, out);
                }
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "{fmt:?} k={k} value {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

/// Empty shapes, zero rows of x, and NaN/inf in x (NaN outputs for that row only).
#[test]
fn edge_cases() {
    for fmt in formats() {
        for isa in cpu::supported_isas() {
            let mut y = vec![1.0; 6];
            quant_matmul_with(isa, fmt, &[], &[], &mut y, 2, 0, 3);
            assert_eq!(y, vec![0.0; 6]);
            let kb = fmt.block_values();
            let w3 = random_weights(fmt, 3, kb, 1);
            quant_matmul_with(isa, fmt, &[], &pack_rows(fmt, &w3, kb), &mut y, 0, kb, 3);
            quant_matmul_with(isa, fmt, &vec![0.0; 2 * kb], &[], &mut y, 2, kb, 0);

            let (m, k, n) = (3, fmt.padded_cols(96), 5);
            let w = random_weights(fmt, n, k, 51);
            let mut x = vec![0.0; m * k];
            x[k + 40] = f32::NAN;
            x[2 * k + 3] = f32::INFINITY;
            let y = run(isa, 1, fmt, &x, &w, m, k, n);
            assert!(
                y[..n].iter().all(|&v| v == 0.0),
                "{fmt:?} {isa:?}: zero row"
            );
            assert!(
                y[n..].iter().all(|v| v.is_nan()),
                "{fmt:?} {isa:?}: NaN/inf rows"
            );
        }
    }
}

/// Per-channel int8: one f16 scale per row (>= max|row| / 127), every element within half a
/// step of its value, padding zeros, and the product equal to the Q8_0 product of those bytes.
#[test]
fn int8_rows_have_one_scale_and_half_step_error() {
    for &(n, k) in &[(1usize, 32usize), (5, 48), (7, 576), (3, 1)] {
        let mut w = random(n * k, (n * k) as u64);
        w[0] *= 40.0; // an outlier sets row 0's scale
        let bytes = quantize_rows_int8(&w, n, k);
        let kp = int8::padded_cols(k);
        let rb = QuantFormat::Q8_0.row_bytes(kp);
        assert_eq!(bytes.len(), n * rb);
        let deq = dequantize(QuantFormat::Q8_0, &bytes, n, kp);
        for r in 0..n {
            let row = &w[r * k..(r + 1) * k];
            let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let blocks = &bytes[r * rb..(r + 1) * rb];
            let d = f16::from_le_bytes([blocks[0], blocks[1]]).to_f32();
            assert!(
                d * 127.0 >= amax && d <= amax / 127.0 * 1.001 + 1e-7,
                "row {r}: d {d} amax {amax}"
            );
            for b in blocks.chunks_exact(QuantFormat::Q8_0.block_bytes()) {
                assert_eq!(
                    f16::from_le_bytes([b[0], b[1]]).to_f32(),
                    d,
                    "one scale per row"
                );
            }
            for c in 0..kp {
                let got = deq[r * kp + c];
                if c < k {
                    assert!((got - row[c]).abs() <= d / 2.0 + 1e-7, "row {r} col {c}");
                } else {
                    assert_eq!(got, 0.0, "padding");
                }
            }
        }
    }
}

/// `cargo test --release -p fasttx-core quant -- --ignored --nocapture`
///
/// Every type at the same shapes (`k` a multiple of 256, so that the K-quants run them too).
#[test]
#[ignore]
fn bench_quant_matmul() {
    use std::time::Instant;
    // (1, 1536, 256) stays in L2 (compute speed); n = 16384 streams 14-28 MB (from a large L3),
    // k = 4096 with it 38-73 MB (from memory).
    let shapes = [
        (1, 1536, 256),
        (1, 4608, 32),
        (1, 1536, 1536),
        (1, 1536, 16384),
        (1, 4096, 16384),
        (8, 1536, 1536),
        (128, 1536, 1536),
    ];
    let fmts = [
        QuantFormat::Q8_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_1,
        QuantFormat::Q4_0,
        QuantFormat::Q5_0,
        QuantFormat::Q4_K,
        QuantFormat::Q6_K,
        QuantFormat::Q5_K,
        QuantFormat::Q3_K,
        QuantFormat::Q2_K,
        QuantFormat::IQ4_XS,
    ];
    for &(m, k, n) in &shapes {
        for fmt in fmts {
            let w = pack_rows(fmt, &random_weights(fmt, n, k, 61), k);
            let x = activations(m, k, 62);
            let mut y = vec![0.0; m * n];
            for threads in [1, 2] {
                let bytes = w.len() as f64;
                // Enough repetitions for ~0.3 s at ~10 GB/s, at least 5.
                let reps = ((3e9 / bytes / m as f64) as usize).clamp(5, 3000);
                let mut times = with_threads(threads, || {
                    quant_matmul(fmt, &x, &w, &mut y, m, k, n); // warm-up
                    (0..reps)
                        .map(|_| {
                            let t = Instant::now();
                            quant_matmul(fmt, &x, &w, &mut y, m, k, n);
                            t.elapsed().as_secs_f64()
                        })
                        .collect::<Vec<_>>()
                });
                times.sort_by(f64::total_cmp);
                let (best, median) = (times[0], times[times.len() / 2]);
                println!(
                    "quant_matmul {fmt:?} {:?} m={m:3} k={k} n={n:5} threads={threads}: \
                     best {:8.1} µs ({:5.1} GB/s of weights, {:6.1} GMAC/s), median {:8.1} µs ({:5.1} GB/s)",
                    cpu::isa(),
                    best * 1e6,
                    bytes / best / 1e9,
                    (m * n * k) as f64 / best / 1e9,
                    median * 1e6,
                    bytes / median / 1e9
                );
            }
        }
    }
}

/// The wide tiles against the narrow ones (`wide_tiles`), timed interleaved in one process
/// on the shapes of Qwen2.5-0.5B's MLP (k=896 n=4864: gate and up; k=4864 n=896: down), from one
/// row (decoding) to 512 (a prompt), on each SIMD instruction set of this CPU: GMAC/s
/// (multiply-adds per second), best of the repeats.
#[test]
#[ignore]
fn bench_quant_matmul_tiles() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;
    let fmts = [
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q4_K,
        QuantFormat::Q6_K,
    ];
    println!("isa     format  k     n     m    threads  narrow GMAC/s  wide GMAC/s  wide/narrow");
    for isa in cpu::supported_isas()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
    {
        for fmt in fmts {
            for (k, n) in [(896, 4864), (4864, 896)] {
                if k % fmt.block_values() != 0 {
                    continue; // super-blocks of 256 need k = 4864 (19 of them)
                }
                let w = pack_rows(fmt, &random_weights(fmt, n, k, 71), k);
                for m in [1, 4, 8, 32, 128, 512] {
                    let x = activations(m, k, 72);
                    let mut y = vec![0.0; m * n];
                    for threads in [1, 2] {
                        let mut best = [f64::INFINITY; 2];
                        with_threads(threads, || {
                            quant_matmul_with(isa, fmt, &x, &w, &mut y, m, k, n); // warm-up
                            let t = Instant::now();
                            quant_matmul_with(isa, fmt, &x, &w, &mut y, m, k, n);
                            // ~0.15 s per variant, at least 3 repeats each, interleaved.
                            let reps =
                                ((0.075 / t.elapsed().as_secs_f64()) as usize).clamp(3, 2000);
                            for _ in 0..reps {
                                for (v, b) in best.iter_mut().enumerate() {
                                    NARROW_TILES.store(v == 0, Relaxed);
                                    let t = Instant::now();
                                    quant_matmul_with(isa, fmt, &x, &w, &mut y, m, k, n);
                                    *b = b.min(t.elapsed().as_secs_f64());
                                }
                            }
                            NARROW_TILES.store(false, Relaxed);
                        });
                        let gmacs = best.map(|b| (m * n * k) as f64 / b / 1e9);
                        println!(
                        "{:<7} {:<7} {k:<5} {n:<5} {m:<4} {threads:<8} {:>13.1}  {:>11.1}  {:>11.2}",
                        format!("{isa:?}"),
                        format!("{fmt:?}"),
                        gmacs[0],
                        gmacs[1],
                        gmacs[1] / gmacs[0]
                    );
                    }
                }
            }
        }
    }
}

/// The AVX2 tiles (up to 8 rows of `x` per weight group) against the narrow ones (4 rows),
/// interleaved in one process, on every type at the shapes of SmolLM2-135M (576 -> 1536,
/// 1536 -> 576) and Qwen2.5-0.5B's MLP (896 -> 4864, 4864 -> 896; the super-blocks only where `k`
/// is whole ones): GMAC/s, best of the repeats, on one thread (`FASTTX_BENCH_THREADS=1,2` for
/// more; `FASTTX_BENCH_FORMATS=Q4_0,Q4_K` to pick types).
///
/// `cargo test --release -p fasttx-core bench_quant_matmul_avx2_tiles -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_quant_matmul_avx2_tiles() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;
    if !cpu::supported(Isa::Avx2) {
        println!("bench_quant_matmul_avx2_tiles: this CPU has no AVX2");
        return;
    }
    let list = |var: &str, default: &str| -> Vec<String> {
        let v = std::env::var(var).unwrap_or_else(|_| default.to_string());
        v.split(',').map(|s| s.trim().to_string()).collect()
    };
    let threads_list: Vec<usize> = list("FASTTX_BENCH_THREADS", "1")
        .iter()
        .map(|t| t.parse().expect("FASTTX_BENCH_THREADS: numbers"))
        .collect();
    let picked = list("FASTTX_BENCH_FORMATS", "");
    let fmts = formats().filter(|f| picked == [""] || picked.iter().any(|p| p == f.name()));
    println!("format  k     n     m    threads  narrow GMAC/s  wide GMAC/s  wide/narrow");
    for fmt in fmts {
        for (k, n) in [(576, 1536), (1536, 576), (896, 4864), (4864, 896)] {
            if k % fmt.block_values() != 0 {
                continue;
            }
            let w = pack_rows(fmt, &random_weights(fmt, n, k, 71), k);
            for m in [1, 2, 4, 8, 32, 128] {
                let x = activations(m, k, 72);
                let mut y = vec![0.0; m * n];
                for &threads in &threads_list {
                    let mut best = [f64::INFINITY; 2];
                    with_threads(threads, || {
                        quant_matmul_with(Isa::Avx2, fmt, &x, &w, &mut y, m, k, n); // warm-up
                        let t = Instant::now();
                        quant_matmul_with(Isa::Avx2, fmt, &x, &w, &mut y, m, k, n);
                        // ~0.1 s per variant, at least 5 repeats each, interleaved.
                        let reps = ((0.05 / t.elapsed().as_secs_f64()) as usize).clamp(5, 2000);
                        for _ in 0..reps {
                            for (v, b) in best.iter_mut().enumerate() {
                                NARROW_TILES.store(v == 0, Relaxed);
                                let t = Instant::now();
                                quant_matmul_with(Isa::Avx2, fmt, &x, &w, &mut y, m, k, n);
                                *b = b.min(t.elapsed().as_secs_f64());
                            }
                        }
                        NARROW_TILES.store(false, Relaxed);
                    });
                    let gmacs = best.map(|b| (m * n * k) as f64 / b / 1e9);
                    println!(
                        "{:<7} {k:<5} {n:<5} {m:<4} {threads:<8} {:>13.1}  {:>11.1}  {:>11.2}",
                        fmt.name(),
                        gmacs[0],
                        gmacs[1],
                        gmacs[1] / gmacs[0]
                    );
                }
            }
        }
    }
}

/// Q8_0 (the storage of `dtype="int8"`) on AVX-512 with and without the next weight chunk fetched
/// into L2 (`Kernel::prefetch_l2`), timed interleaved in one process on the shapes of t5-small and
/// opus-mt-en-de (k = 512: the attention projections, the MLP's first matrix (2048), the output
/// projections (32128, 58101); k = 2048: the MLP's second), for the rows of beams and batches.
/// Each shape cycles through enough copies of its weights to fill 64 MB (`FASTTX_BENCH_MB`), so
/// that they come from memory as in a decoding step, whose weights exceed L3 (16: from L3; 0: one
/// copy, in L2 when small). Timed in this thread's CPU time (one thread: the machine is shared, and a preempted call
/// would count the other process's time); prints GMAC/s of the medians and of the best times.
/// `FASTTX_BENCH_N=58101` (say) keeps the shapes of that `n`.
/// `cargo test --release -p fasttx-core bench_quant_chunk_prefetch -- --ignored --nocapture --test-threads=1`
#[test]
#[ignore]
#[cfg(target_os = "linux")]
fn bench_quant_chunk_prefetch() {
    use std::sync::atomic::Ordering::Relaxed;
    let fmt = QuantFormat::Q8_0;
    if !cpu::supported(Isa::Avx512) {
        println!("bench_quant_chunk_prefetch: no AVX-512 on this CPU");
        return;
    }
    let cpu_s = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a pointer to a live timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    };
    let only_n: Option<Vec<usize>> = std::env::var("FASTTX_BENCH_N")
        .ok()
        .map(|v| v.split(',').map(|t| t.parse().unwrap()).collect());
    let total_mb: usize = std::env::var("FASTTX_BENCH_MB").map_or(64, |v| v.parse().unwrap());
    println!(
        "k     n      m    copies  GMAC/s median: without  with  with/without | best: without  with  with/without"
    );
    for (k, n) in [
        (512, 512),
        (512, 2048),
        (2048, 512),
        (512, 32128),
        (512, 58101),
    ] {
        if only_n.as_ref().is_some_and(|ns| !ns.contains(&n)) {
            continue;
        }
        let one = pack_rows(fmt, &random_weights(fmt, n, k, 81), k);
        let copies = (total_mb << 20).div_ceil(one.len()).max(1);
        let ws: Vec<Vec<u8>> = (0..copies).map(|_| one.clone()).collect();
        for m in [1, 2, 4, 8, 32] {
            let x = activations(m, k, 82);
            let mut y = vec![0.0; m * n];
            let mut times = [Vec::new(), Vec::new()];
            with_threads(1, || {
                let call = |c: usize, y: &mut [f32]| {
                    let t = cpu_s();
                    quant_matmul_with(Isa::Avx512, fmt, &x, &ws[c % copies], y, m, k, n);
                    cpu_s() - t
                };
                let first = call(0, &mut y); // also the warm-up
                                             // ~0.3 s per variant, at least 6 repeats each, interleaved.
                let reps = ((0.3 / first) as usize).clamp(6, 3000);
                for rep in 0..reps {
                    for (v, ts) in times.iter_mut().enumerate() {
                        NO_CHUNK_PREFETCH.store(v == 0, Relaxed);
                        ts.push(call(2 * rep + v, &mut y));
                    }
                }
                NO_CHUNK_PREFETCH.store(false, Relaxed);
            });
            let [median, best] = [0.5, 0.0].map(|q| {
                times.clone().map(|mut ts| {
                    ts.sort_by(f64::total_cmp);
                    (m * n * k) as f64 / ts[((ts.len() - 1) as f64 * q) as usize] / 1e9
                })
            });
            println!(
                "{k:<5} {n:<6} {m:<4} {copies:<7} {:>22.1} {:>5.1} {:>13.2} | {:>13.1} {:>5.1} {:>13.2}",
                median[0],
                median[1],
                median[1] / median[0],
                best[0],
                best[1],
                best[1] / best[0]
            );
        }
    }
}
