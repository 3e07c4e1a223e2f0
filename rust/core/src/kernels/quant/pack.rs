//! The packed weight layout the quantized kernels read (see [`super`]): GGUF rows rearranged once
//! at load so that one vector load holds 4 consecutive values of each of 8 blocks.
//!
//! A packed row has the size and place of the GGUF row. Inside it, the blocks go in groups of 8
//! (a row's last group may be shorter: `t` blocks); a group of `t` blocks holds
//!
//! 1. the `t` scales `d` (`f16`), then for Q4_1 the `t` minimums `m` (`f16`): one contiguous load
//!    per group instead of one strided read per block;
//! 2. the blocks' value bytes in pieces of `4·t` bytes: piece `c` is bytes `4c..4c+4` of block 0,
//!    of block 1, ..., of block `t-1` (4 pieces for the 16 nibble bytes of Q4_0/Q4_1/Q5_0, 8 for
//!    the 32 bytes of Q8_0);
//! 3. for Q5_0, the fifth bits of its values: 8 masks of `4·t` bits, one per register of nibbles
//!    the kernels make (`[piece 0 low, .., piece 3 low, piece 0 high, .., piece 3 high]`), bit
//!    `4l + j` of a piece's mask being the fifth bit of the value whose nibble is at byte `j` of
//!    lane `l`; the masks follow each other as one little-endian bit string of `32·t` bits
//!    ([`fifth_bit_index`]). In a full group they are 8 `u32`, one per 32-byte register of
//!    nibbles (two per 64-bit AVX-512 mask); a short group's are expanded to a full group's by
//!    [`q5_0_full_group`] (once per row, in the SIMD kernels).
//!
//! So in a full group piece `c` is one 32-byte vector whose 32-bit lane `l` holds block `l`'s
//! values `4c..4c+4` (Q8_0), or in its low nibbles values `4c..4c+4` and in its high nibbles
//! values `16+4c..16+4c+4` (GGUF's Q4 byte `j` holds values `j` and `j + 16`). Q8_0 bytes are stored
//! as `q + 128` (`q` XOR 0x80): the unsigned form `vpdpbusd` multiplies; the kernels take the
//! offset back out exactly. Q5_0's `q` (0..32) is multiplied unsigned too, its `- 16` taken out as
//! `16·Σx`.

use rayon::prelude::*;

use super::{super_block, QuantFormat, LANES, QK};

/// Bytes of a block's header: `d`, and for Q4_1 also `m`.
pub(super) const fn head_bytes(fmt: QuantFormat) -> usize {
    match fmt {
        QuantFormat::Q4_1 => 4,
        QuantFormat::Q4_0 | QuantFormat::Q8_0 | QuantFormat::Q5_0 => 2,
        _ => panic!("no packed layout for this block type"),
    }
}

/// Where a block's value bytes (nibbles, or Q8_0's bytes) start in its GGUF encoding: after the
/// header, and for Q5_0 after its 4 bytes of fifth bits (`qh`).
pub(super) const fn gguf_values_at(fmt: QuantFormat) -> usize {
    match fmt {
        QuantFormat::Q5_0 => 6,
        _ => head_bytes(fmt),
    }
}

/// Bytes per block of Q5_0.
const Q5_0_BYTES: usize = 22;
/// Where a Q5_0 group of `t` blocks keeps its fifth-bit masks: after the scales and nibbles.
pub(super) const fn q5_0_masks_at(t: usize) -> usize {
    18 * t
}

/// Bit of a Q5_0 group's masks (of `t` blocks) holding the fifth bit of value `v` (0..32) of
/// block `l`: mask `v / 4` (values `4m..4m+4` are nibbles of piece `m`, low for `m < 4` and high
/// for the values `16 + ..` of masks 4..8), lane `l`, byte `v % 4`. So nibble `m` of a block's
/// GGUF `qh` (its bits `4m..4m+4`) is nibble `t·m + l` of the masks.
#[inline]
pub(super) fn fifth_bit_index(t: usize, l: usize, v: usize) -> usize {
    4 * t * (v / 4) + 4 * l + v % 4
}

