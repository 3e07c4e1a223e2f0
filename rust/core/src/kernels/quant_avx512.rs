//! AVX-512 dot products for [`super`] (x86_64 with AVX-512F/BW/VNNI): the AVX2 kernel of
//! `quant_x86.rs` with two blocks per 512-bit register, in exactly the arithmetic of
//! `super::dot_portable`.
//!
//! The AVX2 kernel keeps even blocks in one 8-lane accumulator and odd blocks in another. Here one
//! 16-lane register holds both (lanes 0..8 = even, 8..16 = odd), so a pair of blocks costs one
//! nibble unpacking, one `vpdpbusd` (= AVX2's `maddubs` + `madd`: the four products of a lane
//! summed into `i32`, exact), one conversion and one FMA instead of two of each: the same `f32`
//! operations on the same values in the same order per lane, hence the same bits. The `mw·s`
//! terms of the Q4 formats and the scales reuse the AVX2 code.
//!
//! # Safety
//! Everything here is compiled with AVX-512F/BW/VNNI, AVX2, FMA and F16C enabled; callers must
//! have checked [`available`].

use std::arch::x86_64::*;

use super::x86::{self as avx2, block_bytes, Q4_0, Q4_1, Q8_0};
use super::{QuantFormat, XRow, LANES, QK};

/// Whether this CPU can run this file's code.
pub(super) fn available() -> bool {
    avx2::available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Same contract as `quant_x86::dot`.
///
/// # Safety
/// [`available`] is true; otherwise as `quant_x86::dot`.
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

/// # Safety
/// As [`dot`], with `xs.len() == R`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
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

/// One weight row of `nb` blocks against `R` rows of `x`.
///
/// # Safety
/// As `quant_x86::dot_row`, with this file's CPU features.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_row<const F: u8, const R: usize>(
    w: *const u8,
    nb: usize,
    qs: &[*const i8; R],
    d: &[*const f32; R],
    s: &[*const f32; R],
) -> [f32; R] {
    let bb = block_bytes(F);
    let mut pairs = [_mm512_setzero_ps(); R];
    let mut mins = [_mm256_setzero_ps(); R];
    let full = nb - nb % LANES;
    for b0 in (0..full).step_by(LANES) {
        group::<F, R, true>(w.add(b0 * bb), b0, LANES, qs, d, s, &mut pairs, &mut mins);
    }
    if full < nb {
        group::<F, R, false>(
            w.add(full * bb),
            full,
            nb - full,
            qs,
            d,
            s,
            &mut pairs,
            &mut mins,
        );
    }
    std::array::from_fn(|r| {
        // (even + odd) lane by lane, then the minimum terms: AVX2's `(acc0 + acc1) + acc2`.
        let even = _mm512_castps512_ps256(pairs[r]);
        let odd = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(pairs[r])));
        let lanes = _mm256_add_ps(even, odd);
        avx2::hsum(if F == Q8_0 {
            lanes
        } else {
            _mm256_add_ps(lanes, mins[r])
        })
    })
}

/// Blocks `b0..b0 + cnt` of one weight row (as `quant_x86::group`), two at a time.
///
/// # Safety
/// As `quant_x86::group`, with this file's CPU features.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn group<const F: u8, const R: usize, const FULL: bool>(
    w: *const u8,
    b0: usize,
    cnt: usize,
    qs: &[*const i8; R],
    d: &[*const f32; R],
    s: &[*const f32; R],
    pairs: &mut [__m512; R],
    mins: &mut [__m256; R],
) {
    let bb = block_bytes(F);
    let cnt = if FULL { LANES } else { cnt };
    for off in (0..cnt * bb).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(off + avx2::PREFETCH_BYTES).cast());
    }
    let (dw, mw) = avx2::scales::<FULL>(w, bb, cnt);
    let scale: [__m512; R] = std::array::from_fn(|r| {
        _mm512_castps256_ps512(_mm256_mul_ps(dw, _mm256_loadu_ps(d[r].add(b0))))
    });
    let mut i = 0;
    while i + 1 < cnt {
        pair::<F, R, true>(w.add(i * bb), b0 + i, &scale, i, qs, pairs);
        i += 2;
    }
    if i < cnt {
        pair::<F, R, false>(w.add(i * bb), b0 + i, &scale, i, qs, pairs);
    }
    if F != Q8_0 {
        let mw = if F == Q4_1 {
            mw
        } else {
            _mm256_mul_ps(dw, _mm256_set1_ps(-8.0))
        };
        for r in 0..R {
            mins[r] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(s[r].add(b0)), mins[r]);
        }
    }
}

