//! aarch64 Advanced SIMD kernel for int8 rows, in exactly the arithmetic of `int8::dot_portable`.
//!
//! A 16-byte half `h` of a packed piece holds 4 values of each of the blocks `4h..4h+4`
//! (`neon.rs`), so its 32-bit lane `l` belongs to lane set `4h + l` of `int8.rs`. Each output
//! keeps two 4-lane `i32` accumulators over the whole row (one per half: sets `4h..4h + 4`). The
//! weights, stored `q + 128`, are flipped back to signed `q`; the integer sums take one of two
//! paths, chosen at run time (`neon::has_dotprod`), both exact:
//!
//! * with `dotprod`, one `sdot` per half piece adds each lane's 4 byte products into its lane;
//! * without it (Armv8.0), `vmull_s8`/`vmlal_s8` add the products of two pieces (`2s` and
//!   `2s + 1`) in `i16` lanes (at most `2·128·127 = 32512`), `vpaddlq_s16` and `vpadalq_s16` fold
//!   the group's four such pairs into `i32` lanes, two per block, and one `vpaddq_s32` per half
//!   makes them one sum per block, added to its accumulator.
//!
//! Nothing but integer work happens per group. At the end: conversion, the product by the sets'
//! scales, `super::hsum`'s order, the row's scale.
//!
//! Tiles: up to [`ROWS_PER_TILE`] rows of `x` by one weight row: 8 accumulators, the two halves
//! of a weight piece and of a piece of `x`, the temporaries of the path without `sdot`; each
//! weight piece is loaded and flipped once for the tile's rows. Speed unmeasured on aarch64
//! hardware (correctness under qemu-aarch64, with and without `dotprod`: README, "Development").
//!
//! # Safety
//! NEON is part of every aarch64 target Rust supports; the functions here are `unsafe` for their
//! raw pointers (and `sdot` only where `has_dotprod`).

use std::arch::aarch64::*;

use half::f16;

