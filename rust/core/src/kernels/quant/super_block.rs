//! Types of 256-value super-blocks (the K-quants, IQ4_XS) in the quantized kernels: what such a type tells
//! the kernels ([`SuperBlock`]), the packed layout the kernels read, its dequantization, and the
//! portable dot product (the reference of the SIMD kernels in `x86_super.rs` and `neon_super.rs`).
//!
//! # What a type provides
//! Every K-quant is, per super-block of 256 values, an `f16` scale `d`, maybe an `f16` `dmin`,
//! small integer scales `sc` (and minimums `m`) per 16 or per 32 values, and small unsigned
//! integers `u`: `w = (d·sc)·(u - o) - dmin·m` for a fixed offset `o`. Its [`SuperBlock`] says
//! which of those it has and gives `split`, the exact conversion of one GGUF super-block into
//! those integers ([`Parts`]). The packing, the dequantization of packed rows and every kernel
//! come from that description, so a type of an existing [`Values`] kind needs nothing else. The
//! types run this way (each a `SuperBlock` and its `split` in the type's file):
//!
//! | type   | values                   | `o`   | scales (`sc`)      | minimums (`m`) |
//! |--------|--------------------------|-------|--------------------|----------------|
//! | Q4_K   | `U4`                     | 0     | per 32, 0..64      | per 32, 0..64  |
//! | Q5_K   | `U6` (5 bits used)       | 0     | per 32, 0..64      | per 32, 0..64  |
//! | Q6_K   | `U6`                     | 32    | per 16, -128..128  | none           |
//! | Q3_K   | `U4` (`q + 4`, 3 bits)   | 4     | per 16, -32..32    | none           |
//! | Q2_K   | `U4` (2 bits used)       | 0     | per 16, 0..16      | per 16, 0..16  |
//! | IQ4_XS | `Codebook` (IQ4_NL's)    | 128   | per 32, -32..32    | none           |
//!
//! [`Values::Codebook`] stores nibble indices; the kernels map them through the table
//! (`pshufb`) to `codebook + 128`, which is `u` with `o = 128`: `vpdpbusd` takes such bytes as
//! they are, while AVX2's `maddubs` would saturate on them and multiplies the signed codebook
//! values with Q8_0's sign trick instead (the same integers: `Σ c·x = Σ u·x - 128·Σx`).
//!
//! # Packed layout
//! A packed super-block is one full group of the module's interleaving (`pack.rs`): the 256
//! values are 8 sub-blocks of 32 (32-bit lane `l` = sub-block `l`), piece `c` holding values
//! `4c..4c+4` of each. Its bytes, in order:
//!
//! 1. `f16 d`, then `f16 dmin` if the type has minimums;
//! 2. the scales `i8 sc[G]`, then the minimums `u8 m[G]` if any; `G` = 8 (per 32 values: entry
//!    `l` for sub-block `l`) or 16 (per 16: entry `8h + l` for half `h` of sub-block `l`), so that
//!    one 8-byte load gives one value per lane;
//! 3. the values, [`Values::U4`]: 4 vectors of 32 bytes, vector `p`'s 32-bit lane `l` holding
//!    values `4p..4p+4` of sub-block `l` in its low nibbles and `16+4p..16+4p+4` in its high
//!    ones (Q4_0's order: low nibbles are the first half of a sub-block, high ones the second);
//!    [`Values::U6`]: those low 4 bits, then a 64-byte plane of the top 2 bits: plane byte `k`
//!    serves nibble byte `k` (bits 0-1 its low value, 2-3 its high value) and nibble byte
//!    `64 + k` (bits 4-5, 6-7), so one 64-byte load serves two 64-byte loads of nibbles;
//!    [`Values::Codebook`]: the indices, as `U4`.
//!
//! Packed bytes per super-block (in the file): Q4_K 148 (144: its 6-bit scales unpacked to
//! bytes), Q5_K 212 (176), Q6_K 210 (210), Q3_K 146 (110), Q2_K 164 (84), IQ4_XS 138 (136). Q3_K
//! and Q2_K give up part of their size for the 4-bit layout (still a fifth of `f32`'s 1024):
//! their 3- and 2-bit values would need kinds of their own to stream fewer bytes.
//!
//! # Arithmetic
//! Lane `l` (sub-block `l`) of a super-block, against the 8-bit block `l` of `x` (scale `dx`,
//! sums `Xa`, `Xb` of its two halves of 16), with `Sa`, `Sb` the exact sums of `u·x` over the
//! halves:
//!
//! * `isum = sc_a·(Sa - o·Xa) + sc_b·(Sb - o·Xb)` and `msum = m_a·Xa + m_b·Xb`, exact `i32`
//!   (`|isum| < 2^24`, so exact in `f32` too: IQ4_XS comes closest, `32·127·127·32`); with one scale per 32 values `sc_a = sc_b` and `m_a = m_b` (the kernels
//!   may then factor them out: the integers are the same);
//! * `acc = fma(d·dx, isum, acc)` and, with minimums, `mins = fma(dmin·dx, msum, mins)`, in `f32`,
//!   super-block after super-block;
//! * the result: the module's lane sum of `acc - mins` (of `acc` without minimums).
//!
//! ggml pairs K-quants with Q8_K activations (one scale per 256); the per-32 scales of this module
//! lose less to rounding, so results differ from llama.cpp's by quantization noise.

