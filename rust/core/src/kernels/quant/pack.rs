//! The packed weight layout the quantized kernels read (see [`super`]): GGUF rows rearranged once
//! at load so that one vector load holds 4 consecutive values of each of 8 blocks.
//!
//! A packed row has the size and place of the GGUF row. Inside it, the blocks go in groups of 8
//! (a row's last group may be shorter: `t` blocks); a group of `t` blocks holds
//!
//! 1. the `t` scales `d` (`f16`), then for Q4_1 and Q5_1 the `t` minimums `m` (`f16`): one
//!    contiguous load per group instead of one strided read per block;
//! 2. the blocks' value bytes in pieces of `4·t` bytes: piece `c` is bytes `4c..4c+4` of block 0,
//!    of block 1, ..., of block `t-1` (4 pieces for the 16 nibble bytes of Q4_0/Q4_1, 8 for the
//!    32 bytes of Q8_0; for Q5_0 and Q5_1 first its `u32 qh`, one piece, then its 4 nibble
//!    pieces).
//!
//! In a full group, that `qh` piece is stored transposed by nibbles ([`qh_masks`]): as 8 masks,
//! one per register of nibbles the kernels make (values `4c..4c+4` of each block: the low nibbles
//! of piece `c`, then for `c = 4..8` the high nibbles of piece `c - 4`), bit `4l + j` of mask `c`
//! being the fifth bit of value `4c + j` of block `l`. The AVX-512 kernel then loads two masks
//! as the `k` mask of a masked add, the AVX2 one spreads a mask to bytes as llama.cpp does: no
//! per-lane byte shuffle and bit test. A short last group keeps the blocks' `qh` in its lanes
//! (any short group's lanes load as any other piece's), which the kernels spread lane by lane.
//! (Measured on one Sapphire Rapids thread: the masks took Q5_0 from 31 to 41 GMAC/s at a
//! decode shape streamed from memory; widening a short group's narrower masks instead cost
//! 37 ns a row on the 896-value rows of Qwen2.5-0.5B, about the row's whole product.)
//!
//! So in a full group piece `c` is one 32-byte vector whose 32-bit lane `l` holds block `l`'s
//! values `4c..4c+4` (Q8_0), or in its low nibbles values `4c..4c+4` and in its high nibbles
//! values `16+4c..16+4c+4` (GGUF's Q4 byte `j` holds values `j` and `j + 16`). Q8_0 bytes are stored
//! as `q + 128` (`q` XOR 0x80): the unsigned form `vpdpbusd` multiplies; the kernels take the
//! offset back out exactly.

use rayon::prelude::*;

use super::{super_block, QuantFormat, LANES, QK};

/// Bytes of a block's header: `d`, and for Q4_1 also `m`.
pub(super) const fn head_bytes(fmt: QuantFormat) -> usize {
    match fmt {
        QuantFormat::Q4_1 | QuantFormat::Q5_1 => 4,
        QuantFormat::Q4_0 | QuantFormat::Q8_0 | QuantFormat::Q5_0 => 2,
        _ => panic!("no packed layout for this block type"),
    }
}

