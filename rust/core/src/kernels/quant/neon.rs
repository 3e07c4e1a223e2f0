//! aarch64 Advanced SIMD dot products for [`super`]: packed weight rows against 1..=4 rows of
//! 8-bit activations, in exactly the arithmetic of `super::dot_portable`.
//!
//! A 16-byte half of a packed piece holds 4 values of each of 4 blocks (32-bit lane `l` = block
//! `l`). `vmull_s8` multiplies 8 signed bytes into `i16` (exact: at most 128·127), and
//! `vpadalq_s16` adds adjacent products into `i32` lanes, two per block; one `vpaddq_s32` at the
//! end of a group folds them into one exact sum per block. (`sdot` would do it in one
//! instruction, but its Rust intrinsic is not stable yet.) Nibbles go in as they are (0..15);
//! Q8_0 bytes, stored `q + 128`, are flipped back to `q` first; Q5_0's and Q5_1's nibbles get their fifth
//! bits from a full group's masks (`vtstq_u8` of each byte's bit), or in a short group from the
//! same lanes of its `qh` piece (a table lookup spreads each lane's `qh` byte onto the lane's
//! bytes first). The `f32` steps then run on two
//! 4-lane halves of the 8 lanes, the same operations lane by lane as on x86 (`vfmaq_f32` is a
//! fused multiply-add).
//!
//! Tested like every path: `tests.rs` compares it bit for bit with the portable kernel, which on
//! an x86 machine runs under qemu-aarch64 (README, "Development"; correctness only: an emulator
//! says nothing of speed).
//!
//! # Safety
//! NEON is part of every aarch64 target Rust supports; the functions here are `unsafe` only for
//! their raw pointers.

use std::arch::aarch64::*;

use half::f16;

use super::{QuantFormat, XRow, LANES, QK};