/// Where byte `j` of block `l`'s GGUF encoding lives in a packed group of `t` blocks (not for
/// Q5_0's `qh` bytes, whose bits go to [`fifth_bit_index`]).
#[inline]
pub(super) fn packed_offset(fmt: QuantFormat, t: usize, l: usize, j: usize) -> usize {
    let head = head_bytes(fmt);
    if j < 2 {
        2 * l + j
    } else if j < head {
        2 * t + 2 * l + (j - 2)
    } else {
        let at = gguf_values_at(fmt);
        assert!(j >= at, "byte {j} of a {fmt:?} block is fifth bits");
        let i = j - at;
        head * t + (i / 4) * 4 * t + 4 * l + i % 4
    }
}

/// What a value byte holds in the packed form: Q8_0's `q` offset by 128, nibbles as they are.
#[inline]
fn value_flip(fmt: QuantFormat) -> u8 {
    if fmt == QuantFormat::Q8_0 {
        0x80
    } else {
        0
    }
}

/// The groups of a row of `nb` blocks: `(first block, blocks in the group)`.
pub(super) fn groups(nb: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..nb)
        .step_by(LANES)
        .map(move |b0| (b0, LANES.min(nb - b0)))
}

/// One row of GGUF blocks (`src`) into the packed layout (`dst`, the same length).
fn pack_row(fmt: QuantFormat, src: &[u8], dst: &mut [u8]) {
    move_bytes(fmt, src, dst, true)
}

/// One packed row (`src`) back into GGUF blocks (`dst`, the same length): the inverse of
/// [`pack_row`]. Also takes any whole groups of a row (a span starting at a multiple of 8 blocks
/// and ending at a group's end). Types of 32-value blocks only: super-block types are read back
/// by [`dequantize_packed`].
pub fn unpack_row(fmt: QuantFormat, src: &[u8], dst: &mut [u8]) {
    move_bytes(fmt, src, dst, false)
}

/// The largest block the packed layout holds: an `f16` scale and minimum, then at most a byte per
/// value.
const MAX_BLOCK_BYTES: usize = 4 + QK;

/// One packed row (`src`, whole blocks of `fmt`) dequantized into `dst`, a group at a time
/// through a buffer on the stack: embedding lookups of a packed matrix, which run for every token.
pub fn dequantize_packed(fmt: QuantFormat, src: &[u8], dst: &mut [f32]) {
    if let Some(sb) = fmt.super_block() {
        return super_block::dequantize_packed(sb, src, dst);
    }
    let (bb, bv) = (fmt.block_bytes(), fmt.block_values());
    assert!(bb <= MAX_BLOCK_BYTES, "{fmt:?} blocks are not packed");
    let mut blocks = [0u8; LANES * MAX_BLOCK_BYTES];
    for (b0, t) in groups(src.len() / bb) {
        let group = &mut blocks[..t * bb];
        unpack_row(fmt, &src[b0 * bb..(b0 + t) * bb], group);
        fmt.dequantize(group, &mut dst[b0 * bv..(b0 + t) * bv]);
    }
}

/// Every byte of a row between its GGUF place and its packed place ([`packed_offset`], written
/// out here for speed: this runs over every weight at load), in the direction `pack` says: the
/// `f16` scales 2 bytes at a time, the values 4 at a time (a piece's share of one block),
/// flipping Q8_0's offset on the way; then Q5_0's fifth bits ([`move_fifth_bits`]).
fn move_bytes(fmt: QuantFormat, src: &[u8], dst: &mut [u8], pack: bool) {
    let bb = fmt.block_bytes();
    let head = head_bytes(fmt);
    let values = gguf_values_at(fmt);
    let flip = u32::from_ne_bytes([value_flip(fmt); 4]);
    let pieces = (bb - values) / 4;
    for (b0, t) in groups(src.len() / bb) {
        let (s, d) = (
            &src[b0 * bb..(b0 + t) * bb],
            &mut dst[b0 * bb..(b0 + t) * bb],
        );
        let mut copy = |gguf: usize, packed: usize, len: usize, flip: u32| {
            let (from, to) = if pack { (gguf, packed) } else { (packed, gguf) };
            if len == 4 {
                let v = u32::from_ne_bytes(s[from..from + 4].try_into().unwrap()) ^ flip;
                d[to..to + 4].copy_from_slice(&v.to_ne_bytes());
            } else {
                d[to..to + 2].copy_from_slice(&s[from..from + 2]);
            }
        };
        for l in 0..t {
            copy(l * bb, 2 * l, 2, 0);
            if head == 4 {
                copy(l * bb + 2, 2 * t + 2 * l, 2, 0);
            }
            for c in 0..pieces {
                copy(l * bb + values + 4 * c, head * t + 4 * (c * t + l), 4, flip);
            }
        }
        if fmt == QuantFormat::Q5_0 {
            move_fifth_bits(s, d, t, pack);
        }
    }
}

