//! aarch64 Advanced SIMD dot products for [`super`]: packed weight rows against 1..=4 rows of
//! 8-bit activations, in exactly the arithmetic of `super::dot_portable`.
//!
//! A 16-byte half `h` of a packed piece holds 4 values of each of the blocks `4h..4h+4`
//! (32-bit lane `l` = block `4h + l`). The integer sums take one of two paths, chosen at run time
//! ([`has_dotprod`]), both exact, so both give the same `i32` per block:
//!
//! * with the `dotprod` extension (most cores since Armv8.2, every Armv8.4 one), [`sdot`] adds
//!   each 32-bit lane's 4 byte products into that lane: one instruction per half piece, and
//!   every block's sum is in its own lane, as `vpdpbusd` makes it on x86;
//! * without it (baseline Armv8.0), `vmull_s8`/`vmlal_s8` multiply 8 signed bytes into `i16`
//!   lanes, two pieces' products added there (exact: at most `2·128·127 = 32512` for Q8_0), and
//!   `vpadalq_s16` adds adjacent `i16` into `i32` lanes, two per block; one `vpaddq_s32` at the
//!   end of a half folds them into one sum per block. The nibble types' products (at most
//!   `31·127`) stay in `i16` for a whole half, 8 pieces (at most 31496), before one widening.
//!
//! Nibbles go in as they are (0..15); Q8_0 bytes, stored `q + 128`, are flipped back to `q`
//! first; Q5_0's and Q5_1's nibbles get their fifth bits from a full group's masks (`vtstq_u8`
//! of each byte's bit), or in a short group from the same lanes of its `qh` piece (a table
//! lookup spreads each lane's `qh` byte onto the lane's bytes first). The `f32` steps then run
//! on the two 4-lane halves of the 8 lanes, the same operations lane by lane as on x86
//! (`vfmaq_f32` is a fused multiply-add).
//!
//! # Tiles
//! With two or more rows of `x`, the weight rows go in pairs: a tile of up to 4 rows of `x` by 2
//! weight rows ([`tile`]), each weight piece loaded and unpacked once for all the tile's rows of
//! `x` and each piece of `x` loaded once for both weight rows. The shape is set by the 32
//! q-registers of Advanced SIMD: the inner loop (a half of a group, piece after piece) keeps the
//! tile's integer sums, 2 registers per row of `x` and weight row (16) without `sdot`, the two
//! weight rows' unpacked pieces (4), the two pieces of `x` in use (2) and the constants (1-3):
//! about 25. Per two pieces of a half it makes 8 loads of `x` and 2 of weights (4 for Q8_0) for 16
//! `i16` multiply-adds (8 `sdot`), against 2 and 1 for 2 one row at a time (the kernel before the
//! tiles): 0.63 loads per multiply-add instead of 1.5, and each unpacking of nibbles and fifth bits
//! serves 4 rows. A wider tile (8 rows of `x`, or 4 weight rows) would need 32 registers of integer
//! sums alone without `sdot`; with it the sums take 8, so a wider tile might pay there, which only
//! a measurement on hardware can tell. The `f32` accumulators (16, and 16 more for the minimums)
//! are touched once per half of a group, so where they do not fit the registers their loads and
//! stores cost little. A row of `x` alone (decoding) takes the weight rows one at a time, as on
//! x86. The speed of these shapes on aarch64 hardware is unmeasured (only their correctness, under
//! qemu-aarch64).
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

use super::pack::{groups, has_qh, head_bytes};
use super::{QuantFormat, XRow, LANES, QK};

// `QuantFormat` as const-generic parameters (enums cannot be): its discriminants.
const Q4_0: u8 = QuantFormat::Q4_0 as u8;
const Q4_1: u8 = QuantFormat::Q4_1 as u8;
const Q8_0: u8 = QuantFormat::Q8_0 as u8;
const Q5_1: u8 = QuantFormat::Q5_1 as u8;
const Q5_0: u8 = QuantFormat::Q5_0 as u8;

/// The format a const-generic tag stands for.
const fn format(f: u8) -> QuantFormat {
    match f {
        Q4_0 => QuantFormat::Q4_0,
        Q4_1 => QuantFormat::Q4_1,
        Q5_1 => QuantFormat::Q5_1,
        Q5_0 => QuantFormat::Q5_0,
        _ => QuantFormat::Q8_0,
    }
}

