//! aarch64 Advanced SIMD dot products of packed super-block rows (`super_block.rs`) against 1..=4
//! rows of 8-bit activations, in exactly the arithmetic of `super_block::dot_portable`.
//!
//! A packed super-block is one full group of the module's interleaving, so its 8 sub-blocks sit
//! in the 8 lanes, and a 16-byte half `h` of a 32-byte piece holds 4 values of each of the
//! sub-blocks `4h..4h+4`, as in `neon.rs`. The integer steps are `neon.rs`'s, kept apart for the
//! two halves of each sub-block, `Sa` (pieces 0..4) and `Sb` (pieces 4..8): `sdot` where the CPU
//! has `dotprod` (each sub-block's sum in its own `i32` lane), else `vmlal_s8` into `i16` lanes,
//! then `vpaddlq_s16` into `i32` lanes, two per sub-block, folded by one `vpaddq_s32`. A half's 4
//! products per `i16` lane stay exact for 6-bit values (at most `4·63·127 = 32004`); codebook
//! values (up to 127 in size) are widened every 2 pieces. Values
//! go in as signed bytes: `U4` and `U6` values (0..64) as they are, and codebook values
//! (IQ4_XS) as the table's signed values themselves (`vqtbl1q_s8` on the nibbles), which sums
//! `c·x = u·x - 128·x` with the offset already out, as AVX2 does. Then, on two 4-lane halves of
//! the 8 lanes, the integer combination with the offset, scales and minimums (exact in `i32`)
//! and the `f32` steps of the portable kernel.
//!
//! # Tiles
//! As in `neon.rs`: with two or more rows of `x`, tiles of up to 4 rows of `x` by 2 weight rows
//! ([`tile`]), each value vector unpacked once for all the tile's rows of `x` and each piece of `x`
//! loaded once for both weight rows; a row of `x` alone takes one weight row at a time. The inner
//! loop (4 pieces of one half of the values, one half of the lanes) holds the tile's `i16` sums (16
//! registers; 8 `i32` ones with `sdot`), its partial `isum` (8: `sc_a·(Sa - o·Xa)` waiting for
//! `Sb`), the two weight rows' value vectors (2), the piece of `x` (1) and the constants (2-3):
//! 29-30 of the 32 registers; per piece 4 loads of `x` and 2 of values (3 with the 6-bit plane) for
//! 16 multiply-adds (8 `sdot`), against 1 and 1 for 2 with one row of `x` by one weight row. The
//! `f32` accumulators are touched once per half super-block. Speed on aarch64 hardware is
//! unmeasured (correctness only, under qemu-aarch64).
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

