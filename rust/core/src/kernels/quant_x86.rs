//! AVX2 dot products for [`super`] (x86_64 only): quantized weight rows against 1..=4 rows of
//! 8-bit activations, in exactly the arithmetic of `super::dot_portable`.
//!
//! Per block, `maddubs` multiplies unsigned weight bytes by signed activation bytes and adds
//! adjacent pairs into `i16`; `madd` with ones adds those pairs into 8 `i32` lanes (lane `l` =
//! elements `4l..4l+4`). Nibbles go in as they are (unsigned); Q8_0 weights go in as `|w|` with
//! the sign moved onto `x` (`sign_epi8`), as llama.cpp does. No step saturates: the largest pair
//! sum is `2·128·127 = 32512` (a Q8_0 weight of -128; activations stay within ±127).
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

/// How far ahead of the block being read the weights are prefetched: the best of 1-8 KiB, by
/// `benchmarks/decode_step.py` on SmolLM2 Q4_1 (2 KiB on Zen 3 earlier; 4 KiB on a Sapphire
/// Rapids VM, where 2 KiB was slower by a few percent and 8 KiB by more).
pub(super) const PREFETCH_BYTES: usize = 4096;

// `QuantFormat` as const-generic parameters (enums cannot be).
pub(super) const Q4_0: u8 = 0;
pub(super) const Q4_1: u8 = 1;
pub(super) const Q8_0: u8 = 2;

pub(super) const fn block_bytes(f: u8) -> usize {
    match f {
        Q4_0 => 2 + QK / 2,
        Q4_1 => 4 + QK / 2,
        _ => 2 + QK,
    }
}

/// `y[r·ldy + j] = w_j · xs[r]` for every weight row `w_j` of `w` (rows of `rb` bytes, whole
/// blocks) and each of the 1..=4 rows of `xs`.
///
/// # Safety
/// [`available`] is true; `y` is valid for those writes; each `xs[r]` holds at least `QK·nb`
/// values in `qs` and `nb` rounded up to a multiple of 8 entries in `d` and `s`, where
/// `nb = rb / fmt.block_bytes()`.
pub(super) unsafe fn dot(
    fmt: QuantFormat,
    w: &[u8],
    rb: usize,
    xs: &[XRow<'_>],
    y: *mut f32,
    ldy: usize,
) {
    macro_rules! rows {
        ($f:expr) => {
            match xs.len() {
                1 => dot_rows::<$f, 1>(w, rb, xs, y, ldy),
                2 => dot_rows::<$f, 2>(w, rb, xs, y, ldy),
                3 => dot_rows::<$f, 3>(w, rb, xs, y, ldy),
                4 => dot_rows::<$f, 4>(w, rb, xs, y, ldy),
                r => unreachable!("{r} rows of x at once"),
            }
        };
    }
    match fmt {
        QuantFormat::Q4_0 => rows!(Q4_0),
        QuantFormat::Q4_1 => rows!(Q4_1),
        QuantFormat::Q8_0 => rows!(Q8_0),
    }
}

/// `super::quantize_row` compiled with AVX2 (it is always inlined, so this is its vector code).
///
/// # Safety
/// [`available`] is true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_row(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    super::quantize_row(x, qs, d, s)
}

/// [`dot`] for a fixed format `F` and `R` rows of `x`: the loop over weight rows lives here so
/// that the constants and row pointers are set up once, not per row (rows are short: 18 blocks
/// for a hidden size of 576).
///
/// # Safety
/// As [`dot`], with `xs.len() == R`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows<const F: u8, const R: usize>(
    w: &[u8],
    rb: usize,
    xs: &[XRow<'_>],
    y: *mut f32,
    ldy: usize,
) {
    let nb = rb / block_bytes(F);
    let nbp = nb.next_multiple_of(LANES);
    for x in xs {
        debug_assert!(x.qs.len() >= nb * QK && x.d.len() >= nbp && x.s.len() >= nbp);
    }
    let qs: [*const i8; R] = std::array::from_fn(|r| xs[r].qs.as_ptr());
    let d: [*const f32; R] = std::array::from_fn(|r| xs[r].d.as_ptr());
    let s: [*const f32; R] = std::array::from_fn(|r| xs[r].s.as_ptr());
    for (j, wj) in w.chunks_exact(rb).enumerate() {
        let out = dot_row::<F, R>(wj.as_ptr(), nb, &qs, &d, &s);
        for (r, v) in out.into_iter().enumerate() {
            *y.add(r * ldy + j) = v;
        }
    }
}

/// One weight row of `nb` blocks at `w` against `R` rows of `x`.
///
/// # Safety
/// `w` valid for `nb` blocks; the row pointers as [`dot`] requires; the CPU has AVX2, FMA, F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_row<const F: u8, const R: usize>(
    w: *const u8,
    nb: usize,
    qs: &[*const i8; R],
    d: &[*const f32; R],
    s: &[*const f32; R],
) -> [f32; R] {
    let bb = block_bytes(F);
    // Even blocks accumulate into `acc[0]`, odd ones into `acc[1]`, the Q4 formats' `mw·s` terms
    // into `acc[2]`: three independent FMA chains, so their latency does not bound a row.
    let mut acc = [[_mm256_setzero_ps(); R]; 3];
    // Whole groups with a constant block count (unrolled, no per-block tests), then the rest.
    // Blocks b0..b0+cnt are inside `w`, and the rows hold `nbp >= b0 + 8` scales and
    // `QK·(b0 + cnt)` values (the caller's contract), as `group` requires.
    let full = nb - nb % LANES;
    for b0 in (0..full).step_by(LANES) {
        group::<F, R, true>(w.add(b0 * bb), b0, LANES, qs, d, s, &mut acc);
    }
    if full < nb {
        group::<F, R, false>(w.add(full * bb), full, nb - full, qs, d, s, &mut acc);
    }
    std::array::from_fn(|r| {
        let lanes = _mm256_add_ps(acc[0][r], acc[1][r]);
        hsum(if F == Q8_0 {
            lanes
        } else {
            _mm256_add_ps(lanes, acc[2][r])
        })
    })
}