/// Whether the format tagged `f` adds a minimum per block (`w = q·d + m`).
const fn has_mins(f: u8) -> bool {
    f == Q4_1 || f == Q5_1
}

/// Raw pointers to one quantized row of `x` (see `super::XRow`).
#[derive(Clone, Copy)]
struct XPtr {
    qs: *const i8,
    d: *const f32,
    sum: *const i32,
    s: *const f32,
}

impl XPtr {
    /// Row `x`, checked to hold `nb` blocks padded to whole groups.
    fn new(x: &XRow<'_>, nb: usize) -> XPtr {
        let nbp = nb.next_multiple_of(LANES);
        assert!(
            x.qs.len() >= nbp * QK && x.d.len() >= nbp && x.sum.len() >= nbp && x.s.len() >= nbp
        );
        XPtr {
            qs: x.qs.as_ptr(),
            d: x.d.as_ptr(),
            sum: x.sum.as_ptr(),
            s: x.s.as_ptr(),
        }
    }
}

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
    macro_rules! rows {
        ($f:expr, $dot:expr) => {
            match xs.len() {
                1 => dot_rows::<$f, 1, $dot>(w, rb, xs, y, ldy),
                2 => dot_rows::<$f, 2, $dot>(w, rb, xs, y, ldy),
                3 => dot_rows::<$f, 3, $dot>(w, rb, xs, y, ldy),
                4 => dot_rows::<$f, 4, $dot>(w, rb, xs, y, ldy),
                r => unreachable!("{r} rows of x at once"),
            }
        };
    }
    macro_rules! formats {
        ($dot:expr) => {
            match fmt {
                QuantFormat::Q4_0 => rows!(Q4_0, $dot),
                QuantFormat::Q4_1 => rows!(Q4_1, $dot),
                QuantFormat::Q8_0 => rows!(Q8_0, $dot),
                QuantFormat::Q5_1 => rows!(Q5_1, $dot),
                QuantFormat::Q5_0 => rows!(Q5_0, $dot),
                _ => unreachable!("{fmt:?} has no packed kernels"),
            }
        };
    }
    if has_dotprod() {
        formats!(true)
    } else {
        formats!(false)
    }
}