/// Q5_0's fifth bits of a group of `t` blocks between their GGUF place (`qh`: bytes 2..6 of each
/// block, bit `v` for value `v`) and the group's masks ([`fifth_bit_index`]): nibble `m` of block
/// `l`'s `qh` is nibble `t·m + l` of the masks.
fn move_fifth_bits(src: &[u8], dst: &mut [u8], t: usize, pack: bool) {
    let masks = q5_0_masks_at(t);
    for l in 0..t {
        let qh_at = l * Q5_0_BYTES + 2;
        if pack {
            let qh = u32::from_le_bytes(src[qh_at..qh_at + 4].try_into().unwrap());
            for m in 0..8 {
                let (at, shift) = (masks + (t * m + l) / 2, 4 * ((t * m + l) % 2));
                let nibble = ((qh >> (4 * m)) & 0xF) as u8;
                dst[at] = (dst[at] & !(0xF << shift)) | (nibble << shift);
            }
        } else {
            let mut qh = 0u32;
            for m in 0..8 {
                let (at, shift) = (masks + (t * m + l) / 2, 4 * ((t * m + l) % 2));
                qh |= (((src[at] >> shift) & 0xF) as u32) << (4 * m);
            }
            dst[qh_at..qh_at + 4].copy_from_slice(&qh.to_le_bytes());
        }
    }
}

/// A packed Q5_0 group of `t` blocks (`src`, `22·t` bytes) as the full group of 8 blocks that the
/// SIMD kernels read, the blocks past `t` zero (`d = 0`, every value 0): the masks of a short group
/// are `4·t` bits wide, a full group's 32. Runs once per row (its short last group), so it is
/// written for speed: a few copies and 8 shifts.
pub(super) fn q5_0_full_group(src: &[u8], t: usize) -> [u8; LANES * Q5_0_BYTES] {
    debug_assert!(t <= LANES && src.len() == t * Q5_0_BYTES);
    let mut g = [0u8; LANES * Q5_0_BYTES];
    g[..2 * t].copy_from_slice(&src[..2 * t]);
    for c in 0..4 {
        g[2 * LANES + 4 * LANES * c..][..4 * t].copy_from_slice(&src[2 * t + 4 * t * c..][..4 * t]);
    }
    // The bit string of the masks, with room for an 8-byte read at any mask's start.
    let mut bits = [0u8; 4 * LANES + 8];
    bits[..4 * t].copy_from_slice(&src[q5_0_masks_at(t)..][..4 * t]);
    let width = 4 * t;
    for m in 0..8 {
        let at = width * m;
        let word = u64::from_le_bytes(bits[at / 8..at / 8 + 8].try_into().unwrap()) >> (at % 8);
        let mask = (word & ((1u64 << width) - 1)) as u32;
        g[q5_0_masks_at(LANES) + 4 * m..][..4].copy_from_slice(&mask.to_le_bytes());
    }
    g
}