/// Where byte `j` of block `l`'s GGUF encoding lives in a packed group of `t` blocks.
#[inline]
pub(super) fn packed_offset(fmt: QuantFormat, t: usize, l: usize, j: usize) -> usize {
    let head = head_bytes(fmt);
    if j < 2 {
        2 * l + j
    } else if j < head {
        2 * t + 2 * l + (j - 2)
    } else {
        let i = j - head;
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

/// Whether the type's values have a fifth bit in a `qh` piece (Q5_0, Q5_1).
pub(super) const fn has_qh(fmt: QuantFormat) -> bool {
    matches!(fmt, QuantFormat::Q5_0 | QuantFormat::Q5_1)
}

/// A full group's `qh` piece (8 little-endian `u32`: block `l`'s `qh`) as its 8 masks (mask `c`:
/// nibble `l` = nibble `c` of block `l`'s `qh`), or back: the transpose of an 8×8 matrix of
/// nibbles, its own inverse.
pub(super) fn qh_masks(piece: &mut [u8]) {
    let words: [u32; LANES] =
        std::array::from_fn(|a| u32::from_le_bytes(piece[4 * a..4 * a + 4].try_into().unwrap()));
    for b in 0..LANES {
        let t = (0..LANES).fold(0u32, |t, a| t | ((words[a] >> (4 * b)) & 0xF) << (4 * a));
        piece[4 * b..4 * b + 4].copy_from_slice(&t.to_le_bytes());
    }
}

/// Every byte of a row between its GGUF place and its packed place ([`packed_offset`], written
/// out here for speed: this runs over every weight at load), in the direction `pack` says: the
/// `f16` scales 2 bytes at a time, the values 4 at a time (a piece's share of one block),
/// flipping Q8_0's offset on the way; a full group's `qh` piece transposed ([`qh_masks`]).
fn move_bytes(fmt: QuantFormat, src: &[u8], dst: &mut [u8], pack: bool) {
    let bb = fmt.block_bytes();
    let head = head_bytes(fmt);
    let flip = u32::from_ne_bytes([value_flip(fmt); 4]);
    let pieces = (bb - head) / 4;
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
                copy(l * bb + head + 4 * c, head * t + 4 * (c * t + l), 4, flip);
            }
        }
        if has_qh(fmt) && t == LANES {
            let masks = head * LANES;
            if pack {
                qh_masks(&mut d[masks..masks + 4 * LANES]);
            } else {
                // The masks were copied out as if they were the blocks' `qh`: gather, transpose,
                // put back.
                let mut piece = [0u8; 4 * LANES];
                for (l, q) in piece.chunks_exact_mut(4).enumerate() {
                    q.copy_from_slice(&d[l * bb + head..][..4]);
                }
                qh_masks(&mut piece);
                for (l, q) in piece.chunks_exact(4).enumerate() {
                    d[l * bb + head..][..4].copy_from_slice(q);
                }
            }
        }
    }
}

/// Rows of GGUF blocks (each `fmt.row_bytes(k)` bytes, `k` a multiple of the block size) in the
/// packed layout the kernels read (rows of `fmt.packed_row_bytes(k)` bytes: super-block types'
/// differ, see `super_block.rs`), in a buffer for weights (huge pages where the OS allows).
///
/// # Panics
/// If `fmt` has no kernels ([`QuantFormat::has_kernels`]), or `w` is not a whole number of rows.
pub fn pack_rows(fmt: QuantFormat, w: &[u8], k: usize) -> Vec<u8> {
    pack_rows_then(fmt, w, k, &|_| {})
}

/// Source bytes packed between two calls of [`pack_rows_then`]'s `done` (a few MB: the source's
/// pages can then be dropped while the rest is packed).
const PACK_CHUNK_BYTES: usize = 8 << 20;

/// [`pack_rows`], a chunk of whole rows at a time, calling `done` with each chunk of `w` once it
/// is packed: a loader releases the mapped file pages there, so that a large matrix never has
/// both its file pages and its packed copy resident.
pub fn pack_rows_then(
    fmt: QuantFormat,
    w: &[u8],
    k: usize,
    done: &(dyn Fn(&[u8]) + Sync),
) -> Vec<u8> {
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
    // (Rows of zero bytes, k = 0: nothing to pack.)
    if let Some(chunk_rows) = PACK_CHUNK_BYTES.checked_div(rb) {
        let chunk_rows = chunk_rows.max(1);
        for (dst, src) in out
            .chunks_mut(chunk_rows * pb)
            .zip(w.chunks(chunk_rows * rb))
        {
            dst.par_chunks_mut(pb)
                .zip(src.par_chunks(rb))
                .for_each(|(dst, src)| match fmt.super_block() {
                    Some(sb) => super_block::pack_row(sb, fmt.block_bytes(), src, dst),
                    None => pack_row(fmt, src, dst),
                });
            done(src);
        }
    }
    out
}

