//! AVX2 kernel for int8 rows, in exactly the arithmetic of `int8::dot_portable`.
//!
//! A packed group's piece `c` is one 32-byte load whose 32-bit lane `l` holds 4 values of block
//! `l` (`pack.rs`), so lane `l` of every piece belongs to lane set `l` of `int8.rs`. Each output
//! keeps one 8-lane `i32` accumulator over the whole row, and nothing but integer work happens
//! per group. The products are Q8_0's (`x86_avx2.rs`): AVX2 has no unsigned × signed byte dot
//! product without saturating pairs, so the weights (stored `q + 128`) go into `maddubs` as `|q|`
//! with `q`'s sign moved onto `x` (`sign_epi8`; pairs at most `2·128·127 = 32512`), then `madd`
//! with ones adds each lane's pairs into its `i32`. The sums are the signed `I_l` already (the
//! rows' `lane_offsets`, for unsigned weights, are not needed). At the end: one conversion, the
//! product by the sets' scales, the lane sum and the row's scale.
//!
//! Tiles: up to [`ROWS_PER_TILE`] rows of `x` by two weight rows (as Q8_0's `group_pair`): 8
//! accumulators in registers, each weight piece's `|q|` and sign computed once for the tile's
//! rows and each piece of `x` loaded once for both weight rows. A row of `x` alone (decoding)
//! takes the weight rows in pairs too; a last odd weight row goes alone. Weights are prefetched
//! [`PREFETCH_BYTES`] ahead, as Q8_0's are. By `bench_int8_avx2_tiles` (one thread, a Zen 4 VM
//! shared with builds, interleaved), against AVX2 Q8_0 on the same bytes: 1.07-1.20x at m =
//! 4..32 (k = 512..2048), 1.03x at m = 1; one weight row at a time was 0.95-1.18x (0.95x at
//! m = 1). The saving is Q8_0's `f32` steps per group, a fraction of the `sign`, `maddubs` and
//! `madd` per piece both kernels share.
//!
//! # Safety
//! Everything here is compiled with AVX2, FMA and F16C enabled; callers must have checked
//! `x86_avx2::available`.

use std::arch::x86_64::*;

use super::activations::LANE_SETS;
use super::int8::{BLOCK_BYTES, HEAD_BYTES};
use super::x86_avx2::{hsum, PREFETCH_BYTES};
use super::{XRow, LANES, QK};

/// Rows of `x` per tile (the most `dot` takes at once).
pub(super) const ROWS_PER_TILE: usize = 4;

/// Raw pointers to the parts of one quantized row of `x` this kernel reads.
#[derive(Clone, Copy)]
struct XPtr {
    qs: *const i8,
    lane_d: *const f32,
}

/// `y[r·ldy + j] = w_j · xs[r]` for every packed int8 row `w_j` of `w` (rows of `rb` bytes) and
/// 1..=[`ROWS_PER_TILE`] rows of `x`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `y` is valid for those writes; each `xs[r]` holds the blocks
/// of a row of `rb / BLOCK_BYTES` blocks padded to whole groups, quantized by lane sets (as
/// `super::Activations::quantize_lanes` makes).
pub(super) unsafe fn dot(w: &[u8], rb: usize, xs: &[XRow<'_>], y: *mut f32, ldy: usize) {
    match xs.len() {
        1 => rows::<1>(w, rb, xs, y, ldy),
        2 => rows::<2>(w, rb, xs, y, ldy),
        3 => rows::<3>(w, rb, xs, y, ldy),
        4 => rows::<4>(w, rb, xs, y, ldy),
        r => unreachable!("{r} rows of x at once"),
    }
}

/// The loop over weight rows, so that the row pointers are set up once, not per weight row: in
/// pairs (the module docs' tiles), then one at a time.
///
/// # Safety
/// As `dot`, with `xs.len() == R`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows<const R: usize>(w: &[u8], rb: usize, xs: &[XRow<'_>], y: *mut f32, ldy: usize) {
    let nb = rb / BLOCK_BYTES;
    let mut x = [XPtr {
        qs: std::ptr::null(),
        lane_d: std::ptr::null(),
    }; R];
    for (p, row) in x.iter_mut().zip(xs) {
        debug_assert!(row.qs.len() >= nb.next_multiple_of(LANES) * QK);
        debug_assert!(row.lane_d.len() == LANE_SETS);
        *p = XPtr {
            qs: row.qs.as_ptr(),
            lane_d: row.lane_d.as_ptr(),
        };
    }
    let cols = w.len() / rb;
    let base = w.as_ptr();
    let mut j = 0;
    if super::wide_tiles() {
        while j + 2 <= cols {
            let out = tile::<R, 2>([base.add(j * rb), base.add((j + 1) * rb)], nb, &x);
            for (r, row) in out.iter().enumerate() {
                *y.add(r * ldy + j) = row[0];
                *y.add(r * ldy + j + 1) = row[1];
            }
            j += 2;
        }
    }
    while j < cols {
        let out = tile::<R, 1>([base.add(j * rb)], nb, &x);
        for (r, row) in out.iter().enumerate() {
            *y.add(r * ldy + j) = row[0];
        }
        j += 1;
    }
}