use super::neon::{has_dotprod, sdot};
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
    macro_rules! rows {
        ($dot:expr) => {
            match args.3.len() {
                1 => dot_rows::<MINS, PER16, U6, CB, 1, $dot>(args),
                2 => dot_rows::<MINS, PER16, U6, CB, 2, $dot>(args),
                3 => dot_rows::<MINS, PER16, U6, CB, 3, $dot>(args),
                4 => dot_rows::<MINS, PER16, U6, CB, 4, $dot>(args),
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

/// What a type adds to the integer steps: `o·X` as a shift (the offsets are 0 or powers of two:
/// `super_block` tests it; codebook values are multiplied without their offset, so there is
/// none to take out) and, for [`Values::Codebook`] types, the 16 signed table values.
#[derive(Clone, Copy)]
struct TypeConsts {
    shift: Option<int32x4_t>,
    table: int8x16_t,
}

/// The loop over weight rows: pairs of them while two remain (with two or more rows of `x`:
/// the module docs' tiles), then one at a time.
///
/// # Safety
/// As [`dot`], with `R` rows of `x`.
unsafe fn dot_rows<
    const MINS: bool,
    const PER16: bool,
    const U6: bool,
    const CB: bool,
    const R: usize,
    const DOT: bool,
>(
    (sb, w, rb, xs, y, ldy): Args<'_, '_>,
) {
    let lay = const { Layout::new(MINS, PER16, U6) };
    let ns = rb / lay.bytes;
    let x: [XPtr; R] = std::array::from_fn(|r| XPtr::new(&xs[r], ns));
    let consts = TypeConsts {
        shift: (!CB && sb.offset != 0).then(|| vdupq_n_s32(sb.offset.trailing_zeros() as i32)),
        table: match sb.values {
            Values::Codebook(table) => vld1q_s8(table.as_ptr()),
            _ => vdupq_n_s8(0),
        },
    };
    let cols = w.len() / rb;
    let mut j = 0;
    if R > 1 && super::wide_tiles() {
        while j + 2 <= cols {
            let w0 = w.as_ptr().add(j * rb);
            let out = tile::<MINS, PER16, U6, CB, R, 2, DOT>([w0, w0.add(rb)], ns, consts, &x);
            for (r, row) in out.iter().enumerate() {
                *y.add(r * ldy + j) = row[0];
                *y.add(r * ldy + j + 1) = row[1];
            }
            j += 2;
        }
    }
    for j in j..cols {
        let out = tile::<MINS, PER16, U6, CB, R, 1, DOT>([w.as_ptr().add(j * rb)], ns, consts, &x);
        for (r, row) in out.iter().enumerate() {
            *y.add(r * ldy + j) = row[0];
        }
    }
}

/// `J` packed rows of `ns` super-blocks (at `w[j]`) against `R` rows of `x`, each output with
/// its own lanes, super-block after super-block, as `super_block::dot_portable` does.
///
/// # Safety
/// Each `w[j]` valid for `ns` super-blocks; each row of `x` holds them.
#[inline(always)]
unsafe fn tile<
    const MINS: bool,
    const PER16: bool,
    const U6: bool,
    const CB: bool,
    const R: usize,
    const J: usize,
    const DOT: bool,
>(
    w: [*const u8; J],
    ns: usize,
    consts: TypeConsts,
    x: &[XPtr; R],
) -> [[f32; J]; R] {
    let lay = const { Layout::new(MINS, PER16, U6) };
    let zero = vdupq_n_f32(0.0);
    let mut acc = [[[zero; 2]; J]; R];
    let mut mins = [[[zero; 2]; J]; R];
    for s in 0..ns {
        let b: [*const u8; J] = std::array::from_fn(|j| w[j].add(s * lay.bytes));
        group::<MINS, PER16, U6, CB, R, J, DOT>(b, s, consts, x, &mut acc, &mut mins);
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|j| {
            let half = |h: usize| {
                if MINS {
                    vsubq_f32(acc[r][j][h], mins[r][j][h])
                } else {
                    acc[r][j][h]
                }
            };
            // ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)), as `super::portable::hsum`.
            let s = vaddq_f32(half(0), half(1));
            (vgetq_lane_f32::<0>(s) + vgetq_lane_f32::<2>(s))
                + (vgetq_lane_f32::<1>(s) + vgetq_lane_f32::<3>(s))
        })
    })
}

/// A packed super-block's scales: `d` and `dmin` on 4 lanes, and per half `h` of the lanes
/// (sub-blocks `4h..4h+4`) the integer scales and minimums of the sub-blocks' value halves a
/// (0..16) and b (16..32); with one scale per 32 values, a's serve b too.
#[derive(Clone, Copy)]
struct Head {
    d: float32x4_t,
    dmin: float32x4_t,
    sc_a: [int32x4_t; 2],
    sc_b: [int32x4_t; 2],
    m_a: [int32x4_t; 2],
    m_b: [int32x4_t; 2],
}

/// The scales of the packed super-block at `w`.
///
/// # Safety
/// `w` valid for the super-block.
#[inline(always)]
unsafe fn head<const MINS: bool, const PER16: bool, const U6: bool>(w: *const u8) -> Head {
    let lay = const { Layout::new(MINS, PER16, U6) };
    let f16_at = |at: usize| f16::from_le_bytes([*w.add(at), *w.add(at + 1)]).to_f32();
    let sc_a = widen_i8(w.add(lay.sc));
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
    Head {
        d: vdupq_n_f32(f16_at(0)),
        dmin: vdupq_n_f32(if MINS { f16_at(lay.dmin) } else { 0.0 }),
        sc_a,
        sc_b: if PER16 {
            widen_i8(w.add(lay.sc + LANES))
        } else {
            sc_a
        },
        m_a,
        m_b,
    }
}

/// The packed super-blocks at `w[j]` (super-block `s` of each weight row) against `R` rows of
/// `x`: per half `h` of the lanes, the exact `isum` of every row of `x` and weight row
/// ([`isums`]), then per output the `f32` steps on that half (`acc[r][j][h]`, `mins[r][j][h]`).
///
/// # Safety
/// `w[j]` valid for the super-block; each row holds super-block `s`.
#[inline(always)]
unsafe fn group<
    const MINS: bool,
    const PER16: bool,
    const U6: bool,
    const CB: bool,
    const R: usize,
    const J: usize,
    const DOT: bool,
>(
    w: [*const u8; J],
    s: usize,
    consts: TypeConsts,
    x: &[XPtr; R],
    acc: &mut [[[float32x4_t; 2]; J]; R],
    mins: &mut [[[float32x4_t; 2]; J]; R],
) {
    let heads: [Head; J] = std::array::from_fn(|j| head::<MINS, PER16, U6>(w[j]));
    for h in 0..2 {
        let isum = isums::<MINS, PER16, U6, CB, R, J, DOT>(w, s, h, consts, x, &heads);
        for r in 0..R {
            let dx = vld1q_f32(x[r].d.add(LANES * s + 4 * h));
            for j in 0..J {
                let hd = &heads[j];
                acc[r][j][h] =
                    vfmaq_f32(acc[r][j][h], vmulq_f32(hd.d, dx), vcvtq_f32_s32(isum[r][j]));
                if MINS {
                    let xa = vld1q_s32(x[r].half.add(2 * LANES * s + 4 * h));
                    let xb = vld1q_s32(x[r].half.add(2 * LANES * s + LANES + 4 * h));
                    let msum = vmlaq_s32(vmulq_s32(hd.m_a[h], xa), hd.m_b[h], xb);
                    mins[r][j][h] =
                        vfmaq_f32(mins[r][j][h], vmulq_f32(hd.dmin, dx), vcvtq_f32_s32(msum));
                }
            }
        }
    }
}

/// `isum = sc_a·(Sa - o·Xa) + sc_b·(Sb - o·Xb)` of lanes `4h..4h+4` of super-block `s`, for
/// every row of `x` and weight row (`[r][j]`), exact in `i32`: the values of half a (pieces
/// 0..4) against `x` into `i16` sums, folded, scaled; then half b.
///
/// # Safety
/// As [`group`].
#[inline(always)]
unsafe fn isums<
    const MINS: bool,
    const PER16: bool,
    const U6: bool,
    const CB: bool,
    const R: usize,
    const J: usize,
    const DOT: bool,
>(
    w: [*const u8; J],
    s: usize,
    h: usize,
    consts: TypeConsts,
    x: &[XPtr; R],
    heads: &[Head; J],
) -> [[int32x4_t; J]; R] {
    let lay = const { Layout::new(MINS, PER16, U6) };
    let mut isum = [[vdupq_n_s32(0); J]; R];
    for half in 0..2 {
        // Per row of x and weight row, with `sdot` (`DOT`): one i32 lane per sub-block, the
        // sums themselves. Without: lanes [l0 ×4, l1 ×4] and [l2 ×4, l3 ×4] in i16 (and their
        // widened sums, for codebook values).
        let mut sums = [[vdupq_n_s32(0); J]; R];
        let mut wide = [[[vdupq_n_s32(0); 2]; J]; R];
        let mut narrow = [[[vdupq_n_s16(0); 2]; J]; R];
        for p in 0..4 {
            let c = 4 * half + p;
            let v: [int8x16_t; J] =
                std::array::from_fn(|j| value::<U6, CB>(w[j], &lay, consts.table, c, h));
            for r in 0..R {
                let xv = vld1q_s8(x[r].qs.add(s * VALUES + 32 * c + 16 * h));
                for j in 0..J {
                    if DOT {
                        sums[r][j] = sdot(sums[r][j], v[j], xv);
                        continue;
                    }
                    let n = &mut narrow[r][j];
                    n[0] = vmlal_s8(n[0], vget_low_s8(v[j]), vget_low_s8(xv));
                    n[1] = vmlal_high_s8(n[1], v[j], xv);
                    if CB && p % 2 == 1 {
                        // Codebook products reach 127·127: two per i16 lane, then widen.
                        wide[r][j] = [
                            vpadalq_s16(wide[r][j][0], n[0]),
                            vpadalq_s16(wide[r][j][1], n[1]),
                        ];
                        *n = [vdupq_n_s16(0); 2];
                    }
                }
            }
        }
        for r in 0..R {
            let xh = vld1q_s32(x[r].half.add(2 * LANES * s + LANES * half + 4 * h));
            let minus_offset = |v: int32x4_t| match consts.shift {
                Some(shift) => vsubq_s32(v, vshlq_s32(xh, shift)),
                None => v,
            };
            for j in 0..J {
                let sum = if DOT {
                    sums[r][j]
                } else {
                    let [lo, hi] = if CB {
                        wide[r][j]
                    } else {
                        narrow[r][j].map(|n| vpaddlq_s16(n))
                    };
                    vpaddq_s32(lo, hi)
                };
                let sum = minus_offset(sum);
                isum[r][j] = if half == 0 {
                    vmulq_s32(heads[j].sc_a[h], sum)
                } else {
                    vmlaq_s32(isum[r][j], heads[j].sc_b[h], sum)
                };
            }
        }
    }
    isum
}

/// Half `h` of the super-block's value piece `c` (values `4c..4c+4` of sub-blocks
/// `4h..4h+4`, 4 bytes a sub-block) as signed bytes: for `c < 4` the low nibbles of nibble
/// vector `c`, else the high nibbles of vector `c - 4`; with [`Values::U6`] their top 2 bits from
/// the plane; with a codebook, the table's values.
///
/// # Safety
/// `w` valid for the super-block.
#[inline(always)]
unsafe fn value<const U6: bool, const CB: bool>(
    w: *const u8,
    lay: &Layout,
    table: int8x16_t,
    c: usize,
    h: usize,
) -> int8x16_t {
    let (p, high) = (c % 4, c / 4);
    let n = vld1q_u8(w.add(lay.values + 32 * p + 16 * h));
    let mut v = if high == 0 {
        vandq_u8(n, vdupq_n_u8(0x0F))
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
        v = vorrq_u8(v, vandq_u8(bits, vdupq_n_u8(0x30)));
    }
    if CB {
        vqtbl1q_s8(table, v)
    } else {
        vreinterpretq_s8_u8(v)
    }
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
