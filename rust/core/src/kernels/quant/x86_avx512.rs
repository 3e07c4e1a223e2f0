//! AVX-512 dot products for [`super`] (x86_64 with AVX-512F/BW/VL/VNNI): the AVX2 kernel of
//! `x86_avx2.rs` with two pieces of a packed group per 512-bit register, in exactly the
//! arithmetic of `super::dot_portable`.
//!
//! A zmm register holds pieces `c` and `c + 1` of a group (lanes 0..8 and 8..16, block `l` in
//! lanes `l` and `8 + l`), so `vpdpbusd` (unsigned weight bytes times signed activation bytes,
//! four products summed into each `i32` lane, exact) advances 8 blocks by 8 values at once; after
//! the group's 4 registers, the two halves added give each block's integer dot product. Q8_0
//! weights are stored `q + 128`, already unsigned: `Σ(q + 128)·x - 128·Σx` takes the offset back
//! out, exactly. Q5_1's and Q5_0's fifth bits: a full group's masks are the `k` masks of a masked
//! add of 16 onto the nibbles; in a short group `vpshufb` copies each block's `qh` byte to its
//! value bytes and `vptestmb` picks the set bits. Everything after the
//! integer sums is the AVX2 code on 8 lanes.
//!
//! # Tiles
//! With two or more rows of `x`, the weight rows go in pairs (`group_pairs`), two pairs at a
//! time where the registers allow: each row of `x`'s 4 registers meet every weight row's
//! unpacked group, the offset (Q4_0's `8·Σx`, ...) starts the `vpdpbusd` chains instead of being
//! subtracted from each sum, and a pair's `f32` steps run on one 512-bit register (lanes 0..8 the
//! first weight row, 8..16 the second): the same lane operations as `group`'s, so the same bits.
//! Up to 8 rows of `x` per tile ([`rows_per_tile`]).
//!
//! # Safety
//! Everything here is compiled with AVX-512F/BW/VL/VNNI, AVX2, FMA and F16C enabled; callers
//! must have checked [`available`].

use std::arch::x86_64::*;

use super::x86_avx2::{
    self as avx2, block_bytes, has_mins, has_qh, head_bytes, hsum, XPtr, Q4_0, Q4_1, Q5_0, Q5_1,
    Q8_0,
};
use super::{QuantFormat, XRow, LANES, QK};

/// Whether this CPU can run this file's code.
pub(super) fn available() -> bool {
    avx2::available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

// Up to 8 rows of `x` (`rows_per_tile`).
avx2::packed_row_kernels!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    [1, 2, 3, 4, 5, 6, 7, 8]
);

/// Prefetches every cache line of `bytes` into L2 (a hint: no fault, no effect on results).
///
/// # Safety
/// The CPU has this file's features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn prefetch_l2(bytes: &[u8]) {
    for off in (0..bytes.len()).step_by(64) {
        _mm_prefetch::<_MM_HINT_T1>(bytes.as_ptr().add(off).cast());
    }
}

/// Rows of `x` per tile for `fmt`: 8, or 4 for the types with minimums (Q4_1, Q5_1), whose
/// second set of accumulators would not fit the registers with 8. (Tiles of 4 rows by four weight
/// rows were slower: `bench_quant_matmul_tiles`.)
pub(super) fn rows_per_tile(fmt: QuantFormat) -> usize {
    if has_mins(fmt as u8) {
        4
    } else {
        8
    }
}

/// The loop over weight rows: in tiles of `R` rows of `x` by four weight rows (two pairs), then
/// two, then one, so that each piece of `x` is loaded once for all of them. The sizes are the
/// fastest of `bench_quant_matmul_tiles` on a Zen 4 core: four weight rows only with more than 4
/// rows of `x` (with 4 or fewer, pairs were 10-30% faster) and without minimums (Q4_1's and
/// Q5_1's second set of accumulators does not fit the registers: 10-30% slower than one at a
/// time); one at a time for a single row of `x` (decoding), which streams the weights from memory
/// and was ~10% slower in pairs (Q4_1 and Q5_0).
///
/// # Safety
/// As `dot`, with `xs.len() == R`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_rows<const F: u8, const R: usize>(
    w: &[u8],
    rb: usize,
    xs: &[XRow<'_>],
    y: *mut f32,
    ldy: usize,
) {
    let nb = rb / const { block_bytes(F) };
    let x: [XPtr; R] = std::array::from_fn(|r| XPtr::new(&xs[r], nb));
    let cols = w.len() / rb;
    let mut j = 0;
    if R > 1 && super::wide_tiles() {
        if !has_mins(F) && R > 4 {
            j = pairs::<F, R, 2>(w, rb, nb, &x, y, ldy, 0);
        }
        j = pairs::<F, R, 1>(w, rb, nb, &x, y, ldy, j);
    }
    for j in j..cols {
        let out = dot_row::<F, R>(w.as_ptr().add(j * rb), nb, &x);
        for (r, v) in out.into_iter().enumerate() {
            *y.add(r * ldy + j) = v;
        }
    }
}