/// Value `v` (0..32) of block `l` in a packed group of `t` blocks, as the integer the kernels
/// multiply: the nibble (Q4_0 without its `- 8`) or Q8_0's signed `q`.
#[cfg(test)]
pub(super) fn packed_value(fmt: QuantFormat, group: &[u8], t: usize, l: usize, v: usize) -> i32 {
    let head = head_bytes(fmt);
    match fmt {
        QuantFormat::Q8_0 => group[packed_offset(fmt, t, l, head + v)] as i32 - 128,
        QuantFormat::Q4_0 | QuantFormat::Q4_1 => {
            let byte = group[packed_offset(fmt, t, l, head + v % (QK / 2))];
            (if v < QK / 2 { byte & 0x0F } else { byte >> 4 }) as i32
        }
        QuantFormat::Q5_0 | QuantFormat::Q5_1 => {
            let mut qh: [u8; 4] =
                std::array::from_fn(|j| group[packed_offset(fmt, t, l, head + j)]);
            if t == LANES {
                // Masks: bit 4l + j of mask c is bit 4c + j of block l's qh.
                let mask = |c: usize| {
                    u32::from_le_bytes(group[head * LANES + 4 * c..][..4].try_into().unwrap())
                };
                let word =
                    (0..LANES).fold(0u32, |q, c| q | ((mask(c) >> (4 * l)) & 0xF) << (4 * c));
                qh = word.to_le_bytes();
            }
            let qs: [u8; 16] =
                std::array::from_fn(|j| group[packed_offset(fmt, t, l, head + 4 + j)]);
            super::q5_0::value(u32::from_le_bytes(qh), &qs, v) as i32
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

    /// The packer puts byte `j` of block `l` where [`packed_offset`] says (Q8_0 values flipped),
    /// and `packed_value` reads back the values the type's own dequantizer sees.
    #[test]
    fn packing_follows_packed_offset() {
        for fmt in block32_formats() {
            let bb = fmt.block_bytes();
            let nb = 11; // a full group and a short one
            let w: Vec<u8> = (0..nb * bb).map(|i| (i * 7 % 251) as u8).collect();
            let p = pack_rows(fmt, &w, nb * QK);
            for (b0, t) in groups(nb) {
                for l in 0..t {
                    // The block with d = 1 (and a minimum m = 0): its values are the integers
                    // the kernels multiply, less the offsets they take out.
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
                    // A full group's `qh` bytes are transposed into masks: checked through
                    // `packed_value` above and in `full_group_lanes_hold_one_block_each`.
                    let qh = head_bytes(fmt)..head_bytes(fmt) + 4;
                    for j in (0..bb).filter(|j| !(has_qh(fmt) && t == LANES && qh.contains(j))) {
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

    /// The offsets of a group cover its bytes exactly once.
    #[test]
    fn packed_offsets_are_a_permutation() {
        for fmt in block32_formats() {
            let bb = fmt.block_bytes();
            for t in 1..=LANES {
                let mut seen = vec![false; t * bb];
                for l in 0..t {
                    for j in 0..bb {
                        let at = packed_offset(fmt, t, l, j);
                        assert!(!seen[at], "{fmt:?} t={t}: offset {at} twice");
                        seen[at] = true;
                    }
                }
                assert!(seen.iter().all(|&s| s), "{fmt:?} t={t}");
            }
        }
    }

    /// In a full group, 32-bit lane `l` of piece `c` is block `l`'s bytes `4c..4c+4` (the kernels'
    /// one-load-per-piece view), and `packed_value` reads the GGUF values back (Q4_1, Q5_1).
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
        // Q5_1: piece 0 is each block's `qh`, the nibbles follow; values as the GGUF block's.
        let fmt = QuantFormat::Q5_1;
        let bb = fmt.block_bytes();
        let w: Vec<u8> = (0..LANES * bb).map(|i| (i * 13 % 251) as u8).collect();
        let p = pack_rows(fmt, &w, LANES * QK);
        for l in 0..LANES {
            let b = &w[l * bb..(l + 1) * bb];
            let qh = u32::from_le_bytes(b[4..8].try_into().unwrap());
            // Mask c (after the scales and minimums), nibble l: nibble c of the block's qh.
            for c in 0..LANES {
                let mask = u32::from_le_bytes(p[4 * LANES + 4 * c..][..4].try_into().unwrap());
                assert_eq!(
                    (mask >> (4 * l)) & 0xF,
                    (qh >> (4 * c)) & 0xF,
                    "block {l} mask {c}"
                );
            }
            for v in 0..QK {
                let want = super::super::q5_0::value(qh, &b[8..], v);
                assert_eq!(packed_value(fmt, &p, LANES, l, v), want as i32, "{l} {v}");
            }
        }
    }
}
