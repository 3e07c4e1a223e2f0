//! aarch64 Advanced SIMD dot products of packed super-block rows (`super_block.rs`) against 1..=4
//! rows of 8-bit activations, in exactly the arithmetic of `super_block::dot_portable`.
//!
//! A packed super-block is one full group of the module's interleaving, so its 8 sub-blocks sit
//! in the 8 lanes, and a 16-byte half `h` of a 32-byte piece holds 4 values of each of the
//! sub-blocks `4h..4h+4`, as in `neon.rs`. The integer steps are `neon.rs`'s: `vmull_s8` (exact
//! in `i16`: at most 128·127) and `vpadalq_s16` into `i32` lanes, two per sub-block, folded by
//! one `vpaddq_s32`; kept apart for the two halves of each sub-block, `Sa` (pieces 0..4) and `Sb`
//! (pieces 4..8). Values go in as signed bytes: `U4` and `U6` values (0..64) as they are, and
//! codebook values (IQ4_XS) as the table's signed values themselves (`vqtbl1q_s8` on the
//! nibbles), which sums `c·x = u·x - 128·x` with the offset already out, as AVX2 does. Then, on
//! two 4-lane halves of the 8 lanes, the integer combination with the offset, scales and
//! minimums (exact in `i32`) and the `f32` steps of the portable kernel.
//!
//! The type's shape (minimums or not, scales per 16 or 32, 4- or 6-bit values, a codebook) is a
//! set of const generics, as in `x86_super.rs`, so a new type of an existing shape needs no code
//! here.
//!
//! # Safety
//! NEON is part of every aarch64 target Rust supports; the functions here are `unsafe` only for
//! their raw pointers.

use std::arch::aarch64::*;

use half::f16;

use super::super_block::{dispatch_shape, Layout, SuperBlock, Values, VALUES};
use super::{XRow, LANES};

/// Raw pointers to one quantized row of `x` (see `super::XRow`).
#[derive(Clone, Copy)]
struct XPtr {
    qs: *const i8,
    d: *const f32,
    half: *const i32,
}

impl XPtr {
    /// Row `x`, checked to hold `ns` super-blocks.
    fn new(x: &XRow<'_>, ns: usize) -> XPtr {
        assert!(
            x.qs.len() >= ns * VALUES && x.d.len() >= ns * LANES && x.half.len() >= 2 * ns * LANES,
            "x row shorter than {ns} super-blocks"
        );
        XPtr {
            qs: x.qs.as_ptr(),
            d: x.d.as_ptr(),
            half: x.half.as_ptr(),
        }
    }
}

/// `y[r·ldy + j] = w_j · xs[r]` for every packed row `w_j` of `w` (rows of `rb` bytes, whole
/// super-blocks of type `sb`) and each of the 1..=4 rows of `xs`.
///
/// # Safety
/// `y` is valid for those writes; each `xs[r]` is a row from `super::Activations` for `rb`'s
/// number of values.
pub(super) unsafe fn dot(
    sb: &SuperBlock,
    w: &[u8],
    rb: usize,
    xs: &[XRow<'_>],
    y: *mut f32,
    ldy: usize,
) {
    let args = (sb, w, rb, xs, y, ldy);
    dispatch_shape!(sb, rows, args)
}

/// The arguments of [`dot`].
type Args<'a, 'b> = (
    &'a SuperBlock,
    &'a [u8],
    usize,
    &'a [XRow<'b>],
    *mut f32,
    usize,
);

/// # Safety
/// As [`dot`].
unsafe fn rows<const MINS: bool, const PER16: bool, const U6: bool, const CB: bool>(
    args: Args<'_, '_>,
) {
    match args.3.len() {
        1 => dot_rows::<MINS, PER16, U6, CB, 1>(args),
        2 => dot_rows::<MINS, PER16, U6, CB, 2>(args),
        3 => dot_rows::<MINS, PER16, U6, CB, 3>(args),
        4 => dot_rows::<MINS, PER16, U6, CB, 4>(args),
        r => unreachable!("{r} rows of x at once"),
    }
}

/// # Safety
/// As [`dot`], with `R` rows of `x`.
unsafe fn dot_rows<
    const MINS: bool,
    const PER16: bool,
    const U6: bool,
    const CB: bool,
    const R: usize,