use half::f16;

use super::activations::{x_index, XRow};
use super::portable::hsum;
use super::{LANES, QK};

/// Values per super-block (ggml's `QK_K`): one full packed group of 8 sub-blocks of 32.
pub(super) const VALUES: usize = LANES * QK;

/// How a type's unsigned values `u` are stored for the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Values {
    /// 4 bits (`u` in 0..16): 128 bytes of nibbles.
    U4,
    /// 6 bits (0..64): the low 4 bits as [`Values::U4`], then a 64-byte plane of the top 2.
    U6,
    /// 4-bit indices `i` into a table of 16 signed values, stored as [`Values::U4`]; the kernels
    /// take `u = table[i] + 128` (0..256) with the offset `o = 128`, so `u - o` is the table's
    /// value. Only without minimums and with one scale per 32 values (what IQ4_XS is, and all
    /// the SIMD kernels instantiate).
    Codebook(&'static [i8; 16]),
}

/// What a type of 256-value super-blocks is to the kernels (see the module docs).
pub(crate) struct SuperBlock {
    /// Values per scale (and minimum): 32 (a sub-block) or 16 (half of one).
    pub(super) scale_values: usize,
    /// Whether the type subtracts `dmin·m`.
    pub(super) mins: bool,
    pub(super) values: Values,
    /// `o` in `w = (d·sc)·(u - o) - dmin·m`: 0 or a power of two (the kernels shift by it).
    pub(super) offset: i32,
    /// One super-block of the type as stored in GGUF into its integers, exactly.
    pub(super) split: fn(&[u8], &mut Parts),
}

/// `$rows::<MINS, PER16, U6, CB>($args)` for the kernel shape the [`SuperBlock`] `$sb` describes
/// (minimums or not, scales per 16 or 32, 6-bit values, codebook): the SIMD files compile one
/// kernel per shape as const generics and pick it through this one table.
macro_rules! dispatch_shape {
    ($sb:expr, $rows:ident, $args:expr) => {
        match ($sb.mins, $sb.scale_values == 16, $sb.values) {
            (false, false, Values::U4) => $rows::<false, false, false, false>($args),
            (false, false, Values::U6) => $rows::<false, false, true, false>($args),
            (false, true, Values::U4) => $rows::<false, true, false, false>($args),
            (false, true, Values::U6) => $rows::<false, true, true, false>($args),
            (true, false, Values::U4) => $rows::<true, false, false, false>($args),
            (true, false, Values::U6) => $rows::<true, false, true, false>($args),
            (true, true, Values::U4) => $rows::<true, true, false, false>($args),
            (true, true, Values::U6) => $rows::<true, true, true, false>($args),
            (false, false, Values::Codebook(_)) => $rows::<false, false, false, true>($args),
            (_, _, Values::Codebook(_)) => {
                unreachable!("codebook values come without minimums, one scale per 32")
            }
        }
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) use dispatch_shape;

/// One super-block in integers: `w[v] = (d·sc[g])·(u[v] - o) - dmin·m[g]`,
/// `g = v / scale_values` (only the first `256 / scale_values` entries of `sc` and `m` count).
pub(super) struct Parts {
    pub(super) d: f16,
    /// Zero for types without minimums.
    pub(super) dmin: f16,
    pub(super) sc: [i8; 16],
    pub(super) m: [u8; 16],
    pub(super) u: [u8; VALUES],
}

/// Byte offsets inside a packed super-block (the module docs' layout).
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub(super) dmin: usize,
    pub(super) sc: usize,
    pub(super) m: usize,
    pub(super) values: usize,
    /// The 2-bit plane of [`Values::U6`].
    pub(super) plane: usize,
    pub(super) bytes: usize,
}