/// Blocks `b0..b0 + cnt` (`b0` a multiple of 8, `cnt` in 1..=8, and 8 when `FULL`) of one weight
/// row, starting at `w`, against `R` rows of `x`.
///
/// # Safety
/// `w` valid for `cnt` blocks; for each row, `qs[r]` for values up to `QK·(b0 + cnt)` and `d[r]`,
/// `s[r]` for entries up to `b0 + 8`; the CPU has AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group<const F: u8, const R: usize, const FULL: bool>(
    w: *const u8,
    b0: usize,
    cnt: usize,
    qs: &[*const i8; R],
    d: &[*const f32; R],
    s: &[*const f32; R],
    acc: &mut [[__m256; R]; 3],
) {
    let bb = block_bytes(F);
    let cnt = if FULL { LANES } else { cnt };
    // Software prefetch of the weights PREFETCH_BYTES ahead (past the row end into the next
    // rows of the task: the hardware prefetcher alone left a single thread at ~7 GB/s where it
    // reaches ~12-15 with this). `wrapping_add` because the address may lie past the slice;
    // prefetching never faults.
    for off in (0..cnt * bb).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(off + PREFETCH_BYTES).cast());
    }
    let (dw, mw) = scales::<FULL>(w, bb, cnt);
    // dw·dx per block (lane) and row. (Kept in registers: storing them and reading each back
    // as a broadcast load measured ~10% slower.)
    let scale: [__m256; R] =
        std::array::from_fn(|r| _mm256_mul_ps(dw, _mm256_loadu_ps(d[r].add(b0))));
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
    if F != Q8_0 {
        // mw·s of block b0 + l into lane l (zero lanes past the end add 0·0), where Q4_0 has
        // mw = -8·dw since its blocks were multiplied as unsigned nibbles.
        let mw = if F == Q4_1 {
            mw
        } else {
            _mm256_mul_ps(dw, _mm256_set1_ps(-8.0))
        };
        for r in 0..R {
            acc[2][r] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(s[r].add(b0)), acc[2][r]);
        }
    }
}

/// The `f16` scales of the `cnt` (8 when `FULL`) blocks `bb` bytes apart from `w` (lane `l` =
/// block `l`, zero past `cnt`) and the `f16` that follows each (Q4_1's minimum; unused for the
/// other formats).
///
/// # Safety
/// `w` valid for `cnt` (8 when `FULL`) blocks of `bb >= 4` bytes; the CPU has AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scales<const FULL: bool>(
    w: *const u8,
    bb: usize,
    cnt: usize,
) -> (__m256, __m256) {
    // The first 4 bytes of each block in one gather (8 vpinsrd would all compete for the shuffle
    // port with the nibble unpacking), then a byte shuffle gathers the low halves (d) and high
    // halves (m) of each 128-bit lane into its low 8 bytes and a qword permute joins the two
    // lanes. A partial group reads its last block again for the missing lanes, then zeroes them.
    let last = if FULL { LANES - 1 } else { cnt - 1 };
    let at = |i: usize| (i.min(last) * bb) as i32;
    let offsets = _mm256_setr_epi32(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7));
    let v = _mm256_i32gather_epi32::<1>(w.cast::<i32>(), offsets);
    #[rustfmt::skip]
    let (lo, hi) = (
        _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
        ),
        _mm256_setr_epi8(
            2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1,
            2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1,
        ),
    );
    let gather = |sel: __m256i| {
        let packed = _mm256_permute4x64_epi64::<0b10_00>(_mm256_shuffle_epi8(v, sel));
        _mm256_cvtph_ps(_mm256_castsi256_si128(packed))
    };
    let (dw, mw) = (gather(lo), gather(hi));
    if FULL {
        (dw, mw)
    } else {
        let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
            _mm256_set1_epi32(cnt as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        ));
        (_mm256_and_ps(dw, keep), _mm256_and_ps(mw, keep))
    }
}

/// One weight block (at `blk`, global index `b`, index `i` in its group) against `R` rows:
/// `acc[r] = fma(lane i of scale[r], lanes(w · x_r), acc[r])`.
///
/// # Safety
/// As [`group`] for block `b`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block<const F: u8, const R: usize>(
    blk: *const u8,
    b: usize,
    scale: &[__m256; R],
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
            let v = nibbles(blk.add(2));
            (v, v)
        }
        _ => {
            let v = nibbles(blk.add(4));
            (v, v)
        }
    };
    let ones = _mm256_set1_epi16(1);
    for r in 0..R {
        let x = _mm256_loadu_si256(qs[r].add(b * QK).cast());
        let x = if F == Q8_0 {
            _mm256_sign_epi8(x, signs)
        } else {
            x
        };
        let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned, x), ones);
        let sc = _mm256_permutevar8x32_ps(scale[r], _mm256_set1_epi32(i as i32));
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
    // The 16 bytes in both halves (a load, no ALU work), the high half shifted right by 4.
    let both = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast()));
    let shifted = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
}

/// Horizontal sum in the order of `super::hsum`: `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<0b01>(t, t)))
}