>(
    (sb, w, rb, xs, y, ldy): Args<'_, '_>,
) {
    let lay = const { Layout::new(MINS, PER16, U6) };
    let ns = rb / lay.bytes;
    let x: [XPtr; R] = std::array::from_fn(|r| XPtr::new(&xs[r], ns));
    // `o·X` as a shift (the offsets are 0 or powers of two: `super_block` tests it); codebook
    // values are multiplied without their offset, so there is none to take out.
    let shift = (!CB && sb.offset != 0).then(|| vdupq_n_s32(sb.offset.trailing_zeros() as i32));
    let table = match sb.values {
        Values::Codebook(table) => vld1q_s8(table.as_ptr()),
        _ => vdupq_n_s8(0),
    };
    let zero = vdupq_n_f32(0.0);
    for (j, wj) in w.chunks_exact(rb).enumerate() {
        let mut acc = [[zero; 2]; R];
        let mut mins = [[zero; 2]; R];
        for s in 0..ns {
            let b = wj.as_ptr().add(s * lay.bytes);
            group::<MINS, PER16, U6, CB, R>(b, s, shift, table, &x, &mut acc, &mut mins);
        }
        for r in 0..R {
            let half = |h: usize| {
                if MINS {
                    vsubq_f32(acc[r][h], mins[r][h])
                } else {
                    acc[r][h]
                }
            };
            // ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)), as `super::portable::hsum`.
            let s = vaddq_f32(half(0), half(1));
            *y.add(r * ldy + j) = (vgetq_lane_f32::<0>(s) + vgetq_lane_f32::<2>(s))
                + (vgetq_lane_f32::<1>(s) + vgetq_lane_f32::<3>(s));
        }
    }
}

/// The packed super-block at `w` (super-block `s` of the row) against `R` rows of `x`: the
/// values unpacked once, then per row the exact sums `Sa`, `Sb` and the `f32` steps, on the two
/// 4-lane halves of the 8 lanes (`acc[r][h]`, `mins[r][h]`: sub-blocks `4h..4h+4`).
///
/// # Safety
/// `w` valid for the super-block; each row holds super-block `s`.
#[inline(always)]
unsafe fn group<
    const MINS: bool,
    const PER16: bool,
    const U6: bool,
    const CB: bool,
    const R: usize,
>(
    w: *const u8,
    s: usize,
    shift: Option<int32x4_t>,
    table: int8x16_t,
    x: &[XPtr; R],
    acc: &mut [[float32x4_t; 2]; R],
    mins: &mut [[float32x4_t; 2]; R],
) {
    let lay = const { Layout::new(MINS, PER16, U6) };
    let u = values::<U6, CB>(w, &lay, table);
    let f16_at = |at: usize| f16::from_le_bytes([*w.add(at), *w.add(at + 1)]).to_f32();
    let d = vdupq_n_f32(f16_at(0));
    let dmin = vdupq_n_f32(if MINS { f16_at(lay.dmin) } else { 0.0 });
    // Per half h (sub-blocks 4h..4h+4): the scales (and minimums) of the sub-blocks' value
    // halves a (0..16) and b (16..32); with one scale per 32 values, a's serve b too.
    let sc_a = widen_i8(w.add(lay.sc));
    let sc_b = if PER16 {
        widen_i8(w.add(lay.sc + LANES))
    } else {
        sc_a
    };
    let (m_a, m_b) = if MINS {
        let m_a = widen_u8(w.add(lay.m));
        (
            m_a,
            if PER16 {
                widen_u8(w.add(lay.m + LANES))
            } else {
                m_a
            },
        )
    } else {
        ([vdupq_n_s32(0); 2], [vdupq_n_s32(0); 2])
    };
    for r in 0..R {
        let xg = x[r].qs.add(s * VALUES);
        let (sa, sb) = sums(&u, xg);
        for h in 0..2 {
            let xa = vld1q_s32(x[r].half.add(2 * LANES * s + 4 * h));
            let xb = vld1q_s32(x[r].half.add(2 * LANES * s + LANES + 4 * h));
            let minus_offset = |v: int32x4_t, xs: int32x4_t| match shift {
                Some(shift) => vsubq_s32(v, vshlq_s32(xs, shift)),
                None => v,
            };
            let isum = vmlaq_s32(
                vmulq_s32(sc_a[h], minus_offset(sa[h], xa)),
                sc_b[h],
                minus_offset(sb[h], xb),
            );
            let dx = vld1q_f32(x[r].d.add(LANES * s + 4 * h));
            acc[r][h] = vfmaq_f32(acc[r][h], vmulq_f32(d, dx), vcvtq_f32_s32(isum));
            if MINS {
                let msum = vmlaq_s32(vmulq_s32(m_a[h], xa), m_b[h], xb);
                mins[r][h] = vfmaq_f32(mins[r][h], vmulq_f32(dmin, dx), vcvtq_f32_s32(msum));
            }
        }
    }
}