impl Layout {
    /// The layout of a type with (`mins`) or without minimums, scales per 16 (`per16`) or per 32
    /// values, and 6-bit (`u6`) or 4-bit values. A `const fn` of the kernels' const generics.
    pub(super) const fn new(mins: bool, per16: bool, u6: bool) -> Layout {
        let groups = if per16 { 16 } else { 8 };
        let dmin = 2;
        let sc = if mins { 4 } else { 2 };
        let m = sc + groups;
        let values = if mins { m + groups } else { m };
        let plane = values + VALUES / 2;
        let bytes = if u6 { plane + VALUES / 4 } else { plane };
        Layout {
            dmin,
            sc,
            m,
            values,
            plane,
            bytes,
        }
    }
}

impl SuperBlock {
    pub(super) const fn layout(&self) -> Layout {
        Layout::new(
            self.mins,
            self.scale_values == 16,
            matches!(self.values, Values::U6),
        )
    }

    /// Bytes of a packed super-block.
    pub(crate) const fn packed_bytes(&self) -> usize {
        self.layout().bytes
    }

    /// Where the scale (and minimum) of scale group `g` (values `g·scale_values..`) is packed.
    fn scale_slot(&self, g: usize) -> usize {
        if self.scale_values == 16 {
            8 * (g % 2) + g / 2
        } else {
            g
        }
    }
}

/// Where value `i` (0..32) of sub-block `l` is in the packed values: `(byte of the nibbles,
/// nibble shift, plane byte, plane shift)`.
#[inline]
fn value_place(l: usize, i: usize) -> (usize, u32, usize, u32) {
    let (high, p, j) = (i / 16, (i % 16) / 4, i % 4);
    let byte = 32 * p + 4 * l + j;
    (
        byte,
        4 * high as u32,
        byte % 64,
        2 * (2 * (p / 2) + high) as u32,
    )
}

/// One row of GGUF super-blocks of the type (`src`) into the packed layout (`dst`).
pub(super) fn pack_row(sb: &SuperBlock, block_bytes: usize, src: &[u8], dst: &mut [u8]) {
    let lay = sb.layout();
    let mut parts = Parts {
        d: f16::ZERO,
        dmin: f16::ZERO,
        sc: [0; 16],
        m: [0; 16],
        u: [0; VALUES],
    };
    for (s, d) in src
        .chunks_exact(block_bytes)
        .zip(dst.chunks_exact_mut(lay.bytes))
    {
        (sb.split)(s, &mut parts);
        d.fill(0);
        d[..2].copy_from_slice(&parts.d.to_le_bytes());
        if sb.mins {
            d[lay.dmin..lay.dmin + 2].copy_from_slice(&parts.dmin.to_le_bytes());
        }
        for g in 0..VALUES / sb.scale_values {
            d[lay.sc + sb.scale_slot(g)] = parts.sc[g] as u8;
            if sb.mins {
                d[lay.m + sb.scale_slot(g)] = parts.m[g];
            }
        }
        for (v, &u) in parts.u.iter().enumerate() {
            let (byte, shift, plane, pshift) = value_place(v / QK, v % QK);
            d[lay.values + byte] |= (u & 0x0F) << shift;
            if sb.values == Values::U6 {
                d[lay.plane + plane] |= (u >> 4) << pshift;
            }
        }
    }
}

/// A packed super-block's header, as numbers.
struct Head {
    d: f32,
    dmin: f32,
    /// Per sub-block `l` and half `h` (0: values 0..16, 1: 16..32).
    sc: [[i32; 2]; LANES],
    m: [[i32; 2]; LANES],
}

impl Head {
    fn read(sb: &SuperBlock, b: &[u8]) -> Head {
        let lay = sb.layout();
        let f16_at = |at: usize| f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
        let slot = |l: usize, h: usize| sb.scale_slot((QK * l + 16 * h) / sb.scale_values);
        Head {
            d: f16_at(0),
            dmin: if sb.mins { f16_at(lay.dmin) } else { 0.0 },
            sc: std::array::from_fn(|l| {
                std::array::from_fn(|h| b[lay.sc + slot(l, h)] as i8 as i32)
            }),
            m: std::array::from_fn(|l| {
                std::array::from_fn(|h| {
                    if sb.mins {
                        b[lay.m + slot(l, h)] as i32
                    } else {
                        0
                    }
                })
            }),
        }
    }
}

/// Value `i` (0..32) of sub-block `l` of a packed super-block `b`: the unsigned `u` (for a
/// codebook, the table's value + 128).
#[inline]
fn packed_u(sb: &SuperBlock, lay: &Layout, b: &[u8], l: usize, i: usize) -> i32 {
    let (byte, shift, plane, pshift) = value_place(l, i);
    let low = (b[lay.values + byte] >> shift) & 0x0F;
    match sb.values {
        Values::U4 => low as i32,
        Values::U6 => (low | (((b[lay.plane + plane] >> pshift) & 0x03) << 4)) as i32,
        Values::Codebook(table) => table[low as usize] as i32 + 128,
    }
}