/// `y[r·ldy + j] = w_j · xs[r]` for every packed weight row `w_j` of `w` (rows of `rb` bytes)
/// and each of the 1..=4 rows of `xs`.
///
/// # Safety
/// `y` is valid for those writes; each `xs[r]` holds the blocks of a row of
/// `nb = rb / fmt.block_bytes()` blocks padded to whole groups (as `super::Activations` makes).
pub(super) unsafe fn dot(
    fmt: QuantFormat,
    w: &[u8],
    rb: usize,
    xs: &[XRow<'_>],
    y: *mut f32,
    ldy: usize,
) {
    let nb = rb / fmt.block_bytes();
    let nbp = nb.next_multiple_of(LANES);
    for x in xs {
        assert!(
            x.qs.len() >= nbp * QK && x.d.len() >= nbp && x.sum.len() >= nbp && x.s.len() >= nbp
        );
    }
    for (j, wj) in w.chunks_exact(rb).enumerate() {
        for (r, x) in xs.iter().enumerate() {
            *y.add(r * ldy + j) = dot_row(fmt, wj, nb, x);
        }
    }
}

/// One packed weight row of `nb` blocks against one row of `x`.
///
/// # Safety
/// `x` holds `nb` blocks padded to whole groups; `w` is `nb` blocks.
#[inline]
unsafe fn dot_row(fmt: QuantFormat, w: &[u8], nb: usize, x: &XRow<'_>) -> f32 {
    let bb = fmt.block_bytes();
    let head = super::pack::head_bytes(fmt);
    // Q4_1 and Q5_1 add `mw·s` per block.
    let mins = matches!(fmt, QuantFormat::Q4_1 | QuantFormat::Q5_1);
    let zero = vdupq_n_f32(0.0);
    let (mut acc, mut mins_acc) = ([zero; 2], [zero; 2]);
    for (b0, t) in super::pack::groups(nb) {
        let group = w[b0 * bb..(b0 + t) * bb].as_ptr();
        let isum = group_sums(fmt, group.add(head * t), t, x.qs.as_ptr().add(b0 * QK));
        let dw = scales(group, t);
        let mw = if mins {
            scales(group.add(2 * t), t)
        } else {
            [zero; 2]
        };
        for h in 0..2 {
            let mut s = isum[h];
            let xsum = || vld1q_s32(x.sum.as_ptr().add(b0 + 4 * h));
            match fmt {
                // Σ(nibble - 8)·x = Σ nibble·x - 8·Σx.
                QuantFormat::Q4_0 => s = vsubq_s32(s, vshlq_n_s32::<3>(xsum())),
                // Σ(q - 16)·x = Σ q·x - 16·Σx.
                QuantFormat::Q5_0 => s = vsubq_s32(s, vshlq_n_s32::<4>(xsum())),
                _ => {}
            }
            let scale = vmulq_f32(dw[h], vld1q_f32(x.d.as_ptr().add(b0 + 4 * h)));
            acc[h] = vfmaq_f32(acc[h], scale, vcvtq_f32_s32(s));
            if mins {
                mins_acc[h] =
                    vfmaq_f32(mins_acc[h], mw[h], vld1q_f32(x.s.as_ptr().add(b0 + 4 * h)));
            }
        }
    }
    let (lo, hi) = if mins {
        (
            vaddq_f32(acc[0], mins_acc[0]),
            vaddq_f32(acc[1], mins_acc[1]),
        )
    } else {
        (acc[0], acc[1])
    };
    // ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)), as `super::hsum`.
    let s = vaddq_f32(lo, hi);
    (vgetq_lane_f32::<0>(s) + vgetq_lane_f32::<2>(s))
        + (vgetq_lane_f32::<1>(s) + vgetq_lane_f32::<3>(s))
}

/// The `t` consecutive `f16` at `p` as two 4-lane halves of 8 `f32`, zero past `t`.
///
/// # Safety
/// `p` valid for `2·t` bytes.
#[inline]
unsafe fn scales(p: *const u8, t: usize) -> [float32x4_t; 2] {
    let mut v = [0.0f32; LANES];
    for (l, o) in v.iter_mut().enumerate().take(t) {
        *o = f16::from_le_bytes([*p.add(2 * l), *p.add(2 * l + 1)]).to_f32();
    }
    [vld1q_f32(v.as_ptr()), vld1q_f32(v.as_ptr().add(4))]
}

/// The exact integer dot product of each of the group's `t` blocks (zero past `t`) with the
/// group's `x` (`xg`, 8 pieces of 32 bytes), as two halves of 4 lanes.
///
/// # Safety
/// `values` valid for the group's value bytes (pieces of `4·t` bytes); `xg` for 256 bytes.
#[inline]
unsafe fn group_sums(
    fmt: QuantFormat,
    values: *const u8,
    t: usize,
    xg: *const i8,
) -> [int32x4_t; 2] {
    // Per half (blocks 0..4, 4..8): i32 lanes [b0, b0, b1, b1] and [b2, b2, b3, b3].
    let mut pairs = [[vdupq_n_s32(0); 2]; 2];
    let mut add = |w: int8x16_t, h: usize, c: usize| {
        let xv = vld1q_s8(xg.add(32 * c + 16 * h));
        pairs[h][0] = vpadalq_s16(pairs[h][0], vmull_s8(vget_low_s8(w), vget_low_s8(xv)));
        pairs[h][1] = vpadalq_s16(pairs[h][1], vmull_high_s8(w, xv));
    };
    let pieces = if fmt == QuantFormat::Q8_0 {
        QK / 4
    } else {
        QK / 8
    };
    // Q5_0's and Q5_1's nibble pieces follow their `qh` piece.
    let qh = super::pack::has_qh(fmt);
    let first = if qh { 1 } else { 0 };
    for c in 0..pieces {
        for h in 0..2 {
            // Half `h` of piece `c`: blocks 4h..4h+4, of which only those below t exist.
            let lanes = t.saturating_sub(4 * h).min(4);
            let bytes = piece_half(values.add(4 * ((first + c) * t + 4 * h)), lanes);
            if fmt == QuantFormat::Q8_0 {
                add(vreinterpretq_s8_u8(veorq_u8(bytes, vdupq_n_u8(0x80))), h, c);
            } else {
                let mut low = vandq_u8(bytes, vdupq_n_u8(0x0F));
                let mut high = vshrq_n_u8::<4>(bytes);
                if qh && t == LANES {
                    // A full group holds masks (`pack.rs`): half h of mask c is its bytes 2h, 2h+1.
                    let masks = values.add(2 * h);
                    low = vorrq_u8(low, mask_bits(masks.add(4 * c)));
                    high = vorrq_u8(high, mask_bits(masks.add(4 * (c + QK / 8))));
                } else if qh {
                    let lanes_qh = piece_half(values.add(16 * h), lanes);
                    low = vorrq_u8(low, fifth_bits(lanes_qh, c));
                    high = vorrq_u8(high, fifth_bits(lanes_qh, c + QK / 8));
                }
                add(vreinterpretq_s8_u8(low), h, c);
                add(vreinterpretq_s8_u8(high), h, c + QK / 8);
            }
        }
    }
    [
        vpaddq_s32(pairs[0][0], pairs[0][1]),
        vpaddq_s32(pairs[1][0], pairs[1][1]),
    ]
}

/// Byte `i` of the result is 0x10 where bit `i` of the 16 bits at `p` is set, else 0: half of a
/// full group's mask as the fifth bits of 16 nibbles.
///
/// # Safety
/// `p` valid for 2 bytes.
#[inline]
unsafe fn mask_bits(p: *const u8) -> uint8x16_t {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bytes = vcombine_u8(vdup_n_u8(*p), vdup_n_u8(*p.add(1)));
    vandq_u8(vtstq_u8(bytes, vld1q_u8(BIT.as_ptr())), vdupq_n_u8(0x10))
}

/// The fifth bits, in a short group, of the nibbles of values `4c..4c+4` of 4 blocks (lane `l` byte `j`: value
/// `4c + j` of block `l`), as 0x10 or 0 per byte, from the blocks' `qh` (`qh`, lane `l`): each
/// byte gets byte `c / 2` of its lane, then the test of its bit `4·(c % 2) + j`.
#[inline]
unsafe fn fifth_bits(qh: uint8x16_t, c: usize) -> uint8x16_t {
    let b = (c / 2) as u8;
    let spread: [u8; 16] = std::array::from_fn(|i| (i / 4 * 4) as u8 + b);
    let bit: [u8; 16] = std::array::from_fn(|i| 1 << (4 * (c % 2) + i % 4));
    let set = vtstq_u8(
        vqtbl1q_u8(qh, vld1q_u8(spread.as_ptr())),
        vld1q_u8(bit.as_ptr()),
    );
    vandq_u8(set, vdupq_n_u8(0x10))
}

/// `lanes` (0..=4) 4-byte lanes at `p`, the rest zero bytes (Q8_0 zero bytes flip to -128, met
/// by zero activations: they add nothing).
///
/// # Safety
/// `p` valid for `4·lanes` bytes.
#[inline]
unsafe fn piece_half(p: *const u8, lanes: usize) -> uint8x16_t {
    if lanes == 4 {
        vld1q_u8(p)
    } else {
        let mut b = [0u8; 16];
        std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), 4 * lanes);
        vld1q_u8(b.as_ptr())
    }
}