/// Blocks `b` and `b + 1` (group indices `i`, `i + 1`) into lanes 0..8 and 8..16 of each row's
/// accumulator; with `BOTH = false`, block `b` alone (the odd half is left untouched).
///
/// # Safety
/// Block `b` (and `b + 1` when `BOTH`) inside the weight row and the rows of `x`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn pair<const F: u8, const R: usize, const BOTH: bool>(
    blk: *const u8,
    b: usize,
    scale: &[__m512; R],
    i: usize,
    qs: &[*const i8; R],
    acc: &mut [__m512; R],
) {
    let bb = block_bytes(F);
    // The second block of a lone block is the first again: its lanes are computed and dropped.
    let next = if BOTH { blk.add(bb) } else { blk };
    let (unsigned, negate) = match F {
        Q8_0 => {
            let v = join(
                _mm256_loadu_si256(blk.add(2).cast()),
                _mm256_loadu_si256(next.add(2).cast()),
            );
            // |w| with w's sign moved onto x (AVX2's `sign_epi8`; x = 0 where w = 0 adds 0 either way).
            (_mm512_abs_epi8(v), _mm512_movepi8_mask(v))
        }
        Q4_0 => (nibble_pair(blk.add(2), next.add(2)), 0),
        _ => (nibble_pair(blk.add(4), next.add(4)), 0),
    };
    let idx = _mm512_set_epi32(
        (i + 1) as i32,
        (i + 1) as i32,
        (i + 1) as i32,
        (i + 1) as i32,
        (i + 1) as i32,
        (i + 1) as i32,
        (i + 1) as i32,
        (i + 1) as i32,
        i as i32,
        i as i32,
        i as i32,
        i as i32,
        i as i32,
        i as i32,
        i as i32,
        i as i32,
    );
    let keep: __mmask16 = if BOTH { 0xFFFF } else { 0x00FF };
    for r in 0..R {
        // Blocks b and b + 1 of x are adjacent: one load (the lone block's second half is unused).
        let x = if BOTH {
            _mm512_loadu_si512(qs[r].add(b * QK).cast())
        } else {
            _mm512_castsi256_si512(_mm256_loadu_si256(qs[r].add(b * QK).cast()))
        };
        let x = if F == Q8_0 {
            _mm512_mask_sub_epi8(x, negate, _mm512_setzero_si512(), x)
        } else {
            x
        };
        let lanes = _mm512_dpbusd_epi32(_mm512_setzero_si512(), unsigned, x);
        let sc = _mm512_permutexvar_ps(idx, scale[r]);
        acc[r] = _mm512_mask3_fmadd_ps(sc, _mm512_cvtepi32_ps(lanes), acc[r], keep);
    }
}

/// `lo` in the low 256 bits, `hi` in the high.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// The nibbles of the 16 bytes at `p` (block one) and at `q` (block two), each block's 32 values
/// in element order: `[lo(p), hi(p), lo(q), hi(q)]` by 16-byte quarter.
///
/// # Safety
/// `p` and `q` valid for 16 bytes each.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn nibble_pair(p: *const u8, q: *const u8) -> __m512i {
    let two = _mm256_inserti128_si256::<1>(
        _mm256_castsi128_si256(_mm_loadu_si128(p.cast())),
        _mm_loadu_si128(q.cast()),
    );
    // Quarters [p, p, q, q], the second copy of each shifted right by 4.
    let wide = _mm512_castsi256_si512(two);
    let dup = _mm512_shuffle_i64x2::<0b01_01_00_00>(wide, wide);
    let shifted = _mm512_srlv_epi32(
        dup,
        _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4),
    );
    _mm512_and_si512(shifted, _mm512_set1_epi8(0x0F))
}
