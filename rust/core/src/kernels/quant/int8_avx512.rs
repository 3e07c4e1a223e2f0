//! AVX-512 VNNI kernel for int8 rows, in exactly the arithmetic of `int8::dot_portable`.
//!
//! A packed group's values sit as Q8_0's do (`x86_avx512.rs`): register `i` of a weight row holds
//! pieces `2i` and `2i + 1` of its 8 blocks (lanes `l` and `8 + l` for block `l`), stored `q + 128`,
//! so lanes `l` and `8 + l` of every group belong to lane set `l` of `int8.rs`. Each row of `x`
//! meets each weight row in four `vpdpbusd` per group into one 16-lane `i32` accumulator that runs
//! over the whole row, started at the row's offsets (`-128·Σq_x` per set, in lanes 0..8), so that
//! it ends at the signed sums: nothing else happens per group. At the end the two halves are
//! added (integers), converted, multiplied by the sets' scales, summed and multiplied by the weight
//! row's scale.
//!
//! Tiles: up to [`ROWS_PER_TILE`] rows of `x` by two weight rows (16 accumulators, 8 weight
//! registers, 4 of `x`: 28 of the 32 registers), whose 16 outputs are summed together
//! (`sum16`); a single row of `x` (decoding) takes the weight rows one at a time with two
//! accumulators each (pieces 0..4 and 4..8 of the group), which halves the chain of dependent
//! `vpdpbusd`s that the streaming weights wait on.
//!
//! # Safety
//! Everything here is compiled with AVX-512F/BW/VL/VNNI, AVX2, FMA and F16C enabled; callers must
//! have checked `x86_avx512::available`.

use std::arch::x86_64::*;

use super::activations::LANE_SETS;
use super::int8::{BLOCK_BYTES, HEAD_BYTES};
use super::x86_avx2::{hsum, PREFETCH_BYTES};
use super::{XRow, LANES, QK};

/// Rows of `x` per tile (the most `dot` takes at once).
pub(super) const ROWS_PER_TILE: usize = 8;

/// Raw pointers to the parts of one quantized row of `x` this kernel reads.
#[derive(Clone, Copy)]
struct XPtr {
    qs: *const i8,
    lane_d: *const f32,
    lane_offsets: *const i32,
}

/// `y[r·ldy + j] = w_j · xs[r]` for every packed int8 row `w_j` of `w` (rows of `rb` bytes) and
/// 1..=[`ROWS_PER_TILE`] rows of `x`.
///
/// # Safety
/// The CPU has AVX-512F/BW/VL/VNNI, AVX2, FMA and F16C; `y` is valid for those writes; each
/// `xs[r]` holds the blocks of a row of `rb / BLOCK_BYTES` blocks padded to whole groups (as
/// `super::Activations` makes).
pub(super) unsafe fn dot(w: &[u8], rb: usize, xs: &[XRow<'_>], y: *mut f32, ldy: usize) {
    match xs.len() {
        1 => rows::<1>(w, rb, xs, y, ldy),
        2 => rows::<2>(w, rb, xs, y, ldy),
        3 => rows::<3>(w, rb, xs, y, ldy),
        4 => rows::<4>(w, rb, xs, y, ldy),
        5 => rows::<5>(w, rb, xs, y, ldy),
        6 => rows::<6>(w, rb, xs, y, ldy),
        7 => rows::<7>(w, rb, xs, y, ldy),
        8 => rows::<8>(w, rb, xs, y, ldy),
        r => unreachable!("{r} rows of x at once"),
    }
}

/// The loop over weight rows: in pairs against `R > 1` rows of `x`, then one at a time.
///
/// # Safety
/// As `dot`, with `xs.len() == R`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows<const R: usize>(w: &[u8], rb: usize, xs: &[XRow<'_>], y: *mut f32, ldy: usize) {
    let nb = rb / BLOCK_BYTES;
    let mut x = [XPtr {
        qs: std::ptr::null(),
        lane_d: std::ptr::null(),
        lane_offsets: std::ptr::null(),
    }; R];
    for (p, row) in x.iter_mut().zip(xs) {
        debug_assert!(row.qs.len() >= nb.next_multiple_of(LANES) * QK);
        debug_assert!(row.lane_d.len() == LANE_SETS && row.lane_offsets.len() == LANE_SETS);
        *p = XPtr {
            qs: row.qs.as_ptr(),
            lane_d: row.lane_d.as_ptr(),
            lane_offsets: row.lane_offsets.as_ptr(),
        };
    }
    let cols = w.len() / rb;
    let base = w.as_ptr();
    let mut j = 0;
    if R > 1 {
        while j + 2 <= cols {
            let out = tile::<R, 2, 1>([base.add(j * rb), base.add((j + 1) * rb)], nb, &x);
            for (r, row) in out.iter().enumerate() {
                *y.add(r * ldy + j) = row[0];
                *y.add(r * ldy + j + 1) = row[1];
            }
            j += 2;
        }
    }
    while j < cols {
        let out = if R == 1 {
            tile::<R, 1, 2>([base.add(j * rb)], nb, &x)
        } else {
            tile::<R, 1, 1>([base.add(j * rb)], nb, &x)
        };
        for (r, row) in out.iter().enumerate() {
            *y.add(r * ldy + j) = row[0];
        }
        j += 1;
    }
}