/// Weight rows `j0..` of `w` in tiles of `P` pairs, as long as whole tiles remain; returns the
/// first row left.
///
/// # Safety
/// As `dot_rows`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn pairs<const F: u8, const R: usize, const P: usize>(
    w: &[u8],
    rb: usize,
    nb: usize,
    x: &[XPtr; R],
    y: *mut f32,
    ldy: usize,
    j0: usize,
) -> usize {
    let cols = w.len() / rb;
    let mut j = j0;
    while j + 2 * P <= cols {
        let mut wp = [[w.as_ptr(); 2]; P];
        for (p, pair) in wp.iter_mut().enumerate() {
            let w0 = w.as_ptr().add((j + 2 * p) * rb);
            *pair = [w0, w0.add(rb)];
        }
        let out = dot_row_pairs::<F, R, P>(wp, nb, x);
        for (r, row) in out.into_iter().enumerate() {
            for (p, v) in row.into_iter().enumerate() {
                *y.add(r * ldy + j + 2 * p) = v[0];
                *y.add(r * ldy + j + 2 * p + 1) = v[1];
            }
        }
        j += 2 * P;
    }
    j
}

/// `P` pairs of packed weight rows of `nb` blocks at `w` against `R` rows of `x`: per row of `x`
/// and weight row, the arithmetic of `dot_row`, with each pair's `f32` lanes in one 512-bit
/// register (lanes 0..8 for `w[p][0]`, 8..16 for `w[p][1]`).
///
/// # Safety
/// Each `w[p][i]` valid for `nb` blocks; the rows as `dot` requires; the CPU has this file's
/// features.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_row_pairs<const F: u8, const R: usize, const P: usize>(
    w: [[*const u8; 2]; P],
    nb: usize,
    x: &[XPtr; R],
) -> [[[f32; 2]; P]; R] {
    let bb = const { block_bytes(F) };
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    let mut mins = [[_mm512_setzero_ps(); P]; R];
    let full = nb - nb % LANES;
    let mut wg = w;
    for b0 in (0..full).step_by(LANES) {
        group_pairs::<F, R, P, true>(wg, b0, LANES, x, &mut acc, &mut mins);
        for pair in wg.iter_mut() {
            *pair = [pair[0].add(LANES * bb), pair[1].add(LANES * bb)];
        }
    }
    if full < nb {
        group_pairs::<F, R, P, false>(wg, full, nb - full, x, &mut acc, &mut mins);
    }
    let mut out = [[[0.0; 2]; P]; R];
    for r in 0..R {
        for p in 0..P {
            let v = if has_mins(F) {
                _mm512_add_ps(acc[r][p], mins[r][p])
            } else {
                acc[r][p]
            };
            let (lo, hi) = halves_ps(v);
            out[r][p] = [hsum(lo), hsum(hi)];
        }
    }
    out
}

/// The two 256-bit halves of `v`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn halves_ps(v: __m512) -> (__m256, __m256) {
    let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v));
    (_mm512_castps512_ps256(v), _mm256_castpd_ps(hi))
}

/// `lo` in lanes 0..8 and `hi` in lanes 8..16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn join_ps(lo: __m256, hi: __m256) -> __m512 {
    let lo = _mm512_castpd256_pd512(_mm256_castps_pd(lo));
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_castps_pd(hi)))
}

/// `v` in both halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn twice_ps(v: __m256) -> __m512 {
    join_ps(v, v)
}

/// One packed group's weights, unpacked: its scales `dw` and minimums `mw` (zero without) on 8
/// lanes, and its values in the order of the `x` registers they meet (pieces (0,1), (2,3), (4,5),
/// (6,7); lanes `l` and `8 + l` for block `l`, zero past `t` in a short group).
#[derive(Clone, Copy)]
struct Weights {
    dw: __m256,
    mw: __m256,
    v: [__m512i; 4],
}

