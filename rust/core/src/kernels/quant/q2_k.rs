//! Q2_K (ggml's `block_q2_K`): a super-block of 256 values in 84 bytes,
//! `u8 scales[16]; u8 qs[64]; f16 d; f16 dmin`. The 256 values are 16 sub-blocks of 16, each with
//! a 4-bit scale (low nibble of `scales[s]`) and a 4-bit minimum (high nibble); value `v` is
//! `w = (d·sc)·q - dmin·m` with the 2-bit `q` at bits `2·((v / 32) % 4)` of byte
//! `32·(v / 128) + v % 32` of `qs`. Q2_K files use it for most matrices.

use half::f16;

use super::super_block::{Parts, SuperBlock, Values};
use super::types::{BlockFacts, QuantFormat};

/// Values per super-block (ggml's `QK_K`).
const VALUES: usize = 256;
/// Values per sub-block (one scale and minimum each).
const SUB: usize = 16;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q2_K,
    ggml_id: 10,
    name: "Q2_K",
    block_values: VALUES,
    block_bytes: VALUES / 16 + VALUES / 4 + 2 + 2,
    dequantize,
    packed_kernels: false,
    transcode: None,
    super_block: Some(&SUPER),
};

/// `x = (d·sc)·q - dmin·m`, the two products rounded to `f32` first, then the product with `q`,
/// then the difference, without fusing (ggml's `dequantize_row_q2_K`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let (scales, qs) = (&b[..16], &b[16..80]);
        let d = f16::from_le_bytes([b[80], b[81]]).to_f32();
        let dmin = f16::from_le_bytes([b[82], b[83]]).to_f32();
        for (v, x) in y.iter_mut().enumerate() {
            let sm = scales[v / SUB];
            let (dl, ml) = (d * (sm & 0x0F) as f32, dmin * (sm >> 4) as f32);
            let q = (qs[32 * (v / 128) + v % 32] >> (2 * ((v / 32) % 4))) & 0x03;
            *x = dl * q as f32 - ml;
        }
    }
}

/// For the super-block kernels: `w = (d·sc)·q - dmin·m` per 16 values, `q` 2 bits (a 4-bit kind
/// whose top bits are clear).
const SUPER: SuperBlock = SuperBlock {
    scale_values: SUB,
    mins: true,
    values: Values::U4,
    offset: 0,
    split,
};

/// One super-block's `d`, `dmin`, 4-bit scales and minimums, and 2-bit values, as they are.
fn split(b: &[u8], p: &mut Parts) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    p.d = f16::from_le_bytes([b[80], b[81]]);
    p.dmin = f16::from_le_bytes([b[82], b[83]]);
    for (s, &sm) in scales.iter().enumerate() {
        (p.sc[s], p.m[s]) = ((sm & 0x0F) as i8, sm >> 4);
    }
    for (v, u) in p.u.iter_mut().enumerate() {
        *u = (qs[32 * (v / 128) + v % 32] >> (2 * ((v / 32) % 4))) & 0x03;
    }
}