/// The super-block's values as signed bytes: `[c][h]` is half `h` of piece `c` (values
/// `4c..4c+4` of sub-blocks `4h..4h+4`, 4 bytes a sub-block): for `c < 4` the low nibbles of
/// nibble vector `c`, else the high nibbles of vector `c - 4`; with [`Values::U6`] their top 2
/// bits from the plane; with a codebook, the table's values.
///
/// # Safety
/// `w` valid for the super-block.
#[inline(always)]
unsafe fn values<const U6: bool, const CB: bool>(
    w: *const u8,
    lay: &Layout,
    table: int8x16_t,
) -> [[int8x16_t; 2]; 8] {
    let low = vdupq_n_u8(0x0F);
    let top = vdupq_n_u8(0x30);
    std::array::from_fn(|c| {
        std::array::from_fn(|h| {
            let (p, high) = (c % 4, c / 4);
            let n = vld1q_u8(w.add(lay.values + 32 * p + 16 * h));
            let mut v = if high == 0 {
                vandq_u8(n, low)
            } else {
                vshrq_n_u8::<4>(n)
            };
            if U6 {
                // Nibble byte 32p + 16h is served by plane byte (32p + 16h) % 64, in field
                // 2·(p / 2) + high: move it to bits 4-5.
                let plane = vld1q_u8(w.add(lay.plane + 32 * (p % 2) + 16 * h));
                let bits = match 2 * (p / 2) + high {
                    0 => vshlq_n_u8::<4>(plane),
                    1 => vshlq_n_u8::<2>(plane),
                    2 => plane,
                    _ => vshrq_n_u8::<2>(plane),
                };
                v = vorrq_u8(v, vandq_u8(bits, top));
            }
            if CB {
                vqtbl1q_s8(table, v)
            } else {
                vreinterpretq_s8_u8(v)
            }
        })
    })
}

/// The exact sums `Sa` (pieces 0..4) and `Sb` (pieces 4..8) of the values `u` times the
/// super-block's `x` (`xg`, 8 pieces of 32 bytes), per half `h` of the lanes.
///
/// # Safety
/// `xg` valid for 256 bytes.
#[inline(always)]
unsafe fn sums(u: &[[int8x16_t; 2]; 8], xg: *const i8) -> ([int32x4_t; 2], [int32x4_t; 2]) {
    // Per value half (a, b) and lane half h: i32 lanes [l0, l0, l1, l1] and [l2, l2, l3, l3].
    let mut pairs = [[[vdupq_n_s32(0); 2]; 2]; 2];
    for (c, uc) in u.iter().enumerate() {
        for (h, &v) in uc.iter().enumerate() {
            let xv = vld1q_s8(xg.add(32 * c + 16 * h));
            let p = &mut pairs[c / 4][h];
            p[0] = vpadalq_s16(p[0], vmull_s8(vget_low_s8(v), vget_low_s8(xv)));
            p[1] = vpadalq_s16(p[1], vmull_high_s8(v, xv));
        }
    }
    let fold = |p: [int32x4_t; 2]| vpaddq_s32(p[0], p[1]);
    (
        [fold(pairs[0][0]), fold(pairs[0][1])],
        [fold(pairs[1][0]), fold(pairs[1][1])],
    )
}

/// The 8 signed bytes at `p`, as two halves of 4 `i32`.
///
/// # Safety
/// `p` valid for 8 bytes.
#[inline(always)]
unsafe fn widen_i8(p: *const u8) -> [int32x4_t; 2] {
    let v = vmovl_s8(vld1_s8(p.cast()));
    [vmovl_s16(vget_low_s16(v)), vmovl_high_s16(v)]
}

/// The 8 unsigned bytes at `p`, as two halves of 4 `i32`.
///
/// # Safety
/// `p` valid for 8 bytes.
#[inline(always)]
unsafe fn widen_u8(p: *const u8) -> [int32x4_t; 2] {
    let v = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(p)));
    [vmovl_s16(vget_low_s16(v)), vmovl_high_s16(v)]
}
