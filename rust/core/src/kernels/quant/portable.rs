//! The dot product of a packed weight row and a quantized row of `x` in plain Rust, in the fixed
//! arithmetic of the module docs ([`super`]): the reference every SIMD kernel is tested against
//! bit for bit, and the kernel itself where there is no SIMD one.

use half::f16;

use super::activations::{x_index, XRow};
use super::{pack, super_block, QuantFormat, LANES, QK};

/// One output of the product: packed weight row `w` (whole blocks of `fmt`) times one quantized
/// row of `x`, in the fixed arithmetic of the module docs. The reference for the SIMD kernels, and
/// the kernel itself where there is no SIMD one (`mul_add` is one instruction on aarch64).
pub(super) fn dot_portable(fmt: QuantFormat, w: &[u8], x: XRow<'_>) -> f32 {
    if let Some(sb) = fmt.super_block() {
        return super_block::dot_portable(sb, w, x);
    }
    let bb = fmt.block_bytes();
    let mut acc = [0.0f32; LANES];
    let mut mins = [0.0f32; LANES];
    for (b0, t) in pack::groups(w.len() / bb) {
        let group = &w[b0 * bb..(b0 + t) * bb];
        let xg = &x.qs[b0 * QK..(b0 + LANES) * QK];
        for l in 0..LANES {
            let b = b0 + l;
            // Lanes past a short group add 0·0, as the SIMD kernels' masked loads make them.
            let (isum, dw, mw) = if l < t {
                let mut isum = block_isum(fmt, group, t, l, xg);
                match fmt {
                    QuantFormat::Q4_0 => isum -= 8 * x.sum[b],
                    QuantFormat::Q5_0 => isum -= 16 * x.sum[b],
                    _ => {}
                }
                let dw = f16_at(group, pack::packed_offset(fmt, t, l, 0));
                let mw = match fmt {
                    QuantFormat::Q4_1 | QuantFormat::Q5_1 => {
                        f16_at(group, pack::packed_offset(fmt, t, l, 2))
                    }
                    _ => 0.0,
                };
                (isum, dw, mw)
            } else {
                (0, 0.0, 0.0)
            };
            acc[l] = (dw * x.d[b]).mul_add(isum as f32, acc[l]);
            if has_mins(fmt) {
                mins[l] = mw.mul_add(x.s[b], mins[l]);
            }
        }
    }
    let lanes: [f32; LANES] = std::array::from_fn(|l| {
        if has_mins(fmt) {
            acc[l] + mins[l]
        } else {
            acc[l]
        }
    });
    hsum(&lanes)
}

/// Whether the type adds a minimum per block (`w = q·d + m`: Q4_1, Q5_1).
fn has_mins(fmt: QuantFormat) -> bool {
    matches!(fmt, QuantFormat::Q4_1 | QuantFormat::Q5_1)
}

/// Block `l`'s integer dot product in a packed group of `t` blocks (`group`) against the
/// group's quantized `x` (`xg`): the nibbles (Q4_0 without its `- 8`; with Q5_1's and Q5_0's fifth bit, Q5_0 without
/// its `- 16`) or
/// Q8_0's signed `q`, times
/// the activations, summed exactly. Walks the group's pieces as the SIMD kernels load them.
fn block_isum(fmt: QuantFormat, group: &[u8], t: usize, l: usize, xg: &[i8]) -> i32 {
    let values = &group[pack::head_bytes(fmt) * t..];
    let x = |v: usize| xg[x_index(l, v)] as i32;
    let mut isum = 0;
    match fmt {
        QuantFormat::Q8_0 => {
            for c in 0..QK / 4 {
                for (j, &byte) in values[4 * (c * t + l)..][..4].iter().enumerate() {
                    isum += (byte as i32 - 128) * x(4 * c + j);
                }
            }
        }
        QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q5_0 | QuantFormat::Q5_1 => {
            // Q5_0, Q5_1: piece 0 is `qh`, bit v the fifth bit of value v; the nibbles follow.
            let (high, nibbles) = if pack::has_qh(fmt) {
                let word = |i: usize| u32::from_le_bytes(values[4 * i..][..4].try_into().unwrap());
                let qh = if t == LANES {
                    // A full group's masks: nibble l of mask c is nibble c of block l's qh.
                    (0..LANES).fold(0, |q, c| q | ((word(c) >> (4 * l)) & 0xF) << (4 * c))
                } else {
                    word(l)
                };
                (qh, &values[4 * t..])
            } else {
                (0, values)
            };
            let fifth = |v: usize| (((high >> v) & 1) << 4) as i32;
            // Byte j of a block holds value j (low nibble) and value j + 16 (high nibble).
            for c in 0..QK / 8 {
                for (j, &byte) in nibbles[4 * (c * t + l)..][..4].iter().enumerate() {
                    let (lo, hi) = (4 * c + j, QK / 2 + 4 * c + j);
                    isum += ((byte & 0x0F) as i32 | fifth(lo)) * x(lo);
                    isum += ((byte >> 4) as i32 | fifth(hi)) * x(hi);
                }
            }
        }
        _ => unreachable!("{fmt:?} has no packed kernels"),
    }
    isum
}

/// The little-endian `f16` at byte `at` of `b`, as `f32` (exact).
#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The AVX2 kernel's horizontal sum order: `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
#[inline]
pub(super) fn hsum(a: &[f32; LANES]) -> f32 {
    let s = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}