/// Rows of GGUF blocks (each `fmt.row_bytes(k)` bytes, `k` a multiple of the block size) in the
/// packed layout the kernels read (rows of `fmt.packed_row_bytes(k)` bytes: super-block types'
/// differ, see `super_block.rs`), in a buffer for weights (huge pages where the OS allows).
///
/// # Panics
/// If `fmt` has no kernels ([`QuantFormat::has_kernels`]), or `w` is not a whole number of rows.
pub fn pack_rows(fmt: QuantFormat, w: &[u8], k: usize) -> Vec<u8> {
    let (rb, pb) = (fmt.row_bytes(k), fmt.packed_row_bytes(k));
    assert!(
        fmt.has_kernels()
            && k.is_multiple_of(fmt.block_values())
            && (rb == 0 || w.len().is_multiple_of(rb)),
        "pack_rows: {} bytes are not rows of {k} {fmt:?} values",
        w.len()
    );
    let rows = w.len().checked_div(rb).unwrap_or(0);
    let mut out = crate::memory::byte_buffer(rows * pb);
    if rb > 0 {
        out.par_chunks_mut(pb)
            .zip(w.par_chunks(rb))
            .for_each(|(dst, src)| match fmt.super_block() {
                Some(sb) => super_block::pack_row(sb, fmt.block_bytes(), src, dst),
                None => pack_row(fmt, src, dst),
            });
    }
    out
}

