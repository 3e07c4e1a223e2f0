//! Elementwise activations, in place.
//!
//! Accuracy: the AVX2 paths evaluate `e^x` with a polynomial of about 1 ulp (max relative error
//! < 1.3e-7 against f64, see `exp_accuracy`) and write GELU-tanh as `u · sigmoid(2z)`, which is the
//! same function as `0.5·u·(1 + tanh z)` without its cancellation for negative `u`. The tests
//! check every path against f64 evaluations.

use super::cpu::{self, Isa};
use super::special;
#[cfg(target_arch = "x86_64")]
use super::x86_avx2;

/// `max(x, 0)`; NaN stays NaN (as in PyTorch). Simple enough that the compiler vectorises it.
pub fn relu(x: &mut [f32]) {
    for v in x {
        if *v < 0.0 {
            *v = 0.0;
        }
    }
}

/// The tanh approximation of GELU (`gelu_new` / `gelu_pytorch_tanh` in transformers).
pub fn gelu_tanh(x: &mut [f32]) {
    gelu_tanh_with(cpu::isa(), x)
}

/// `x * sigmoid(x)`.
pub fn silu(x: &mut [f32]) {
    silu_with(cpu::isa(), x)
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))` (`gelu` in transformers), evaluated in f64 as
/// `0.5·x·erfc(-x/√2)` so that it stays accurate (relatively) for negative `x` too.
/// Scalar only: about 4× the cost of [`gelu_tanh`]'s scalar path.
pub fn gelu_erf(x: &mut [f32]) {
    for v in x {
        let u = *v as f64;
        *v = (0.5 * u * special::erfc(-u * std::f64::consts::FRAC_1_SQRT_2)) as f32;
    }
}

/// [`gelu_tanh`] on an explicit instruction set. Panics if the CPU cannot run it.
pub(crate) fn gelu_tanh_with(isa: Isa, x: &mut [f32]) {
    assert!(cpu::supported(isa), "{isa:?} is not supported on this CPU");
    match isa {
        // SAFETY: AVX2+FMA are present (checked above; AVX-512 implies them).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => unsafe { x86_avx2::gelu_tanh(x) },
        _ => gelu_tanh_scalar(x),
    }
}

/// [`silu`] on an explicit instruction set. Panics if the CPU cannot run it.
pub(crate) fn silu_with(isa: Isa, x: &mut [f32]) {
    assert!(cpu::supported(isa), "{isa:?} is not supported on this CPU");
    match isa {
        // SAFETY: AVX2+FMA are present (checked above; AVX-512 implies them).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => unsafe { x86_avx2::silu(x) },
        _ => silu_scalar(x),
    }
}

/// Scalar reference (and the portable path): the transformers formula with `std`'s tanh.
pub fn gelu_tanh_scalar(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    for v in x {
        let u = *v;
        *v = 0.5 * u * (1.0 + (C * (u + 0.044715 * u * u * u)).tanh());
    }
}

/// Scalar reference (and the portable path).
pub fn silu_scalar(x: &mut [f32]) {
    for v in x {
        *v /= 1.0 + (-*v).exp();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::report_skipped;

    /// Inputs covering the interesting range densely, plus the extremes.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (-400_000..=400_000).map(|i| i as f32 * 5e-5).collect();
        v.extend([
            -100.0, -50.0, -30.0, 30.0, 50.0, 100.0, 1e-30, -1e-30, 0.0, -0.0,
        ]);
        v
    }

    /// Max of `|got - want| / |want|` over outputs with `|want| >= 0.1`, and max of
    /// `|got - want| / (|want| + floor(u))` over all.
    fn errors(x: &[f32], got: &[f32], want: &[f64], floor: impl Fn(f64) -> f64) -> (f64, f64) {
        let (mut big, mut all) = (0.0f64, 0.0f64);
        for ((&u, &g), &w) in x.iter().zip(got).zip(want) {
            let e = (g as f64 - w).abs();
            if w.abs() >= 0.1 {
                big = big.max(e / w.abs());
            }
            let r = e / (w.abs() + floor(u as f64));
            all = all.max(r);
        }
        (big, all)
    }

    fn gelu_tanh_f64(u: f64) -> f64 {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        0.5 * u * (1.0 + (c * (u + 0.044715 * u * u * u)).tanh())
    }

    fn silu_f64(u: f64) -> f64 {
        u / (1.0 + (-u).exp())
    }

    #[test]
    fn gelu_tanh_and_silu_accuracy() {
        report_skipped();
        let x = inputs();
        for isa in cpu::supported_isas() {
            type Case = (&'static str, fn(Isa, &mut [f32]), fn(f64) -> f64);
            let cases: [Case; 2] = [
                ("gelu_tanh", gelu_tanh_with, gelu_tanh_f64),
                ("silu", silu_with, silu_f64),
            ];
            for (name, f, exact) in cases {
                let want: Vec<f64> = x.iter().map(|&u| exact(u as f64)).collect();
                let mut got = x.clone();
                f(isa, &mut got);
                // Where outputs are tiny (very negative inputs) relative error stops meaning much.
                // The scalar path's `1 + tanh` cancels there: it is only good to ~1e-7·|u|
                // absolute. The SIMD path stays relatively accurate but inherits the f32 rounding
                // of z in e^(2z), amplified by |2z| (up to ~4e-6 relative on outputs < 1e-3).
                let simd = matches!(isa, Isa::Avx2 | Isa::Avx512);
                let floor = |u: f64| if simd { 1e-8 } else { 1.2e-7 * u.abs() };
                let (big, all) = errors(&x, &got, &want, floor);
                println!("{name} {isa:?}: max relative error {big:.3e} where |y| >= 0.1, {all:.3e} with floor");
                let (max_big, max_all) = if simd { (4e-7, 4e-6) } else { (6e-7, 1.0) };
                assert!(
                    big < max_big && all < max_all,
                    "{name} {isa:?}: {big:e} {all:e}"
                );
                for (&u, &g) in x.iter().zip(&got) {
                    if u >= 20.0 {
                        assert_eq!(g, u, "{name}({u})");
                    }
                }
            }
            let mut special = [f32::NAN, f32::INFINITY];
            gelu_tanh_with(isa, &mut special);
            assert!(
                special[0].is_nan() && special[1] == f32::INFINITY,
                "{special:?}"
            );
            let mut special = [f32::NAN, f32::INFINITY];
            silu_with(isa, &mut special);
            assert!(
                special[0].is_nan() && special[1] == f32::INFINITY,
                "{special:?}"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_accuracy() {
        if !cpu::supported(Isa::Avx2) {
            println!("skipping the AVX2 exp: not supported by this CPU");
            return;
        }
        // Every 97th float from -104 to 89 (about 20 million values).
        let mut x = Vec::new();
        let mut bits = (-104.0f32).to_bits();
        let stop = (-0.0f32).to_bits();
        while bits > stop {
            x.push(f32::from_bits(bits));
            bits -= 97;
        }
        let mut bits = 0.0f32.to_bits();
        while f32::from_bits(bits) <= 89.0 {
            x.push(f32::from_bits(bits));
            bits += 97;
        }
        let mut got = x.clone();
        // SAFETY: AVX2+FMA checked above.
        unsafe { x86_avx2::exp_slice(&mut got) };
        let mut worst = (0.0f64, 0.0f32);
        for (&v, &g) in x.iter().zip(&got) {
            let want = (v as f64).exp();
            if want > f32::MAX as f64 {
                assert_eq!(g, f32::INFINITY, "exp({v})");
            } else if want >= f32::MIN_POSITIVE as f64 {
                let err = (g as f64 - want).abs() / want;
                if err > worst.0 {
                    worst = (err, v);
                }
            } else {
                // Subnormal results: within one subnormal step.
                assert!(
                    (g as f64 - want).abs() <= 1.5e-45,
                    "exp({v}) = {g:e}, want {want:e}"
                );
            }
        }
        println!(
            "AVX2 exp: max relative error {:.3e} at x = {}",
            worst.0, worst.1
        );
        assert!(
            worst.0 < 1.3e-7,
            "max relative error {:e} at {}",
            worst.0,
            worst.1
        );
        let mut special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            1.0,
            0.0,
            0.0,
            0.0,
        ];
        // SAFETY: AVX2+FMA checked above.
        unsafe { x86_avx2::exp_slice(&mut special) };
        assert!(special[0].is_nan());
        assert_eq!(special[1..4], [f32::INFINITY, 0.0, 1.0]);
        assert!(
            (special[4] - std::f32::consts::E).abs() <= 2.5e-7,
            "{}",
            special[4]
        );
    }

    #[test]
    fn gelu_erf_known_values() {
        // x·Φ(x) from mpmath at 40 digits.
        #[allow(clippy::excessive_precision)]
        let cases: [(f32, f64); 8] = [
            (-10.0, -7.619_853_024_160_526e-23),
            (-5.0, -1.433_257_859_395_969_6e-6),
            (-1.0, -0.158_655_253_931_457_05),
            (-0.5, -0.154_268_769_362_993_45),
            (0.0, 0.0),
            (0.5, 0.345_731_230_637_006_55),
            (1.0, 0.841_344_746_068_542_95),
            (3.0, 2.995_950_305_905_109_7),
        ];
        let mut x: Vec<f32> = cases.iter().map(|c| c.0).collect();
        gelu_erf(&mut x);
        for (&g, &(u, want)) in x.iter().zip(&cases) {
            assert_eq!(g, want as f32, "gelu_erf({u})");
        }
        let mut x = [f32::NAN, f32::INFINITY, 40.0, -40.0];
        gelu_erf(&mut x);
        assert!(x[0].is_nan());
        assert_eq!(x[1..], [f32::INFINITY, 40.0, -0.0]);
    }

    #[test]
    fn relu_keeps_nan() {
        let mut x = [-1.0, 0.0, 2.5, f32::NAN, f32::NEG_INFINITY];
        relu(&mut x);
        assert_eq!(x[..3], [0.0, 0.0, 2.5]);
        assert!(x[3].is_nan());
        assert_eq!(x[4], 0.0);
    }
}