/// `Q` packed int8 rows of `nb` blocks at `w` against `R` rows of `x`, with `S` accumulators
/// per pair (1, or 2: pieces 0..4 and 4..8 of each group).
///
/// # Safety
/// Each `w[q]` valid for `nb` blocks; the rows as `dot` requires; the CPU has this file's features.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<const R: usize, const Q: usize, const S: usize>(
    w: [*const u8; Q],
    nb: usize,
    x: &[XPtr; R],
) -> [[f32; Q]; R] {
    // Each output's first accumulator starts at its row's offsets (`-128·Σq_x` per set, lanes
    // 0..8), so that the sums come out as the signed `I_l`.
    let mut acc = [[[_mm512_setzero_si512(); S]; Q]; R];
    for (accr, xr) in acc.iter_mut().zip(x) {
        let offsets = _mm512_maskz_loadu_epi32(0x00FF, xr.lane_offsets.cast());
        for a in accr.iter_mut() {
            a[0] = offsets;
        }
    }
    let full = nb - nb % LANES;
    let mut b0 = 0;
    while b0 < full {
        group::<R, Q, S, true>(w, b0, LANES, x, &mut acc);
        b0 += LANES;
    }
    if full < nb {
        group::<R, Q, S, false>(w, full, nb - full, x, &mut acc);
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
    if R * Q == 16 {
        // A full tile (8 rows by 2): its 16 lane sums at once. Register `r` holds the `f` of
        // row `r`'s two outputs (lanes 0..8, then 8..16), the scales broadcast to both halves.
        let mut f = [_mm512_setzero_ps(); 8];
        for (fr, (acc, xr)) in f.iter_mut().zip(acc.iter().zip(x)) {
            let (a, b) = (sets_sum(&acc[0]), sets_sum(&acc[Q - 1]));
            let lo = _mm512_shuffle_i32x4::<0b01_00_01_00>(a, b);
            let hi = _mm512_shuffle_i32x4::<0b11_10_11_10>(a, b);
            let d = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(
                xr.lane_d,
            ))));
            *fr = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi)));
        }
        let mut sums = [0.0f32; 16];
        _mm512_storeu_ps(sums.as_mut_ptr(), sum16(&f));
        for (r, row) in out.iter_mut().enumerate() {
            for q in 0..Q {
                row[q] = sums[r * Q + q] * scale[q];
            }
        }
        return out;
    }
    for ((row, acc), xr) in out.iter_mut().zip(&acc).zip(x) {
        let d = _mm256_loadu_ps(xr.lane_d);
        for q in 0..Q {
            let v = sets_sum(&acc[q]);
            let isum =
                _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
            let f = _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum));
            row[q] = hsum(f) * scale[q];
        }
    }
    out
}

/// One output's accumulators added up (its two halves still apart).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn sets_sum<const S: usize>(acc: &[__m512i; S]) -> __m512i {
    let mut isum = acc[0];
    for a in &acc[1..] {
        isum = _mm512_add_epi32(isum, *a);
    }
    isum
}

