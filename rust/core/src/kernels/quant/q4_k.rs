//! Q4_K (ggml's `block_q4_K`): a super-block of 256 values in 144 bytes,
//! `f16 d; f16 dmin; u8 scales[12]; u8 qs[128]`. The 256 values are 8 sub-blocks of 32, each with
//! a 6-bit scale `sc` and a 6-bit minimum `m` packed into `scales` ([`scale_min`]); value `v` of
//! sub-block `s` is `w = (d·sc)·q - dmin·m` with `q` a 4-bit nibble. The nibbles go by pairs of
//! sub-blocks: bytes `32i..32i+32` of `qs` hold sub-block `2i` in their low nibbles and
//! sub-block `2i + 1` in their high nibbles.

use half::f16;

use super::super_block::{Parts, SuperBlock, Values};
use super::types::{BlockFacts, QuantFormat};

/// Values per super-block (ggml's `QK_K`).
const VALUES: usize = 256;
/// Values per sub-block.
const SUB: usize = 32;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q4_K,
    ggml_id: 12,
    name: "Q4_K",
    block_values: VALUES,
    block_bytes: 2 + 2 + 12 + VALUES / 2,
    dequantize,
    packed_kernels: false,
    transcode: None,
    super_block: Some(&SUPER),
};

/// Sub-block `s`'s 6-bit scale and minimum from the 12 packed bytes (ggml's
/// `get_scale_min_k4`, shared with Q5_K): sub-blocks 0..4 keep theirs in the low 6 bits of bytes
/// `s` (scale) and `s + 4` (minimum); sub-blocks 4..8 have their low 4 bits in byte `s + 4`
/// (scale low nibble, minimum high nibble) and their top 2 bits in the spare top bits of bytes
/// `s - 4` and `s`.
#[inline]
pub(super) fn scale_min(scales: &[u8], s: usize) -> (u8, u8) {
    if s < 4 {
        (scales[s] & 63, scales[s + 4] & 63)
    } else {
        (
            (scales[s + 4] & 0x0F) | ((scales[s - 4] >> 6) << 4),
            (scales[s + 4] >> 4) | ((scales[s] >> 6) << 4),
        )
    }
}

/// `x = (d·sc)·q - dmin·m`, the two products rounded to `f32` first, then the product with `q`,
/// then the difference, without fusing (ggml's `dequantize_row_q4_K`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
        let (scales, qs) = (&b[4..16], &b[16..]);
        for (s, ys) in y.chunks_exact_mut(SUB).enumerate() {
            let (sc, m) = scale_min(scales, s);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let bytes = &qs[SUB * (s / 2)..][..SUB];
            let shift = 4 * (s % 2);
            for (x, q) in ys.iter_mut().zip(bytes) {
                *x = dl * ((q >> shift) & 0x0F) as f32 - ml;
            }
        }
    }
}

/// For the super-block kernels: `w = (d·sc)·q - dmin·m` per sub-block of 32, `q` a nibble.
const SUPER: SuperBlock = SuperBlock {
    scale_values: SUB,
    mins: true,
    values: Values::U4,
    offset: 0,
    split,
};

/// One super-block's `d`, `dmin`, 6-bit scales and minimums, and nibbles, as they are.
fn split(b: &[u8], p: &mut Parts) {
    p.d = f16::from_le_bytes([b[0], b[1]]);
    p.dmin = f16::from_le_bytes([b[2], b[3]]);
    let (scales, qs) = (&b[4..16], &b[16..FACTS.block_bytes]);
    for s in 0..VALUES / SUB {
        let (sc, m) = scale_min(scales, s);
        (p.sc[s], p.m[s]) = (sc as i8, m);
        let bytes = &qs[SUB * (s / 2)..][..SUB];
        for (u, q) in p.u[SUB * s..][..SUB].iter_mut().zip(bytes) {
            *u = (q >> (4 * (s % 2))) & 0x0F;
        }
    }
}
