//! Runtime CPU feature detection, done once. `FASTTX_ISA=scalar|avx2|avx512|neon` forces a lower
//! path (for tests and for comparing paths); asking for a path the CPU lacks falls back to detection.
//!
//! Nothing is compiled with `target-cpu=native`: the SIMD paths are `#[target_feature]` functions
//! chosen here at run time, so one binary runs on every x86_64 (or aarch64) machine.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust (whatever the compiler vectorises on its own).
    Scalar,
    /// aarch64 Advanced SIMD: the quantized products have a NEON kernel; the other kernels use
    /// their portable code (which the compiler vectorises for NEON).
    Neon,
    /// x86_64 AVX2 + FMA.
    Avx2,
    /// x86_64 AVX-512F (on top of AVX2 + FMA). Kernels without an AVX-512 variant use AVX2.
    Avx512,
}

impl Isa {
    /// The name `FASTTX_ISA` takes for this path.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// The path the kernels take: the detected one, or a lower one forced by `FASTTX_ISA`.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let detected = detected();
        match std::env::var("FASTTX_ISA").ok().as_deref() {
            Some("scalar") => Isa::Scalar,
            Some("avx2") if detected >= Isa::Avx2 => Isa::Avx2,
            Some("avx512") if detected >= Isa::Avx512 => Isa::Avx512,
            Some("neon") if detected == Isa::Neon => Isa::Neon,
            _ => detected,
        }
    })
}

/// The best path this CPU supports, ignoring `FASTTX_ISA`.
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

/// Whether this CPU can run `isa`'s code. The SIMD entry points that take an explicit [`Isa`]
/// (used by tests and benchmarks) check this so that they stay safe to call.
pub fn supported(isa: Isa) -> bool {
    match isa {
        Isa::Scalar => true,
        Isa::Neon => detected() == Isa::Neon,
        Isa::Avx2 | Isa::Avx512 => detected() >= isa,
    }
}

/// Every path this CPU can run, lowest first (what the tests iterate over).
pub fn supported_isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&i| supported(i))
        .collect()
}

#[allow(unreachable_code)]
fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        // The AVX-512 kernels fall back to AVX2 helpers for their edges, so require both.
        if avx2 && is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if avx2 {
            return Isa::Avx2;
        }
        return Isa::Scalar;
    }
    #[cfg(target_arch = "aarch64")]
    {
        return Isa::Neon;
    }
    Isa::Scalar
}