/// The lane sums of 16 outputs' `f` (register `p` holding outputs `2p` and `2p + 1` in lanes
/// 0..8 and 8..16), output `o` in lane `o` of the result, each in `portable::hsum`'s order by a
/// transposed tree: every step adds the same pairs of lanes as the per-output sum, for 16 outputs
/// in 3 instructions per pair of registers (21 in all) instead of ~6 per output.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn sum16(f: &[__m512; 8]) -> __m512 {
    // s_i = f_i + f_{i+4}: register p, quarter c holds s of output 4p + c.
    let mut s = [_mm512_setzero_ps(); 4];
    for (p, s) in s.iter_mut().enumerate() {
        let (a, b) = (f[2 * p], f[2 * p + 1]);
        let lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
        let hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
        *s = _mm512_add_ps(lo, hi);
    }
    // t0 = s0 + s2, t1 = s1 + s3: register p, quarter c holds [t0, t1] of output 8p + c, then
    // of output 8p + 4 + c.
    let mut t = [_mm512_setzero_ps(); 2];
    for (p, t) in t.iter_mut().enumerate() {
        let (a, b) = (s[2 * p], s[2 * p + 1]);
        let lo = _mm512_shuffle_ps::<0b01_00_01_00>(a, b);
        let hi = _mm512_shuffle_ps::<0b11_10_11_10>(a, b);
        *t = _mm512_add_ps(lo, hi);
    }
    // t0 + t1: quarter c holds the sums of outputs c, 4 + c, 8 + c, 12 + c.
    let lo = _mm512_shuffle_ps::<0b10_00_10_00>(t[0], t[1]);
    let hi = _mm512_shuffle_ps::<0b11_01_11_01>(t[0], t[1]);
    let sums = _mm512_add_ps(lo, hi);
    // Output `o` sits in lane 4·(o % 4) + o / 4.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(order, sums)
}

/// The packed group of `t` blocks starting at block `b0` of each weight row (8 when `FULL`)
/// against `R` rows of `x`, into the accumulators.
///
/// # Safety
/// As `tile`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn group<const R: usize, const Q: usize, const S: usize, const FULL: bool>(
    w: [*const u8; Q],
    b0: usize,
    t: usize,
    x: &[XPtr; R],
    acc: &mut [[[__m512i; S]; Q]; R],
) {
    // No closures on this path (nor `array::map`/`from_fn`): one handed to a generic function
    // is compiled without this function's CPU features and called, not inlined.
    let mut v = [[_mm512_setzero_si512(); 4]; Q];
    for (vq, wq) in v.iter_mut().zip(w) {
        *vq = values::<FULL>(wq.add(b0 * BLOCK_BYTES), t);
    }
    for (accr, xr) in acc.iter_mut().zip(x) {
        let xg = xr.qs.add(b0 * QK);
        let mut xv = [_mm512_setzero_si512(); 4];
        for (i, xi) in xv.iter_mut().enumerate() {
            *xi = _mm512_loadu_si512(xg.add(64 * i).cast());
        }
        for (a, vq) in accr.iter_mut().zip(&v) {
            for i in 0..4 {
                let s = i * S / 4;
                a[s] = _mm512_dpbusd_epi32(a[s], vq[i], xv[i]);
            }
        }
    }
}

/// The values of the packed group of `t` blocks at `w` (8 when `FULL`), in the order of the `x`
/// registers they meet: pieces (0,1), (2,3), (4,5), (6,7), lanes `l` and `8 + l` for block `l`,
/// zero past `t` in a short group. Prefetches ahead.
///
/// # Safety
/// `w` valid for `t` blocks; the CPU has this file's features.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn values<const FULL: bool>(w: *const u8, t: usize) -> [__m512i; 4] {
    let t = if FULL { LANES } else { t };
    let mut off = 0;
    while off < t * BLOCK_BYTES {
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(off + PREFETCH_BYTES).cast());
        off += 64;
    }
    let data = w.add(HEAD_BYTES * t);
    let mut v = [_mm512_setzero_si512(); 4];
    if FULL {
        for (i, vi) in v.iter_mut().enumerate() {
            *vi = _mm512_loadu_si512(data.add(64 * i).cast());
        }
    } else {
        // A short group's pieces are 4t bytes apart: `expandload` places pieces 2i and 2i + 1
        // (2t consecutive dwords) in lanes 0..t and 8..8 + t.
        let lanes = (1u16 << t) - 1;
        let mask: __mmask16 = lanes | (lanes << 8);
        for (i, vi) in v.iter_mut().enumerate() {
            *vi = _mm512_maskz_expandloadu_epi32(mask, data.add(8 * t * i).cast());
        }
    }
    v
}

