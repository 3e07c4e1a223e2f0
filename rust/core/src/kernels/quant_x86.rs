//! AVX2 dot products for [`super`] (x86_64 only): quantized weight rows against 1..=4 rows of
//! 8-bit activations, in exactly the arithmetic of `super::dot_portable`.
//!
//! Per block, `maddubs` multiplies unsigned weight bytes by signed activation bytes and adds
//! adjacent pairs into `i16`; `madd` with ones adds those pairs into 8 `i32` lanes (lane `l` =
//! elements `4l..4l+4`). Signed weights (Q4_0 after `- 8`, Q8_0) go in as `|w|` with the sign
//! moved onto `x` (`sign_epi8`), as llama.cpp does. No step saturates: the largest pair sum is
//! `2·128·127 = 32512` (a Q8_0 weight of -128; activations stay within ±127).
//!
//! # Safety
//! Everything here is compiled with `#[target_feature(enable = "avx2,fma,f16c")]`; callers must
//! have checked [`available`].

use std::arch::x86_64::*;

use super::{QuantFormat, XRow, LANES, QK};

/// Whether this CPU can run this file's code.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

// `QuantFormat` as const-generic parameters (enums cannot be).
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

const fn block_bytes(f: u8) -> usize {
    match f {
        Q4_0 => 2 + QK / 2,
        Q4_1 => 4 + QK / 2,
        _ => 2 + QK,
    }
}

/// `out[r] = w · xs[r]` for the whole blocks of `w` (`xs.len()` = `out.len()` in 1..=4).
///
/// # Safety
/// [`available`] is true; each `xs[r]` holds at least `QK·nb` values in `qs` and
/// `nb` rounded up to a multiple of 8 entries in `d` and `s`, where
/// `nb = w.len() / fmt.block_bytes()`.
pub(super) unsafe fn dot(fmt: QuantFormat, w: &[u8], xs: &[XRow<'_>], out: &mut [f32]) {
    macro_rules! rows {
        ($f:expr) => {
            match xs.len() {
                1 => dot_rows::<$f, 1>(w, xs, out),
                2 => dot_rows::<$f, 2>(w, xs, out),
                3 => dot_rows::<$f, 3>(w, xs, out),
                4 => dot_rows::<$f, 4>(w, xs, out),
                r => unreachable!("{r} rows per weight row"),
            }
        };
    }
    match fmt {
        QuantFormat::Q4_0 => rows!(Q4_0),
        QuantFormat::Q4_1 => rows!(Q4_1),
        QuantFormat::Q8_0 => rows!(Q8_0),
    }
}

/// [`dot`] for a fixed format `F` and `R` rows of `x`.
///
/// # Safety
/// As [`dot`], with `xs.len() == out.len() == R`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows<const F: u8, const R: usize>(w: &[u8], xs: &[XRow<'_>], out: &mut [f32]) {
    let bb = block_bytes(F);
    let nb = w.len() / bb;
    let nbp = nb.next_multiple_of(LANES);
    for x in xs {
        debug_assert!(x.qs.len() >= nb * QK && x.d.len() >= nbp && x.s.len() >= nbp);
    }
    let qs: [*const i8; R] = std::array::from_fn(|r| xs[r].qs.as_ptr());
    let d: [*const f32; R] = std::array::from_fn(|r| xs[r].d.as_ptr());
    let s: [*const f32; R] = std::array::from_fn(|r| xs[r].s.as_ptr());
    // Even blocks accumulate into `acc[0]`, odd ones into `acc[1]` (two FMA chains).
    let mut acc = [[_mm256_setzero_ps(); R]; 2];
    let mut b0 = 0;
    while b0 < nb {
        let cnt = LANES.min(nb - b0);
        // SAFETY: blocks b0..b0+cnt are inside `w`; rows hold `nbp >= b0 + 8` scales and
        // `QK·(b0 + cnt)` values (the caller's contract).
        group::<F, R>(w.as_ptr().add(b0 * bb), b0, cnt, &qs, &d, &s, &mut acc);
        b0 += LANES;
    }
    for r in 0..R {
        out[r] = hsum(_mm256_add_ps(acc[0][r], acc[1][r]));
    }
}