/// Value `v` (0..32) of block `l` in a packed group of `t` blocks, as the integer the kernels
/// multiply: the nibble (Q4_0 without its `- 8`), Q5_0's 5-bit `q` (without its `- 16`) or Q8_0's
/// signed `q`.
#[cfg(test)]
pub(super) fn packed_value(fmt: QuantFormat, group: &[u8], t: usize, l: usize, v: usize) -> i32 {
    let at = gguf_values_at(fmt);
    match fmt {
        QuantFormat::Q8_0 => group[packed_offset(fmt, t, l, at + v)] as i32 - 128,
        QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q5_0 => {
            let byte = group[packed_offset(fmt, t, l, at + v % (QK / 2))];
            let nibble = (if v < QK / 2 { byte & 0x0F } else { byte >> 4 }) as i32;
            if fmt == QuantFormat::Q5_0 {
                let bit = fifth_bit_index(t, l, v);
                let fifth = (group[q5_0_masks_at(t) + bit / 8] >> (bit % 8)) & 1;
                nibble | (fifth as i32) << 4
            } else {
                nibble
            }
        }
        _ => unreachable!("{fmt:?} has no packed layout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::random;

    /// The types of this layout (super-block types have `super_block.rs`'s).
    fn block32_formats() -> impl Iterator<Item = QuantFormat> {
        QuantFormat::all().filter(|f| f.has_kernels() && f.super_block().is_none())
    }

    /// Packing is a permutation of each row's bytes (plus Q8_0's offset) that unpacking undoes,
    /// for full groups, short last groups, and rows of one block.
    #[test]
    fn pack_then_unpack_is_the_identity() {
        for fmt in block32_formats() {
            for k in [32, 96, 256, 288, 576] {
                let n = 3;
                let w: Vec<u8> = random(n * fmt.row_bytes(k), k as u64)
                    .iter()
                    .map(|v| ((v + 1.0) * 127.9) as u8)
                    .collect();
                let packed = pack_rows(fmt, &w, k);
                let rb = fmt.row_bytes(k);
                let mut back = vec![0u8; w.len()];
                for (dst, src) in back.chunks_exact_mut(rb).zip(packed.chunks_exact(rb)) {
                    unpack_row(fmt, src, dst);
                }
                assert_eq!(back, w, "{fmt:?} k={k}");
            }
        }
    }

    /// The bytes of a block that [`packed_offset`] places: all but Q5_0's fifth bits.
    fn placed_bytes(fmt: QuantFormat) -> impl Iterator<Item = usize> {
        let qh = if fmt == QuantFormat::Q5_0 { 2..6 } else { 0..0 };
        (0..fmt.block_bytes()).filter(move |j| !qh.contains(j))
    }

    /// The packer puts byte `j` of block `l` where [`packed_offset`] says (Q8_0 values flipped),
    /// and `packed_value` reads every value back (Q5_0's fifth bits included).
    #[test]
    fn packing_follows_packed_offset() {
        for fmt in block32_formats() {
            let bb = fmt.block_bytes();
            let nb = 11; // a full group and a short one
            let w: Vec<u8> = (0..nb * bb).map(|i| (i * 7 % 251) as u8).collect();
            let p = pack_rows(fmt, &w, nb * QK);
            for (b0, t) in groups(nb) {
                for l in 0..t {
                    // The block with d = 1 (and Q4_1's m = 0): its values are the integers the
                    // kernels multiply, less the offsets they take out.
                    let mut block = w[(b0 + l) * bb..][..bb].to_vec();
                    block[..head_bytes(fmt)].fill(0);
                    block[1] = 0x3C;
                    let mut values = [0f32; QK];
                    fmt.dequantize(&block, &mut values);
                    let offset = match fmt {
                        QuantFormat::Q4_0 => 8,
                        QuantFormat::Q5_0 => 16,
                        _ => 0,
                    };
                    for (v, &want) in values.iter().enumerate() {
                        let got = packed_value(fmt, &p[b0 * bb..], t, l, v) - offset;
                        assert_eq!(got, want as i32, "{fmt:?} block {} value {v}", b0 + l);
                    }
                    for j in placed_bytes(fmt) {
                        let flip = if j >= head_bytes(fmt) {
                            value_flip(fmt)
                        } else {
                            0
                        };
                        let at = b0 * bb + packed_offset(fmt, t, l, j);
                        assert_eq!(
                            p[at],
                            w[(b0 + l) * bb + j] ^ flip,
                            "{fmt:?} block {} byte {j}",
                            b0 + l
                        );
                    }
                }
            }
        }
    }

    /// The offsets of a group (and Q5_0's fifth-bit indices) cover its bytes exactly once.
    #[test]
    fn packed_offsets_are_a_permutation() {
        for fmt in block32_formats() {
            let bb = fmt.block_bytes();
            for t in 1..=LANES {
                let mut seen = vec![false; 8 * t * bb];
                let mut mark = |bit: usize| {
                    assert!(!seen[bit], "{fmt:?} t={t}: bit {bit} twice");
                    seen[bit] = true;
                };
                for l in 0..t {
                    for j in placed_bytes(fmt) {
                        let at = packed_offset(fmt, t, l, j);
                        (0..8).for_each(|i| mark(8 * at + i));
                    }
                    if fmt == QuantFormat::Q5_0 {
                        for v in 0..QK {
                            mark(8 * q5_0_masks_at(t) + fifth_bit_index(t, l, v));
                        }
                    }
                }
                assert!(seen.iter().all(|&s| s), "{fmt:?} t={t}");
            }
        }
    }

    /// A short Q5_0 group expanded for the SIMD kernels is the packed full group of its blocks
    /// followed by zero blocks.
    #[test]
    fn q5_0_full_group_is_the_zero_padded_group() {
        let fmt = QuantFormat::Q5_0;
        for t in 1..=LANES {
            let w: Vec<u8> = random(t * Q5_0_BYTES, t as u64)
                .iter()
                .map(|v| ((v + 1.0) * 127.9) as u8)
                .collect();
            let mut padded = w.clone();
            padded.resize(LANES * Q5_0_BYTES, 0);
            let want = pack_rows(fmt, &padded, LANES * QK);
            let got = q5_0_full_group(&pack_rows(fmt, &w, t * QK), t);
            assert_eq!(got.as_slice(), want.as_slice(), "t={t}");
        }
    }

    /// In a full group, 32-bit lane `l` of piece `c` is block `l`'s bytes `4c..4c+4` (the kernels'
    /// one-load-per-piece view), and `packed_value` reads the GGUF values back.
    #[test]
    fn full_group_lanes_hold_one_block_each() {
        let fmt = QuantFormat::Q4_1;
        let bb = fmt.block_bytes();
        let w: Vec<u8> = (0..LANES * bb).map(|i| (i * 7 % 251) as u8).collect();
        let p = pack_rows(fmt, &w, LANES * QK);
        for c in 0..4 {
            for l in 0..LANES {
                let lane = &p[4 * LANES + 32 * c + 4 * l..][..4];
                assert_eq!(lane, &w[l * bb + 4 + 4 * c..][..4], "piece {c} lane {l}");
            }
        }
        for l in 0..LANES {
            for v in 0..QK {
                let byte = w[l * bb + 4 + v % 16];
                let want = if v < 16 { byte & 15 } else { byte >> 4 };
                assert_eq!(packed_value(fmt, &p, LANES, l, v), want as i32);
            }
        }
    }
}