use super::activations::LANE_SETS;
use super::int8::{BLOCK_BYTES, HEAD_BYTES};
use super::neon::{has_dotprod, sdot};
use super::pack::groups;
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
/// `y` is valid for those writes; each `xs[r]` holds the blocks of a row of `rb / BLOCK_BYTES` blocks
/// padded to whole groups, quantized by lane sets (as `super::Activations::quantize_lanes`
/// makes).
pub(super) unsafe fn dot(w: &[u8], rb: usize, xs: &[XRow<'_>], y: *mut f32, ldy: usize) {
    macro_rules! rows {
        ($dot:expr) => {
            match xs.len() {
                1 => rows::<1, $dot>(w, rb, xs, y, ldy),
                2 => rows::<2, $dot>(w, rb, xs, y, ldy),
                3 => rows::<3, $dot>(w, rb, xs, y, ldy),
                4 => rows::<4, $dot>(w, rb, xs, y, ldy),
                r => unreachable!("{r} rows of x at once"),
            }
        };
    }
    if has_dotprod() {
        rows!(true)
    } else {
        rows!(false)
    }
}

/// The loop over weight rows, so that the row pointers are set up once, not per weight row.
///
/// # Safety
/// As `dot`, with `xs.len() == R`; `DOT` only where `has_dotprod`.
unsafe fn rows<const R: usize, const DOT: bool>(
    w: &[u8],
    rb: usize,
    xs: &[XRow<'_>],
    y: *mut f32,
    ldy: usize,
) {
    let nb = rb / BLOCK_BYTES;
    let mut x = [XPtr {
        qs: std::ptr::null(),
        lane_d: std::ptr::null(),
    }; R];
    for (p, row) in x.iter_mut().zip(xs) {
        // Rows quantized by lane sets (`lane_offsets` is for unsigned weights: not needed here).
        assert!(
            row.qs.len() >= nb.next_multiple_of(LANES) * QK
                && row.lane_d.len() == LANE_SETS
                && row.lane_offsets.len() == LANE_SETS
        );
        *p = XPtr {
            qs: row.qs.as_ptr(),
            lane_d: row.lane_d.as_ptr(),
        };
    }
    for (j, wj) in w.chunks_exact(rb).enumerate() {
        let out = tile::<R, DOT>(wj.as_ptr(), nb, &x);
        for (r, v) in out.iter().enumerate() {
            *y.add(r * ldy + j) = *v;
        }
    }
}

/// The packed int8 row of `nb` blocks at `w` against `R` rows of `x`.
///
/// # Safety
/// `w` valid for `nb` blocks; the rows as `dot` requires; `DOT` only where `has_dotprod`.
#[inline(always)]
unsafe fn tile<const R: usize, const DOT: bool>(
    w: *const u8,
    nb: usize,
    x: &[XPtr; R],
) -> [f32; R] {
    // acc[r][h]: row r's sums of half h, lane l for set 4h + l.
    let mut acc = [[vdupq_n_s32(0); 2]; R];
    for (b0, t) in groups(nb) {
        group::<R, DOT>(w.add(b0 * BLOCK_BYTES), b0, t, x, &mut acc);
    }
    let scale = f16::from_le_bytes([*w, *w.add(1)]).to_f32();
    let mut out = [0.0; R];
    for ((o, acc), xr) in out.iter_mut().zip(&acc).zip(x) {
        // f_l = dx_l · I_l for the lanes l of each half.
        let f = |h: usize| vmulq_f32(vld1q_f32(xr.lane_d.add(4 * h)), vcvtq_f32_s32(acc[h]));
        // ((f0+f4) + (f2+f6)) + ((f1+f5) + (f3+f7)), as `super::hsum`.
        let s = vaddq_f32(f(0), f(1));
        *o = ((vgetq_lane_f32::<0>(s) + vgetq_lane_f32::<2>(s))
            + (vgetq_lane_f32::<1>(s) + vgetq_lane_f32::<3>(s)))
            * scale;
    }
    out
}

/// The packed group of `t` blocks at `g` (blocks `b0..b0 + t` of the row) against `R` rows of
/// `x`, into the accumulators. Lanes past `t` in a short group hold zero bytes, flipped to
/// `q = -128` and met by the zero padding of `x`: they add nothing.
///
/// # Safety
/// `g` valid for `t` blocks; each row of `x` holds the group's 8 blocks; `DOT` only where
/// `has_dotprod`.
#[inline(always)]
unsafe fn group<const R: usize, const DOT: bool>(
    g: *const u8,
    b0: usize,
    t: usize,
    x: &[XPtr; R],
    acc: &mut [[int32x4_t; 2]; R],
) {
    let data = g.add(HEAD_BYTES * t);
    for h in 0..2 {
        // Blocks of this half that exist (0..=4).
        let lanes = t.saturating_sub(4 * h).min(4);
        // Half h of piece c, signed (`q`). (`wrapping_add`: in a short group the address of a
        // half with no blocks may lie past the row; nothing is read there.)
        let w = |c: usize| {
            let b = piece_half(data.wrapping_add(4 * (c * t + 4 * h)), lanes);
            vreinterpretq_s8_u8(veorq_u8(b, vdupq_n_u8(0x80)))
        };
        let xh = |xr: &XPtr, c: usize| vld1q_s8(xr.qs.add(b0 * QK + 32 * c + 16 * h));
        if DOT {
            for c in 0..QK / 4 {
                let wc = w(c);
                for (a, xr) in acc.iter_mut().zip(x) {
                    a[h] = sdot(a[h], wc, xh(xr, c));
                }
            }
        } else {
            let wv: [int8x16_t; 8] = std::array::from_fn(w);
            for (a, xr) in acc.iter_mut().zip(x) {
                let xv: [int8x16_t; 8] = std::array::from_fn(|c| xh(xr, c));
                // Pieces 2s and 2s + 1: two products per i16 lane.
                let pair_lo = |s: usize| {
                    vmlal_s8(
                        vmull_s8(vget_low_s8(wv[2 * s]), vget_low_s8(xv[2 * s])),
                        vget_low_s8(wv[2 * s + 1]),
                        vget_low_s8(xv[2 * s + 1]),
                    )
                };
                let pair_hi = |s: usize| {
                    vmlal_high_s8(
                        vmull_high_s8(wv[2 * s], xv[2 * s]),
                        wv[2 * s + 1],
                        xv[2 * s + 1],
                    )
                };
                // i32 lanes [b0, b0, b1, b1] and [b2, b2, b3, b3] of this half.
                let (mut lo, mut hi) = (vpaddlq_s16(pair_lo(0)), vpaddlq_s16(pair_hi(0)));
                for s in 1..4 {
                    lo = vpadalq_s16(lo, pair_lo(s));
                    hi = vpadalq_s16(hi, pair_hi(s));
                }
                a[h] = vaddq_s32(a[h], vpaddq_s32(lo, hi));
            }
        }
    }
}

/// `lanes` (0..=4) 4-byte lanes at `p`, the rest zero bytes.
///
/// # Safety
/// `p` valid for `4·lanes` bytes.
#[inline(always)]
unsafe fn piece_half(p: *const u8, lanes: usize) -> uint8x16_t {
    if lanes == 4 {
        vld1q_u8(p)
    } else {
        let mut b = [0u8; 16];
        std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), 4 * lanes);
        vld1q_u8(b.as_ptr())
    }
}