/// Blocks `b0..b0 + cnt` (`b0` a multiple of 8, `cnt` in 1..=8) of one weight row, starting at
/// `w`, against `R` rows of `x`.
///
/// # Safety
/// `w` valid for `cnt` blocks; for each row, `qs[r]` for values up to `QK·(b0 + cnt)` and `d[r]`,
/// `s[r]` for entries up to `b0 + 8`; the CPU has AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group<const F: u8, const R: usize>(
    w: *const u8,
    b0: usize,
    cnt: usize,
    qs: &[*const i8; R],
    d: &[*const f32; R],
    s: &[*const f32; R],
    acc: &mut [[__m256; R]; 2],
) {
    let bb = block_bytes(F);
    // The weight scales (and Q4_1 minimums) of the group, zero past the last block.
    let mut dbits = [0u16; LANES];
    let mut mbits = [0u16; LANES];
    for i in 0..cnt {
        let blk = w.add(i * bb);
        dbits[i] = u16::from_le_bytes(blk.cast::<[u8; 2]>().read());
        if F == Q4_1 {
            mbits[i] = u16::from_le_bytes(blk.add(2).cast::<[u8; 2]>().read());
        }
    }
    let dw = _mm256_cvtph_ps(_mm_loadu_si128(dbits.as_ptr().cast()));
    // dw·dx per block and row, read back one at a time as broadcasts.
    let mut scale = [[0.0f32; LANES]; R];
    for r in 0..R {
        let dx = _mm256_loadu_ps(d[r].add(b0));
        _mm256_storeu_ps(scale[r].as_mut_ptr(), _mm256_mul_ps(dw, dx));
    }
    let mut i = 0;
    while i + 1 < cnt {
        block::<F, R>(w.add(i * bb), b0 + i, &scale, i, qs, &mut acc[0]);
        block::<F, R>(
            w.add((i + 1) * bb),
            b0 + i + 1,
            &scale,
            i + 1,
            qs,
            &mut acc[1],
        );
        i += 2;
    }
    if i < cnt {
        block::<F, R>(w.add(i * bb), b0 + i, &scale, i, qs, &mut acc[0]);
    }
    if F == Q4_1 {
        // mw·s of block b0 + l into lane l (zero lanes past the end add 0·0).
        let mw = _mm256_cvtph_ps(_mm_loadu_si128(mbits.as_ptr().cast()));
        for r in 0..R {
            acc[0][r] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(s[r].add(b0)), acc[0][r]);
        }
    }
}

/// One weight block (at `blk`, global index `b`, index `i` in its group) against `R` rows:
/// `acc[r] = fma(scale[r][i], lanes(w · x_r), acc[r])`.
///
/// # Safety
/// As [`group`] for block `b`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block<const F: u8, const R: usize>(
    blk: *const u8,
    b: usize,
    scale: &[[f32; LANES]; R],
    i: usize,
    qs: &[*const i8; R],
    acc: &mut [__m256; R],
) {
    // `unsigned`: what maddubs takes as its unsigned operand; `signs`: whose signs x takes on.
    let (unsigned, signs) = match F {
        Q8_0 => {
            let v = _mm256_loadu_si256(blk.add(2).cast());
            (_mm256_abs_epi8(v), v)
        }
        Q4_0 => {
            let v = _mm256_sub_epi8(nibbles(blk.add(2)), _mm256_set1_epi8(8));
            (_mm256_abs_epi8(v), v)
        }
        _ => {
            let v = nibbles(blk.add(4));
            (v, v)
        }
    };
    let ones = _mm256_set1_epi16(1);
    for r in 0..R {
        let x = _mm256_loadu_si256(qs[r].add(b * QK).cast());
        let x = if F == Q4_1 {
            x
        } else {
            _mm256_sign_epi8(x, signs)
        };
        let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned, x), ones);
        let sc = _mm256_broadcast_ss(&scale[r][i]);
        acc[r] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(lanes), acc[r]);
    }
}

/// The 32 nibbles of the 16 bytes at `p` as bytes in element order: low nibbles (elements
/// 0..16) in the low half, high nibbles (elements 16..32) in the high half.
///
/// # Safety
/// `p` valid for 16 bytes; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let raw = _mm_loadu_si128(p.cast());
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Horizontal sum in the order of `super::hsum`: `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<0b01>(t, t)))
}
