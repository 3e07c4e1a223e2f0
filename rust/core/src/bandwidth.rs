//! A memory read-bandwidth probe, for the benchmarks: batch-1 decoding streams every weight once
//! per token, so tokens/s × bytes per token ÷ this bandwidth says how close a runtime is to what
//! the machine allows.

use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
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
}