/// The packed group of `t` blocks at `w` (8 when `FULL`), unpacked, and prefetches ahead.
///
/// # Safety
/// `w` valid for `t` blocks; the CPU has this file's features.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn weights<const F: u8, const FULL: bool>(w: *const u8, t: usize) -> Weights {
    let t = if FULL { LANES } else { t };
    for off in (0..t * const { block_bytes(F) }).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(off + avx2::PREFETCH_BYTES).cast());
    }
    let lanes: __mmask8 = if FULL { 0xFF } else { (1u8 << t) - 1 };
    let halves = |p: *const u8| {
        if FULL {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
        } else {
            _mm256_cvtph_ps(_mm_maskz_loadu_epi16(lanes, p.cast()))
        }
    };
    let dw = halves(w);
    let mw = if has_mins(F) {
        halves(w.add(2 * t))
    } else {
        _mm256_setzero_ps()
    };
    let data = w.add(const { head_bytes(F) } * t);
    // Pieces c and c + 1 in one register (lanes 0..t and 8..8+t; the rest zero in a short group,
    // whose pieces are 4t bytes apart: `expandload` places 2t consecutive dwords in those lanes).
    let pair_mask: __mmask16 = (lanes as u16) | ((lanes as u16) << 8);
    let pieces = |c: usize| {
        if FULL {
            _mm512_loadu_si512(data.add(32 * c).cast())
        } else {
            _mm512_maskz_expandloadu_epi32(pair_mask, data.add(4 * t * c).cast())
        }
    };
    // Weight registers in the order of the x registers they meet: x pieces (0,1), (2,3), (4,5),
    // (6,7). Nibbles: a byte of piece c holds value 4c+i (low) and 16+4c+i (high); Q5_1's and
    // Q5_0's follow their `qh` piece.
    let mut v: [__m512i; 4] = if F == Q8_0 {
        std::array::from_fn(|i| pieces(2 * i))
    } else {
        let first = if has_qh(F) { 1 } else { 0 };
        let low = _mm512_set1_epi8(0x0F);
        let (p01, p23) = (pieces(first), pieces(first + 2));
        [
            _mm512_and_si512(p01, low),
            _mm512_and_si512(p23, low),
            _mm512_and_si512(_mm512_srli_epi16::<4>(p01), low),
            _mm512_and_si512(_mm512_srli_epi16::<4>(p23), low),
        ]
    };
    if has_qh(F) && FULL {
        // A full group holds 8 masks (`pack.rs`), mask c for x piece c: register i's fifth bits
        // are masks 2i and 2i + 1, one u64.
        let masks = data.cast::<u64>();
        let sixteen = _mm512_set1_epi8(16);
        for (i, vi) in v.iter_mut().enumerate() {
            let set: __mmask64 = std::ptr::read_unaligned(masks.add(i));
            *vi = _mm512_mask_add_epi8(*vi, set, *vi, sixteen);
        }
    } else if has_qh(F) {
        // A short group holds the blocks' `qh`. Register i holds x pieces 2i (low half) and
        // 2i + 1 (high half): values 8i..8i+8 of each block, whose fifth bits are byte i of its
        // `qh` (low nibble, then high nibble).
        let qh = _mm512_broadcast_i64x4(_mm256_maskz_loadu_epi32(lanes, data.cast()));
        let bits = _mm512_inserti64x4::<1>(
            _mm512_set1_epi32(0x0804_0201),
            _mm256_set1_epi32(0x8040_2010_u32 as i32),
        );
        let sixteen = _mm512_set1_epi8(16);
        for (i, vi) in v.iter_mut().enumerate() {
            let copy = _mm512_set4_epi32(
                (12 + i as i32) * 0x0101_0101,
                (8 + i as i32) * 0x0101_0101,
                (4 + i as i32) * 0x0101_0101,
                i as i32 * 0x0101_0101,
            );
            let set = _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, copy), bits);
            *vi = _mm512_mask_add_epi8(*vi, set, *vi, sixteen);
        }
    }
    Weights { dw, mw, v }
}

/// As `x86_avx2::group`: the packed group of `t` blocks at `w` (8 when `FULL`) against `R` rows.
///
/// # Safety
/// As `x86_avx2::group`, with this file's CPU features.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn group<const F: u8, const R: usize, const FULL: bool>(
    w: *const u8,
    b0: usize,
    t: usize,
    x: &[XPtr; R],
    acc: &mut [__m256; R],
    mins: &mut [__m256; R],
) {
    let Weights { dw, mw, v } = weights::<F, FULL>(w, t);
    for r in 0..R {
        let xg = x[r].qs.add(b0 * QK);
        let xv = |i: usize| _mm512_loadu_si512(xg.add(64 * i).cast());
        // Two independent chains of two, then one add: shorter latency than a chain of four.
        let a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[0], xv(0));
        let a = _mm512_dpbusd_epi32(a, v[1], xv(1));
        let b = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[2], xv(2));
        let b = _mm512_dpbusd_epi32(b, v[3], xv(3));
        let ab = _mm512_add_epi32(a, b);
        let mut isum = _mm256_add_epi32(
            _mm512_castsi512_si256(ab),
            _mm512_extracti64x4_epi64::<1>(ab),
        );
        if F == Q4_0 || F == Q5_0 || F == Q8_0 {
            // Q4_0: Σ(nibble - 8)·x = Σ nibble·x - 8·Σx; Q5_0: Σ(q - 16)·x = Σ q·x - 16·Σx;
            // Q8_0: Σ(q + 128)·x - 128·Σx.
            let xsum = _mm256_loadu_si256(x[r].sum.add(b0).cast());
            let offset = match F {
                Q4_0 => _mm256_slli_epi32::<3>(xsum),
                Q5_0 => _mm256_slli_epi32::<4>(xsum),
                _ => _mm256_slli_epi32::<7>(xsum),
            };
            isum = _mm256_sub_epi32(isum, offset);
        }
        let scale = _mm256_mul_ps(dw, _mm256_loadu_ps(x[r].d.add(b0)));
        acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum), acc[r]);
        if has_mins(F) {
            mins[r] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(x[r].s.add(b0)), mins[r]);
        }
    }
}