/// Whether this CPU has the `dotprod` extension (`sdot`; optional in Armv8.2, in every Armv8.4
/// and later core): detected once by the standard library, then a cached load.
pub(super) fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// `acc + ` the dot products of each 4 bytes of `a` and `b` (signed), one per 32-bit lane: the
/// `dotprod` extension's `sdot`, exact (at most `4·128·128` per lane and instruction). Written as
/// assembly because its Rust intrinsic (`vdotq_s32`) is not stable yet; the directive lets the
/// assembler take the instruction inside functions compiled for baseline aarch64.
///
/// # Safety
/// Only where [`has_dotprod`].
#[inline(always)]
pub(super) unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    std::arch::asm!(
        ".arch_extension dotprod",
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// The loop over weight rows: pairs of them while two remain (with two or more rows of `x`:
/// the module docs' tiles), then one at a time.
///
/// # Safety
/// As `dot`, with `xs.len() == R`.
unsafe fn dot_rows<const F: u8, const R: usize, const DOT: bool>(
    w: &[u8],
    rb: usize,
    xs: &[XRow<'_>],
    y: *mut f32,
    ldy: usize,
) {
    let nb = rb / const { format(F).block_bytes() };
    let x: [XPtr; R] = std::array::from_fn(|r| XPtr::new(&xs[r], nb));
    let cols = w.len() / rb;
    let mut j = 0;
    if R > 1 && super::wide_tiles() {
        while j + 2 <= cols {
            let w0 = w.as_ptr().add(j * rb);
            let out = tile::<F, R, 2, DOT>([w0, w0.add(rb)], nb, &x);
            for (r, row) in out.iter().enumerate() {
                *y.add(r * ldy + j) = row[0];
                *y.add(r * ldy + j + 1) = row[1];
            }
            j += 2;
        }
    }
    for j in j..cols {
        let out = tile::<F, R, 1, DOT>([w.as_ptr().add(j * rb)], nb, &x);
        for (r, row) in out.iter().enumerate() {
            *y.add(r * ldy + j) = row[0];
        }
    }
}

/// `J` packed weight rows of `nb` blocks (at `w[j]`) against `R` rows of `x`: each output
/// computed with its own lanes, group after group, as `super::dot_portable` does.
///
/// # Safety
/// Each `w[j]` valid for `nb` blocks; the rows of `x` hold `nb` blocks padded to whole groups.
#[inline(always)]
unsafe fn tile<const F: u8, const R: usize, const J: usize, const DOT: bool>(
    w: [*const u8; J],
    nb: usize,
    x: &[XPtr; R],
) -> [[f32; J]; R] {
    let bb = const { format(F).block_bytes() };
    let head = const { head_bytes(format(F)) };
    let zero = vdupq_n_f32(0.0);
    let mut acc = [[[zero; 2]; J]; R];
    let mut mins = [[[zero; 2]; J]; R];
    for (b0, t) in groups(nb) {
        let group: [*const u8; J] = std::array::from_fn(|j| w[j].add(b0 * bb));
        let values: [*const u8; J] = std::array::from_fn(|j| group[j].add(head * t));
        let dw: [[float32x4_t; 2]; J] = std::array::from_fn(|j| scales(group[j], t));
        let mw: [[float32x4_t; 2]; J] = if has_mins(F) {
            std::array::from_fn(|j| scales(group[j].add(2 * t), t))
        } else {
            [[zero; 2]; J]
        };
        for h in 0..2 {
            let isum = half_sums::<F, R, J, DOT>(values, t, h, x, b0);
            for r in 0..R {
                let at = b0 + 4 * h;
                let xsum = || vld1q_s32(x[r].sum.add(at));
                let offset = match F {
                    // Σ(nibble - 8)·x = Σ nibble·x - 8·Σx.
                    Q4_0 => Some(vshlq_n_s32::<3>(xsum())),
                    // Σ(q - 16)·x = Σ q·x - 16·Σx.
                    Q5_0 => Some(vshlq_n_s32::<4>(xsum())),
                    _ => None,
                };
                let dx = vld1q_f32(x[r].d.add(at));
                for j in 0..J {
                    let s = match offset {
                        Some(o) => vsubq_s32(isum[r][j], o),
                        None => isum[r][j],
                    };
                    let scale = vmulq_f32(dw[j][h], dx);
                    acc[r][j][h] = vfmaq_f32(acc[r][j][h], scale, vcvtq_f32_s32(s));
                    if has_mins(F) {
                        let sx = vld1q_f32(x[r].s.add(at));
                        mins[r][j][h] = vfmaq_f32(mins[r][j][h], mw[j][h], sx);
                    }
                }
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|j| {
            let (lo, hi) = if has_mins(F) {
                (
                    vaddq_f32(acc[r][j][0], mins[r][j][0]),
                    vaddq_f32(acc[r][j][1], mins[r][j][1]),
                )
            } else {
                (acc[r][j][0], acc[r][j][1])
            };
            // ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)), as `super::hsum`.
            let s = vaddq_f32(lo, hi);
            (vgetq_lane_f32::<0>(s) + vgetq_lane_f32::<2>(s))
                + (vgetq_lane_f32::<1>(s) + vgetq_lane_f32::<3>(s))
        })
    })
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

/// The exact integer dot products of half `h` of a group (blocks `4h..4h+4`, zero past `t`) of
/// each weight row (values at `values[j]`) with each row of `x` (group `b0`): `[r][j]`, one
/// block per lane.
///
/// # Safety
/// `values[j]` valid for the group's value bytes (pieces of `4·t` bytes); each row of `x` for
/// group `b0`.
#[inline(always)]
unsafe fn half_sums<const F: u8, const R: usize, const J: usize, const DOT: bool>(
    values: [*const u8; J],
    t: usize,
    h: usize,
    x: &[XPtr; R],
    b0: usize,
) -> [[int32x4_t; J]; R] {
    // Blocks of this half that exist (0..=4).
    let lanes = t.saturating_sub(4 * h).min(4);
    // Per row of x and weight row, with `sdot` (`DOT`): one i32 lane per block, the sums
    // themselves. Without: i32 lanes [b0, b0, b1, b1] and [b2, b2, b3, b3] (Q8_0), or the same
    // in i16 lanes, 4 per block, for the nibble types.
    let mut sums = [[vdupq_n_s32(0); J]; R];
    let mut wide = [[[vdupq_n_s32(0); 2]; J]; R];
    let mut narrow = [[[vdupq_n_s16(0); 2]; J]; R];
    for step in 0..4 {
        // Two pieces per step: Q8_0's `2·step` and `2·step + 1`; a nibble piece's low nibbles
        // (values `4·step..`: piece `step` of x) and high ones (`16 + 4·step..`: `step + 4`).
        let (ca, cb) = if F == Q8_0 {
            (2 * step, 2 * step + 1)
        } else {
            (step, step + QK / 8)
        };
        let wv: [[int8x16_t; 2]; J] =
            std::array::from_fn(|j| weight_pieces::<F>(values[j], t, lanes, h, step));
        for r in 0..R {
            let xg = x[r].qs.add(b0 * QK + 16 * h);
            let (xa, xb) = (vld1q_s8(xg.add(32 * ca)), vld1q_s8(xg.add(32 * cb)));
            for j in 0..J {
                let [va, vb] = wv[j];
                if DOT {
                    sums[r][j] = sdot(sdot(sums[r][j], va, xa), vb, xb);
                } else if F == Q8_0 {
                    // Two products of up to 128·127 per i16 lane: then widen.
                    let lo = vmlal_s8(
                        vmull_s8(vget_low_s8(va), vget_low_s8(xa)),
                        vget_low_s8(vb),
                        vget_low_s8(xb),
                    );
                    let hi = vmlal_high_s8(vmull_high_s8(va, xa), vb, xb);
                    wide[r][j][0] = vpadalq_s16(wide[r][j][0], lo);
                    wide[r][j][1] = vpadalq_s16(wide[r][j][1], hi);
                } else {
                    // 8 products of up to 31·127 per i16 lane over the half: at most 31496.
                    let n = &mut narrow[r][j];
                    n[0] = vmlal_s8(n[0], vget_low_s8(va), vget_low_s8(xa));
                    n[0] = vmlal_s8(n[0], vget_low_s8(vb), vget_low_s8(xb));
                    n[1] = vmlal_high_s8(n[1], va, xa);
                    n[1] = vmlal_high_s8(n[1], vb, xb);
                }
            }
        }
    }
    if DOT {
        return sums;
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|j| {
            let [lo, hi] = if F == Q8_0 {
                wide[r][j]
            } else {
                narrow[r][j].map(|n| vpaddlq_s16(n))
            };
            vpaddq_s32(lo, hi)
        })
    })
}

/// Step `step` of half `h` of a packed group's values (at `values`, `t` blocks of which `lanes`
/// in this half) as two vectors of signed bytes: Q8_0's pieces `2·step` and `2·step + 1`, or a
/// nibble piece's low and high nibbles with their fifth bits (Q5_0, Q5_1).
///
/// # Safety
/// `values` valid for the group's value bytes.
#[inline(always)]
unsafe fn weight_pieces<const F: u8>(
    values: *const u8,
    t: usize,
    lanes: usize,
    h: usize,
    step: usize,
) -> [int8x16_t; 2] {
    let piece = |c: usize| piece_half(values.add(4 * (c * t + 4 * h)), lanes);
    if F == Q8_0 {
        let flip = |b: uint8x16_t| vreinterpretq_s8_u8(veorq_u8(b, vdupq_n_u8(0x80)));
        return [flip(piece(2 * step)), flip(piece(2 * step + 1))];
    }
    let qh = has_qh(format(F));
    // Q5_0's and Q5_1's nibble pieces follow their `qh` piece.
    let bytes = piece(step + usize::from(qh));
    let mut low = vandq_u8(bytes, vdupq_n_u8(0x0F));
    let mut high = vshrq_n_u8::<4>(bytes);
    if qh && t == LANES {
        // A full group holds masks (`pack.rs`): half h of mask c is its bytes 2h, 2h+1.
        let masks = values.add(2 * h);
        low = vorrq_u8(low, mask_bits(masks.add(4 * step)));
        high = vorrq_u8(high, mask_bits(masks.add(4 * (step + QK / 8))));
    } else if qh {
        let lanes_qh = piece(0);
        low = vorrq_u8(low, fifth_bits(lanes_qh, step));
        high = vorrq_u8(high, fifth_bits(lanes_qh, step + QK / 8));
    }
    [vreinterpretq_s8_u8(low), vreinterpretq_s8_u8(high)]
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
