//! The int8 kernels (`int8.rs`'s arithmetic) against their portable reference, bit for bit, and
//! against the exact product of the quantized values.

use super::activations::Activations;
use super::*;
use crate::kernels::testutil::{random, report_skipped, with_threads};

/// `n` int8 rows of `k` values (random, a few outliers as real weights have), packed.
fn int8_weights(n: usize, k: usize, seed: u64) -> Vec<u8> {
    let mut w = random(n * k, seed);
    for (i, v) in w.iter_mut().enumerate() {
        if i % 131 == 7 {
            *v *= 12.0;
        }
    }
    pack_rows(
        int8::FORMAT,
        &quantize_rows_int8(&w, n, k),
        int8::padded_cols(k),
    )
}

/// Rows of different magnitudes with outliers, like hidden states.
fn hidden_states(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut x = random(m * k, seed);
    for (i, row) in x.chunks_mut(k.max(1)).enumerate() {
        for (p, v) in row.iter_mut().enumerate() {
            *v *= (0.5 + i as f32) * if p % 97 == 5 { 8.0 } else { 1.0 };
        }
    }
    x
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

fn scalar(x: &[f32], w: &[u8], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; m * n];
    int8_matmul_scalar(x, w, None, &mut y, m, k, n);
    y
}

/// Every instruction set, thread count, tile edge (rows of `x` 1..=17, odd weight rows), short
/// last group and ragged `k` gives the portable reference's bits.
#[test]
fn int8_matmul_matches_scalar_bitwise() {
    report_skipped();
    for &k in &[1usize, 32, 48, 200, 256, 288, 512, 544, 1536] {
        for &n in &[1usize, 2, 3, 7, 33] {
            let w = int8_weights(n, k, (k * 31 + n) as u64);
            for m in (1..=10).chain([16, 17]) {
                let x = hidden_states(m, k, (m * 7 + k) as u64);
                let want = scalar(&x, &w, m, k, n);
                for isa in cpu::supported_isas() {
                    for threads in [1, 2] {
                        let mut got = vec![f32::NAN; m * n];
                        with_threads(threads, || {
                            int8_matmul_with(isa, &x, &w, None, &mut got, m, k, n)
                        });
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "{isa:?} m {m} k {k} n {n} threads {threads}"
                        );
                    }
                }
            }
        }
    }
}

/// Large products (parallel tasks, weight chunks, blocks of `x` rows) give the reference's bits.
#[test]
fn int8_prefill_shape_matches_scalar_bitwise() {
    let (m, k, n) = (70, 512, 600);
    let w = int8_weights(n, k, 5);
    let x = hidden_states(m, k, 6);
    let want = scalar(&x, &w, m, k, n);
    for isa in cpu::supported_isas() {
        let mut got = vec![f32::NAN; m * n];
        with_threads(2, || int8_matmul_with(isa, &x, &w, None, &mut got, m, k, n));
        assert_eq!(bits(&got), bits(&want), "{isa:?}");
    }
}

/// The reference itself: the product of the quantized weights and activations (their exact
/// values, summed in `f64`), up to `f32` rounding of the sums.
#[test]
fn int8_product_is_that_of_the_quantized_values() {
    for &(m, k, n) in &[(3usize, 544usize, 5usize), (2, 48, 3), (1, 2048, 4)] {
        let w = int8_weights(n, k, 11);
        let x = hidden_states(m, k, 12);
        let got = scalar(&x, &w, m, k, n);
        let kp = int8::padded_cols(k);
        let mut wf = vec![0.0f32; n * kp];
        let rb = int8::FORMAT.packed_row_bytes(kp);
        for (j, row) in wf.chunks_exact_mut(kp).enumerate() {
            dequantize_packed(int8::FORMAT, &w[j * rb..(j + 1) * rb], row);
        }
        let mut act = Activations::default();
        act.quantize_lanes(Kernel::Portable, &x, m, k, false);
        // Value `p`'s lane set: its block's lane.
        let set = |p: usize| (p / QK) % LANES;
        for i in 0..m {
            let xr = act.row(i);
            for j in 0..n {
                let (mut exact, mut size) = (0.0f64, 0.0f64);
                for p in 0..kp {
                    let xv = xr.value(p) as f64 * xr.lane_d[set(p)] as f64;
                    exact += wf[j * kp + p] as f64 * xv;
                    size += (wf[j * kp + p] as f64 * xv).abs();
                }
                let err = (got[i * n + j] as f64 - exact).abs();
                assert!(
                    err <= 1e-6 * size,
                    "m {m} k {k} n {n} ({i}, {j}): {} vs {exact}",
                    got[i * n + j]
                );
            }
        }
    }
}

