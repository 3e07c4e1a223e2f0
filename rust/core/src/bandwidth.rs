//! Machine probes for the benchmarks. A memory read-bandwidth probe: batch-1 decoding streams every
//! weight once per token, so tokens/s × bytes per token ÷ this bandwidth says how close a runtime
//! is to what the machine allows. And a timing of the f32 matrix product itself
//! ([`matmul_rate`]), which `fasttx bench gemm` sets against the machine's sgemm peak (prefill and
//! batches are bound by arithmetic, not by memory).

use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::matmul::matmul_nt;
use crate::kernels::vector;
use crate::threading::build_pool;

/// Best-of-`repeats` read bandwidth in GB/s (1e9 bytes per second) of a `bytes` buffer (rounded
/// to f32s), read in parallel by `threads` threads. The buffer should exceed the last-level cache.
pub fn read_bandwidth(threads: usize, bytes: usize, repeats: usize) -> Result<f64> {
    let n = bytes / 4;
    if n < 1 << 16 || repeats == 0 {
        return Err(Error::InvalidInput(format!(
            "bandwidth probe: need at least 256 KiB and one repeat, got {bytes} bytes x {repeats}"
        )));
    }
    let pool = build_pool(threads)?;
    let mut data = crate::memory::weight_buffer(n);
    // Touch every page (and give the reads something to sum).
    data.par_iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i % 7) as f32);
    let chunk = 1 << 14;
    let best = pool.install(|| {
        (0..repeats + 1)
            .map(|_| {
                let t = Instant::now();
                let s: f32 = data
                    .par_chunks(chunk)
                    // dot(c, c): the second operand is the same cache lines, so each byte of the
                    // buffer crosses the memory bus once.
                    .map(|c| vector::dot(c, c))
                    .sum();
                std::hint::black_box(s);
                t.elapsed().as_secs_f64()
            })
            .skip(1) // warm-up
            .fold(f64::INFINITY, f64::min)
    });
    Ok((n * 4) as f64 / best / 1e9)
}

/// Most elements (x, w and y together) a [`matmul_rate`] timing allocates: 1 GiB of f32.
const RATE_MAX_ELEMENTS: usize = 1 << 28;

/// Timings in seconds of `repeats` runs (after one warm-up) of [`matmul_nt`] on an `[m, k]` ×
/// `[n, k]` product of fixed pseudo-random data in a pool of `threads` threads: `(best, median)`.
pub fn matmul_rate(
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
    repeats: usize,
) -> Result<(f64, f64)> {
    let elements = (|| {
        m.checked_mul(k)?
            .checked_add(n.checked_mul(k)?)?
            .checked_add(m.checked_mul(n)?)
    })();
    if m == 0 || k == 0 || n == 0 || repeats == 0 {
        return Err(Error::InvalidInput(format!(
            "matmul rate: m, k, n and repeats must be at least 1, got m={m} k={k} n={n} repeats={repeats}"
        )));
    }
    if elements.is_none_or(|e| e > RATE_MAX_ELEMENTS) {
        return Err(Error::InvalidInput(format!(
            "matmul rate: m={m} k={k} n={n} needs more than {RATE_MAX_ELEMENTS} f32 elements"
        )));
    }
    let pool = build_pool(threads)?;
    // A fixed xorshift sequence in [-1, 1): no zeros or denormals to flatter the timing.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut fill = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    };
    let (x, w) = (fill(m * k), fill(n * k));
    let mut y = vec![0.0f32; m * n];
    let mut times: Vec<f64> = pool.install(|| {
        (0..repeats + 1)
            .map(|_| {
                let t = Instant::now();
                matmul_nt(&x, &w, &mut y, m, k, n);
                std::hint::black_box(&mut y);
                t.elapsed().as_secs_f64()
            })
            .skip(1) // warm-up
            .collect()
    });
    times.sort_by(f64::total_cmp);
    Ok((times[0], times[times.len() / 2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_a_positive_rate_and_rejects_tiny_buffers() {
        let gbs = read_bandwidth(2, 8 << 20, 2).unwrap();
        assert!(gbs.is_finite() && gbs > 0.1, "{gbs}");
        assert!(read_bandwidth(1, 1024, 1).is_err());
        assert!(read_bandwidth(0, 8 << 20, 1).is_err());
    }

    #[test]
    fn matmul_rate_times_a_product_and_rejects_bad_sizes() {
        let (best, median) = matmul_rate(8, 64, 48, 2, 3).unwrap();
        assert!(best > 0.0 && best <= median && median.is_finite());
        assert!(matmul_rate(0, 64, 48, 1, 3).is_err());
        assert!(matmul_rate(8, 64, 48, 1, 0).is_err());
        assert!(matmul_rate(8, 64, 48, 0, 1).is_err());
        assert!(matmul_rate(1 << 20, 1 << 20, 1, 1, 1).is_err());
        assert!(matmul_rate(usize::MAX, 2, 1, 1, 1).is_err());
    }
}