/// `activations::quantize_row_lanes` in AVX-512, with its bits (every step is exact or
/// correctly rounded elementwise: the same division, clamp and rounding trick, the same maxima).
/// The portable loops do not vectorise well (each value's piece goes to its own place); this
/// quantizes a block as two registers of 16 values and narrows them to bytes with `vpmovdb`.
///
/// # Safety
/// The CPU has this file's features; `qs` holds whole groups (at least the row's blocks), `d` and
/// `offsets` [`LANE_SETS`] values; `x` is not empty.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn quantize_row_lanes(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    offsets: &mut [i32],
) {
    let nb = x.len().div_ceil(QK);
    assert!(nb > 0 && qs.len() >= nb * QK && qs.len().is_multiple_of(LANES * QK));
    assert!(d.len() == LANE_SETS && offsets.len() == LANE_SETS);
    // The ragged last block zero-padded.
    let mut last = [0.0f32; QK];
    let tail = &x[(nb - 1) * QK..];
    last[..tail.len()].copy_from_slice(tail);
    let block = |b: usize| -> *const f32 {
        if b + 1 < nb {
            x.as_ptr().add(b * QK)
        } else {
            last.as_ptr()
        }
    };
    let abs = _mm512_set1_epi32(0x7FFF_FFFF);
    // Per lane (block % 8): the largest |x| and the non-finite flag (`v·0`) at each of the 16
    // positions of a half block.
    let mut amax = [_mm512_setzero_ps(); LANES];
    let mut poison = [_mm512_setzero_ps(); LANES];
    for b in 0..nb {
        let p = block(b);
        let l = b % LANES;
        for h in 0..2 {
            let v = _mm512_loadu_ps(p.add(16 * h));
            let a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs));
            // `max(a, m)` returns `m` when `a` is NaN, as the portable `if a > m`.
            amax[l] = _mm512_max_ps(a, amax[l]);
            poison[l] = _mm512_add_ps(poison[l], _mm512_mul_ps(v, _mm512_setzero_ps()));
        }
    }
    for l in 0..LANES {
        let (mut m, mut p) = ([0.0f32; 16], [0.0f32; 16]);
        _mm512_storeu_ps(m.as_mut_ptr(), amax[l]);
        _mm512_storeu_ps(p.as_mut_ptr(), poison[l]);
        let a = m.iter().fold(0.0f32, |a, &v| if v > a { v } else { a });
        d[l] = if p.iter().sum::<f32>() != 0.0 {
            f32::NAN
        } else {
            a / 127.0
        };
    }
    let (round, round_bits) = (_mm512_set1_ps(12_582_912.0), _mm512_set1_epi32(0x4B40_0000));
    let (hi, lo) = (_mm512_set1_ps(127.0), _mm512_set1_ps(-127.0));
    let mut sums = [_mm512_setzero_si512(); LANES];
    let groups = qs.len() / (LANES * QK);
    let out = qs.as_mut_ptr();
    for b in 0..groups * LANES {
        let (g, l) = (b / LANES, b % LANES);
        let group = out.add(g * LANES * QK);
        // A NaN or zero scale gives q = 0.
        let usable = b < nb && d[l] > 0.0;
        let div = _mm512_set1_ps(d[l]);
        for h in 0..2 {
            let bytes = if usable {
                let v = _mm512_loadu_ps(block(b).add(16 * h));
                let y = _mm512_div_ps(v, div);
                let y = _mm512_max_ps(_mm512_min_ps(y, hi), lo);
                let r = _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(y, round)), round_bits);
                sums[l] = _mm512_add_epi32(sums[l], r);
                _mm512_cvtepi32_epi8(r)
            } else {
                _mm_setzero_si128()
            };
            // Pieces 4h..4h + 4 of the block: 4 bytes each, at their places in the group.
            let mut pieces = [0i32; 4];
            _mm_storeu_si128(pieces.as_mut_ptr().cast(), bytes);
            for (c, piece) in pieces.into_iter().enumerate() {
                let at = (4 * h + c) * 4 * LANES + 4 * l;
                std::ptr::write_unaligned(group.add(at).cast::<i32>(), piece);
            }
        }
    }
    for l in 0..LANES {
        offsets[l] = -128 * _mm512_reduce_add_epi32(sums[l]);
    }
}