/// A weight row holding a non-finite value, or a row of `x` holding one, gives NaN outputs, as an
/// `f32` product would; the other outputs stay finite.
#[test]
fn int8_non_finite_rows_give_nan() {
    let (m, k, n) = (9, 96, 5);
    let mut wf = random(n * k, 21);
    wf[2 * k + 17] = f32::INFINITY;
    let w = pack_rows(
        int8::FORMAT,
        &quantize_rows_int8(&wf, n, k),
        int8::padded_cols(k),
    );
    let mut x = hidden_states(m, k, 22);
    x[4 * k + 50] = f32::NAN;
    for isa in cpu::supported_isas() {
        let mut y = vec![0.0; m * n];
        int8_matmul_with(isa, &x, &w, None, &mut y, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let v = y[i * n + j];
                assert_eq!(v.is_nan(), i == 4 || j == 2, "{isa:?} ({i}, {j}): {v}");
            }
        }
    }
}

/// `cargo test --release -p fasttx-core bench_vpdpbusd_rate -- --ignored --nocapture`: how many
/// 512-bit `vpdpbusd` this core retires per ns from 16 independent chains (no loads): the
/// instruction's rate, the ceiling of the int8 and Q8_0 tiles (BENCHMARKS.md, seventh session).
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore]
fn bench_vpdpbusd_rate() {
    use std::arch::x86_64::*;
    use std::time::Instant;

    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn chains(n: usize) -> i32 {
        let (w, x) = (_mm512_set1_epi8(3), _mm512_set1_epi8(5));
        let mut acc = [_mm512_setzero_si512(); 16];
        for _ in 0..n {
            // Opaque once per round, so that the chains are not folded into fewer.
            let x = std::hint::black_box(x);
            for a in acc.iter_mut() {
                *a = _mm512_dpbusd_epi32(*a, w, x);
            }
        }
        acc.iter().map(|a| _mm512_reduce_add_epi32(*a)).sum()
    }
    if !is_x86_feature_detected!("avx512vnni") {
        println!("no AVX-512 VNNI on this CPU");
        return;
    }
    let n = 20_000_000;
    // SAFETY: the CPU has AVX-512F and VNNI (checked above).
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(unsafe { chains(n) });
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "vpdpbusd (512-bit): {:.2} per ns",
        (16 * n) as f64 / best / 1e9
    );
}

/// `cargo test --release -p fasttx-core bench_int8_matmul -- --ignored --nocapture`: the int8
/// kernel against the Q8_0 kernel on the same bytes, one thread, Marian's shapes (the head and
/// the feed-forward at batch 32, the encoder's 1024 rows, the head of beam 4, one decoding row;
/// `BENCH_SHAPE=m,k,n` for another).
#[test]
#[ignore]
fn bench_int8_matmul() {
    use std::time::Instant;
    let shapes: Vec<(usize, usize, usize)> = match std::env::var("BENCH_SHAPE") {
        Ok(s) => {
            let v: Vec<usize> = s.split(',').map(|t| t.parse().unwrap()).collect();
            vec![(v[0], v[1], v[2])]
        }
        Err(_) => vec![
            (32, 512, 58101),
            (32, 512, 2048),
            (32, 2048, 512),
            (1024, 512, 2048),
            (4, 512, 58101),
            (1, 512, 2048),
        ],
    };
    for &(m, k, n) in &shapes {
        let w = int8_weights(n, k, 1);
        let x = hidden_states(m, k, 2);
        let mut y = vec![0.0; m * n];
        let reps = (2e9 / (m * n * k) as f64).ceil() as usize;
        let time = |f: &mut dyn FnMut()| {
            f();
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            best
        };
        let isa = cpu::isa();
        let (q8, i8, i8_np) = with_threads(1, || {
            let q8 =
                time(&mut || quant_matmul_with(isa, QuantFormat::Q8_0, &x, &w, &mut y, m, k, n));
            let i8 = time(&mut || int8_matmul_with(isa, &x, &w, None, &mut y, m, k, n));
            NO_CHUNK_PREFETCH.store(true, std::sync::atomic::Ordering::Relaxed);
            let i8_np = time(&mut || int8_matmul_with(isa, &x, &w, None, &mut y, m, k, n));
            NO_CHUNK_PREFETCH.store(false, std::sync::atomic::Ordering::Relaxed);
            (q8, i8, i8_np)
        });
        let gmac = |s: f64| (m * n * k) as f64 / s / 1e9;
        println!(
            "m {m:4} k {k:5} n {n:5}: Q8_0 {:.1} GMAC/s, int8 {:.1} GMAC/s ({:.2}x), int8 without the chunk prefetch {:.1}",
            gmac(q8),
            gmac(i8),
            q8 / i8,
            gmac(i8_np)
        );
    }
}