/// `Q` packed int8 rows of `nb` blocks at `w` against `R` rows of `x`.
///
/// # Safety
/// Each `w[q]` valid for `nb` blocks; the rows as `dot` requires; the CPU has this file's features.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const R: usize, const Q: usize>(
    w: [*const u8; Q],
    nb: usize,
    x: &[XPtr; R],
) -> [[f32; Q]; R] {
    // acc[r][q]: the sums of row r and weight row q, lane l for set l.
    let mut acc = [[_mm256_setzero_si256(); Q]; R];
    let full = nb - nb % LANES;
    let mut b0 = 0;
    while b0 < full {
        group::<R, Q, true>(w, b0, LANES, x, &mut acc);
        b0 += LANES;
    }
    if full < nb {
        group::<R, Q, false>(w, full, nb - full, x, &mut acc);
    }
    let mut scale = [0.0f32; Q];
    for (s, wq) in scale.iter_mut().zip(w) {
        // The row's scale: its first block's, at the head of its first group.
        // (`_mm_cvtph_ps`: `half`'s conversion checks the CPU's features on every call.)
        *s = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            std::ptr::read_unaligned(wq.cast::<u16>()) as i32,
        )));
    }
    let mut out = [[0.0; Q]; R];
    for ((row, acc), xr) in out.iter_mut().zip(&acc).zip(x) {
        let d = _mm256_loadu_ps(xr.lane_d);
        for q in 0..Q {
            // f_l = dx_l · I_l, summed in `hsum`'s order, times the row's scale.
            row[q] = hsum(_mm256_mul_ps(d, _mm256_cvtepi32_ps(acc[q]))) * scale[q];
        }
    }
    out
}

/// The packed group of `t` blocks starting at block `b0` of each weight row (8 when `FULL`)
/// against `R` rows of `x`, into the accumulators: piece after piece, each weight piece's `|q|`
/// and sign computed once for all the rows and each piece of `x` loaded once for all the weight
/// rows. Lanes past `t` in a short group hold zero weights (`maskload`), flipped to `q = -128`
/// and met by the zero padding of `x`: they add nothing.
///
/// # Safety
/// As `tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group<const R: usize, const Q: usize, const FULL: bool>(
    w: [*const u8; Q],
    b0: usize,
    t: usize,
    x: &[XPtr; R],
    acc: &mut [[__m256i; Q]; R],
) {
    let t = if FULL { LANES } else { t };
    let mut data = [std::ptr::null::<u8>(); Q];
    for (d, wq) in data.iter_mut().zip(w) {
        let g = wq.add(b0 * BLOCK_BYTES);
        // `wrapping_add`: the address may lie past the slice (the next rows); prefetching
        // never faults.
        let mut off = 0;
        while off < t * BLOCK_BYTES {
            _mm_prefetch::<_MM_HINT_T0>(g.wrapping_add(off + PREFETCH_BYTES).cast());
            off += 64;
        }
        *d = g.add(HEAD_BYTES * t);
    }
    let keep = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(t as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let (ones, flip) = (_mm256_set1_epi16(1), _mm256_set1_epi8(-128));
    for c in 0..QK / 4 {
        // Piece c of each weight row: q (stored byte - 128) for its sign, |q| for `maddubs`.
        let mut q = [_mm256_setzero_si256(); Q];
        let mut unsigned = q;
        for i in 0..Q {
            let piece = if FULL {
                _mm256_loadu_si256(data[i].add(32 * c).cast())
            } else {
                _mm256_maskload_epi32(data[i].add(4 * t * c).cast(), keep)
            };
            q[i] = _mm256_xor_si256(piece, flip);
            unsigned[i] = _mm256_abs_epi8(q[i]);
        }
        for (a, xr) in acc.iter_mut().zip(x) {
            let xc = _mm256_loadu_si256(xr.qs.add(b0 * QK + 32 * c).cast());
            for i in 0..Q {
                let pairs = _mm256_maddubs_epi16(unsigned[i], _mm256_sign_epi8(xc, q[i]));
                a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(pairs, ones));
            }
        }
    }
}