/// The packed groups of `t` blocks at each `w[p][0]` and `w[p][1]` (blocks `b0..b0 + t` of `P`
/// pairs of weight rows; 8 when `FULL`) against `R` rows: what a call of `group` per weight row
/// adds, in one register per row of `x` and pair (lanes 0..8 for `w[p][0]`, 8..16 for
/// `w[p][1]`), each piece of `x` loaded once for all.
///
/// # Safety
/// As `group`, for every weight row.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn group_pairs<const F: u8, const R: usize, const P: usize, const FULL: bool>(
    w: [[*const u8; 2]; P],
    b0: usize,
    t: usize,
    x: &[XPtr; R],
    acc: &mut [[__m512; P]; R],
    mins: &mut [[__m512; P]; R],
) {
    // No closures on this path (nor `array::map`/`from_fn`): one handed to a generic function
    // is compiled without this function's CPU features and called, not inlined.
    let zero = Weights {
        dw: _mm256_setzero_ps(),
        mw: _mm256_setzero_ps(),
        v: [_mm512_setzero_si512(); 4],
    };
    let mut wt = [[zero; 2]; P];
    let mut dw = [_mm512_setzero_ps(); P];
    let mut mw = [_mm512_setzero_ps(); P];
    for p in 0..P {
        wt[p] = [
            weights::<F, FULL>(w[p][0], t),
            weights::<F, FULL>(w[p][1], t),
        ];
        dw[p] = join_ps(wt[p][0].dw, wt[p][1].dw);
        mw[p] = join_ps(wt[p][0].mw, wt[p][1].mw);
    }
    for r in 0..R {
        let xg = x[r].qs.add(b0 * QK);
        let mut xv = [_mm512_setzero_si512(); 4];
        for (i, xi) in xv.iter_mut().enumerate() {
            *xi = _mm512_loadu_si512(xg.add(64 * i).cast());
        }
        // The offset taken out (`group`'s, with the same integers) starts every chain, in lanes
        // 0..8 (zero in 8..16): the fold adds it to each block's sum.
        let start = if F == Q4_0 || F == Q5_0 || F == Q8_0 {
            let xsum = _mm256_loadu_si256(x[r].sum.add(b0).cast());
            let offset = match F {
                Q4_0 => _mm256_slli_epi32::<3>(xsum),
                Q5_0 => _mm256_slli_epi32::<4>(xsum),
                _ => _mm256_slli_epi32::<7>(xsum),
            };
            _mm512_inserti64x4::<0>(
                _mm512_setzero_si512(),
                _mm256_sub_epi32(_mm256_setzero_si256(), offset),
            )
        } else {
            _mm512_setzero_si512()
        };
        let dx = twice_ps(_mm256_loadu_ps(x[r].d.add(b0)));
        let s = if has_mins(F) {
            twice_ps(_mm256_loadu_ps(x[r].s.add(b0)))
        } else {
            _mm512_setzero_ps()
        };
        for p in 0..P {
            // One chain of four per weight row: the tile's chains are independent of each other.
            let mut isum = [_mm256_setzero_si256(); 2];
            for (c, wc) in wt[p].iter().enumerate() {
                let mut a = start;
                for (vi, xi) in wc.v.iter().zip(&xv) {
                    a = _mm512_dpbusd_epi32(a, *vi, *xi);
                }
                isum[c] =
                    _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64::<1>(a));
            }
            let isums = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(isum[0]), isum[1]);
            let scale = _mm512_mul_ps(dw[p], dx);
            acc[r][p] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isums), acc[r][p]);
            if has_mins(F) {
                mins[r][p] = _mm512_fmadd_ps(mw[p], s, mins[r][p]);
            }
        }
    }
}