/// Quantizing by lane sets: each value within half a step of its set's scale, which is
/// `max|x| / 127` over exactly the values of the set (every 8th block); the offsets are `-128·Σq`
/// per set; the padding past the row (to whole groups) is zero.
#[test]
fn lane_sets_have_one_scale_each() {
    for &k in &[1usize, 40, 256, 300, 1024] {
        let x = hidden_states(2, k, k as u64);
        let mut act = Activations::default();
        act.quantize_lanes(Kernel::Portable, &x, 2, k, false);
        let set = |p: usize| (p / QK) % LANES;
        for i in 0..2 {
            let xr = act.row(i);
            let row = &x[i * k..(i + 1) * k];
            let mut amax = [0.0f32; LANES];
            let mut sums = [0i32; LANES];
            for (p, v) in row.iter().enumerate() {
                amax[set(p)] = amax[set(p)].max(v.abs());
            }
            for p in 0..xr.qs.len() {
                let q = xr.value(p);
                if p >= k {
                    assert_eq!(q, 0, "padding at {p}");
                    continue;
                }
                sums[set(p)] += q as i32;
                let d = xr.lane_d[set(p)];
                assert!(
                    (q as f32 * d - row[p]).abs() <= d / 2.0 * 1.0001,
                    "k {k} p {p}"
                );
            }
            for j in 0..LANES {
                assert_eq!(xr.lane_d[j], amax[j] / 127.0, "k {k} set {j}");
                assert_eq!(xr.lane_offsets[j], -128 * sums[j], "k {k} set {j}");
            }
        }
    }
}

/// Every instruction set's lane quantization gives the portable one's bytes, scales and offsets:
/// ragged rows, all-zero sets, non-finite values, subnormal scales.
#[test]
fn lane_quantization_is_the_same_on_every_isa() {
    for &k in &[1usize, 31, 40, 256, 300, 1024, 2080] {
        let m = 5;
        let mut x = hidden_states(m, k, 3 * k as u64);
        // Row 1: all zero; row 2: a NaN and an infinity; row 3: subnormal values.
        x[k..2 * k].fill(0.0);
        x[2 * k + k / 2] = f32::NAN;
        x[3 * k - 1] = f32::NEG_INFINITY;
        for v in &mut x[3 * k..4 * k] {
            *v *= 1e-42;
        }
        let mut want = Activations::default();
        want.quantize_lanes(Kernel::Portable, &x, m, k, false);
        for isa in cpu::supported_isas() {
            let mut got = Activations::default();
            got.quantize_lanes(Kernel::for_isa(isa), &x, m, k, false);
            for i in 0..m {
                let (a, b) = (got.row(i), want.row(i));
                assert_eq!(a.qs, b.qs, "{isa:?} k {k} row {i}");
                assert_eq!(bits(a.lane_d), bits(b.lane_d), "{isa:?} k {k} row {i}");
                assert_eq!(a.lane_offsets, b.lane_offsets, "{isa:?} k {k} row {i}");
            }
        }
    }
}

/// A bias goes onto every output after its product: the bits of the product without it, plus
/// the bias; zero-width inputs (`k = 0`) give the bias alone.
#[test]
fn int8_bias_is_added_to_each_output() {
    for &(m, k, n) in &[(17usize, 544usize, 37usize), (3, 0, 5), (40, 256, 300)] {
        let w = if k == 0 {
            Vec::new()
        } else {
            int8_weights(n, k, 31)
        };
        let x = hidden_states(m, k, 32);
        let bias = random(n, 33);
        let plain = scalar(&x, &w, m, k, n);
        for isa in cpu::supported_isas() {
            let mut got = vec![f32::NAN; m * n];
            with_threads(2, || {
                int8_matmul_with(isa, &x, &w, Some(&bias), &mut got, m, k, n)
            });
            let want: Vec<f32> = (0..m * n).map(|i| plain[i] + bias[i % n]).collect();
            assert_eq!(bits(&got), bits(&want), "{isa:?} m {m} k {k} n {n}");
        }
    }
}

