//! Helpers shared by the kernel tests.

use super::cpu::{self, Isa};

/// `len` deterministic pseudo-random values in [-1, 1) (a fixed LCG: no dependency, same data on
/// every machine).
pub fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Runs `f` inside a fresh rayon pool of `threads` threads.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// `|got - want| <= rel · scale + 1e-30` elementwise, where `scale` is the size of the terms that
/// were summed (e.g. Σ|x·w|): the error bound of a reordered float sum. NaN/inf must match exactly.
pub fn assert_close_to_ref(got: &[f32], want: &[f32], scale: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        if !w.is_finite() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{what}: [{i}] got {g}, want {w}"
            );
            continue;
        }
        let tol = rel * s.abs() + 1e-30;
        assert!(
            (g - w).abs() <= tol,
            "{what}: [{i}] got {g}, want {w} (diff {}, tol {tol})",
            (g - w).abs()
        );
    }
}

/// Elementwise relative closeness `|got - want| <= rel · |want| + abs`.
pub fn assert_close(got: &[f32], want: &[f32], rel: f32, abs: f32, what: &str) {
    let scale: Vec<f32> = want.iter().map(|w| w.abs() + abs / rel).collect();
    assert_close_to_ref(got, want, &scale, rel, what);
}

/// Says which of this architecture's instruction sets the tests cannot exercise on this CPU.
pub fn report_skipped() {
    let isas: &[Isa] = if cfg!(target_arch = "x86_64") {
        &[Isa::Avx2, Isa::Avx512]
    } else if cfg!(target_arch = "aarch64") {
        &[Isa::Neon]
    } else {
        &[]
    };
    for &isa in isas {
        if !cpu::supported(isa) {
            println!("skipping {isa:?} paths: not supported by this CPU");
        }
    }
}
