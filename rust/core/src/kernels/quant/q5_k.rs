//! Q5_K (ggml's `block_q5_K`): a super-block of 256 values in 176 bytes,
//! `f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]`. Q4_K with a fifth bit: 8 sub-blocks
//! of 32, each with a 6-bit scale `sc` and minimum `m` packed as Q4_K's ([`q4_k::scale_min`]);
//! value `i` of sub-block `s` is `w = (d·sc)·q - dmin·m` with the 5-bit `q` taking its low 4 bits
//! from `qs` in Q4_K's order (bytes `32·(s / 2)..`, low nibbles for even `s`, high for odd) and its
//! fifth bit from bit `s` of `qh[i]`. Q5_K_M files use it for most matrices.

use half::f16;

use super::q4_k;
use super::super_block::{Parts, SuperBlock, Values};
use super::types::{BlockFacts, QuantFormat};

/// Values per super-block (ggml's `QK_K`).
const VALUES: usize = 256;
/// Values per sub-block.
const SUB: usize = 32;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q5_K,
    ggml_id: 13,
    name: "Q5_K",
    block_values: VALUES,
    block_bytes: 2 + 2 + 12 + VALUES / 8 + VALUES / 2,
    dequantize,
    packed_kernels: false,
    transcode: None,
    super_block: Some(&SUPER),
};

/// `x = (d·sc)·q - dmin·m`, the two products rounded to `f32` first, then the product with `q`,
/// then the difference, without fusing (ggml's `dequantize_row_q5_K`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
        let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..]);
        for (s, ys) in y.chunks_exact_mut(SUB).enumerate() {
            let (sc, m) = q4_k::scale_min(scales, s);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let low = &qs[SUB * (s / 2)..][..SUB];
            let shift = 4 * (s % 2);
            for ((x, l), h) in ys.iter_mut().zip(low).zip(qh) {
                let q = ((l >> shift) & 0x0F) | (((h >> s) & 1) << 4);
                *x = dl * q as f32 - ml;
            }
        }
    }
}

/// For the super-block kernels: `w = (d·sc)·q - dmin·m` per sub-block of 32, `q` 5 bits (a 6-bit
/// kind whose top bit is always clear).
const SUPER: SuperBlock = SuperBlock {
    scale_values: SUB,
    mins: true,
    values: Values::U6,
    offset: 0,
    split,
};

/// One super-block's `d`, `dmin`, 6-bit scales and minimums, and 5-bit values, as they are.
fn split(b: &[u8], p: &mut Parts) {
    p.d = f16::from_le_bytes([b[0], b[1]]);
    p.dmin = f16::from_le_bytes([b[2], b[3]]);
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..FACTS.block_bytes]);
    for s in 0..VALUES / SUB {
        let (sc, m) = q4_k::scale_min(scales, s);
        (p.sc[s], p.m[s]) = (sc as i8, m);
        let low = &qs[SUB * (s / 2)..][..SUB];
        let shift = 4 * (s % 2);
        for ((u, l), h) in p.u[SUB * s..][..SUB].iter_mut().zip(low).zip(qh) {
            *u = ((l >> shift) & 0x0F) | (((h >> s) & 1) << 4);
        }
    }
}