// --- The AVX2 and NEON kernels (`int8_avx2.rs`, `int8_neon.rs`): their own edge cases. ---

/// Every weight and activation at `|q| = 127` with equal signs: the largest `maddubs` pairs
/// (`2·127·127`, AVX2) and `i16` pairs of products (NEON without `sdot`) the kernels add, and the
/// largest `i32` sums over long rows, give the reference's bits (and the exact product).
#[test]
fn int8_full_scale_values_match_scalar_bitwise() {
    for &(k, n) in &[(64usize, 3usize), (4096 + 96, 5)] {
        // Rows of ±1 (one sign per row, or signs alternating every 4 values), and rows of `x`
        // the same: every quantized value is ±127.
        let sign = |row: usize, p: usize| match row % 3 {
            0 => 1.0,
            1 => -1.0,
            _ => {
                if (p / 4).is_multiple_of(2) {
                    1.0
                } else {
                    -1.0
                }
            }
        };
        let wf: Vec<f32> = (0..n * k).map(|i| sign(i / k, i % k)).collect();
        let w = pack_rows(
            int8::FORMAT,
            &quantize_rows_int8(&wf, n, k),
            int8::padded_cols(k),
        );
        for m in 1..=5 {
            let x: Vec<f32> = (0..m * k).map(|i| sign(i / k + 1, i % k)).collect();
            let want = scalar(&x, &w, m, k, n);
            for (i, row) in want.chunks(n).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    let exact: f32 = (0..k).map(|p| sign(i + 1, p) * sign(j, p)).sum();
                    // The weights' f16 scale is 1/127 rounded up: within 2^-10 of it.
                    assert!(
                        (v - exact).abs() <= 2e-3 * k as f32,
                        "({i}, {j}): {v} vs {exact}"
                    );
                }
            }
            for isa in cpu::supported_isas() {
                let mut got = vec![f32::NAN; m * n];
                int8_matmul_with(isa, &x, &w, None, &mut got, m, k, n);
                assert_eq!(bits(&got), bits(&want), "{isa:?} m {m} k {k} n {n}");
            }
        }
    }
}

/// `cargo test --release -p fasttx-core bench_int8_avx2 -- --ignored --nocapture`: on AVX2, one
/// thread, interleaved: the Q8_0 kernel, and the int8 kernel with one weight row per tile
/// (narrow) and with two (wide), on the same bytes. `BENCH_SHAPE=m,k,n` for one shape.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore]
fn bench_int8_avx2_tiles() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;
    if !cpu::supported(cpu::Isa::Avx2) {
        return;
    }
    let shapes: Vec<(usize, usize, usize)> = match std::env::var("BENCH_SHAPE") {
        Ok(s) => {
            let v: Vec<usize> = s.split(',').map(|t| t.parse().unwrap()).collect();
            vec![(v[0], v[1], v[2])]
        }
        Err(_) => vec![
            (32, 512, 8192),
            (32, 2048, 512),
            (8, 512, 2048),
            (4, 576, 1536),
            (1, 512, 8192),
        ],
    };
    let isa = cpu::Isa::Avx2;
    for &(m, k, n) in &shapes {
        let w = int8_weights(n, k, 1);
        let x = hidden_states(m, k, 2);
        let mut y = vec![0.0; m * n];
        let reps = ((3e8 / (m * n * k) as f64).ceil() as usize).max(3);
        let mut best = [f64::MAX; 3];
        with_threads(1, || {
            for _ in 0..reps {
                for (v, b) in best.iter_mut().enumerate() {
                    NARROW_TILES.store(v == 1, Relaxed);
                    let t = Instant::now();
                    if v == 0 {
                        quant_matmul_with(isa, QuantFormat::Q8_0, &x, &w, &mut y, m, k, n);
                    } else {
                        int8_matmul_with(isa, &x, &w, None, &mut y, m, k, n);
                    }
                    *b = b.min(t.elapsed().as_secs_f64());
                }
            }
            NARROW_TILES.store(false, Relaxed);
        });
        let g = best.map(|b| (m * n * k) as f64 / b / 1e9);
        println!(
            "m {m:3} k {k:5} n {n:5}: Q8_0 {:.1}, int8 narrow {:.1} ({:.2}x), wide {:.1} ({:.2}x) GMAC/s",
            g[0],
            g[1],
            g[1] / g[0],
            g[2],
            g[2] / g[0]
        );
    }
}