/// A packed row (`src`, whole super-blocks) dequantized into `dst`: `(d·sc)·(u - o)`, minus
/// `dmin·m` for types with minimums, each product rounded to `f32` and nothing fused, which is
/// the operation sequence of ggml's dequantizers of the K-quants (so the bits of the type's own
/// [`dequantize`](super::QuantFormat::dequantize), as a test checks).
pub(super) fn dequantize_packed(sb: &SuperBlock, src: &[u8], dst: &mut [f32]) {
    let lay = sb.layout();
    for (b, y) in src
        .chunks_exact(lay.bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let head = Head::read(sb, b);
        for (v, out) in y.iter_mut().enumerate() {
            let (l, i) = (v / QK, v % QK);
            let scale = head.d * head.sc[l][i / 16] as f32;
            let w = scale * (packed_u(sb, &lay, b, l, i) - sb.offset) as f32;
            *out = if sb.mins {
                w - head.dmin * head.m[l][i / 16] as f32
            } else {
                w
            };
        }
    }
}

/// One output: packed row `w` (whole super-blocks) times one quantized row of `x`, in the
/// arithmetic of the module docs. The reference for the SIMD kernels, and the kernel itself
/// where there is none.
pub(super) fn dot_portable(sb: &SuperBlock, w: &[u8], x: XRow<'_>) -> f32 {
    let lay = sb.layout();
    let mut acc = [0.0f32; LANES];
    let mut mins = [0.0f32; LANES];
    for (s, b) in w.chunks_exact(lay.bytes).enumerate() {
        let head = Head::read(sb, b);
        let xg = &x.qs[s * VALUES..(s + 1) * VALUES];
        for l in 0..LANES {
            let blk = s * LANES + l;
            let mut sums = [0i32; 2];
            for i in 0..QK {
                sums[i / 16] += packed_u(sb, &lay, b, l, i) * xg[x_index(l, i)] as i32;
            }
            let xh = [x.half[2 * s * LANES + l], x.half[2 * s * LANES + LANES + l]];
            let isum = head.sc[l][0] * (sums[0] - sb.offset * xh[0])
                + head.sc[l][1] * (sums[1] - sb.offset * xh[1]);
            acc[l] = (head.d * x.d[blk]).mul_add(isum as f32, acc[l]);
            if sb.mins {
                let msum = head.m[l][0] * xh[0] + head.m[l][1] * xh[1];
                mins[l] = (head.dmin * x.d[blk]).mul_add(msum as f32, mins[l]);
            }
        }
    }
    let lanes: [f32; LANES] =
        std::array::from_fn(|l| if sb.mins { acc[l] - mins[l] } else { acc[l] });
    hsum(&lanes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quant::QuantFormat;

    /// Every super-block type's description is one the kernels can run.
    #[test]
    fn descriptions_are_in_range() {
        for fmt in QuantFormat::all() {
            let Some(sb) = fmt.super_block() else {
                continue;
            };
            assert_eq!(fmt.block_values(), VALUES, "{fmt:?}");
            assert!(matches!(sb.scale_values, 16 | 32), "{fmt:?}");
            assert!(
                sb.offset == 0 || (sb.offset as u32).is_power_of_two(),
                "{fmt:?}"
            );
            assert!(fmt.has_kernels(), "{fmt:?}");
            if let Values::Codebook(_) = sb.values {
                assert!(!sb.mins && sb.scale_values == 32, "{fmt:?}");
                assert_eq!(sb.offset, 128, "{fmt:?}");
            }
        }
    }

    /// The value places cover the nibble bytes (and plane fields) exactly once.
    #[test]
    fn value_places_are_a_permutation() {
        let mut nibbles = [0u8; VALUES / 2];
        let mut plane = [0u8; VALUES / 4];
        for l in 0..LANES {
            for i in 0..QK {
                let (byte, shift, pb, pshift) = value_place(l, i);
                assert_eq!(nibbles[byte] & (0x0F << shift), 0, "l={l} i={i}");
                nibbles[byte] |= 0x0F << shift;
                assert_eq!(plane[pb] & (0x03 << pshift), 0, "plane l={l} i={i}");
                plane[pb] |= 0x03 << pshift;
            }
        }
        assert!(nibbles.iter().chain(&plane).all(|&b| b == 0xFF));
    }
}
