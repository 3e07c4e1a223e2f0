//! IQ4_XS (ggml's `block_iq4_xs`): a super-block of 256 values in 136 bytes,
//! `f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]`. The 256 values are 8 sub-blocks of 32, each
//! with a signed 6-bit scale ([`scale`]); value `i` of sub-block `s` is
//! `w = (d·sc)·CODEBOOK[nibble]`, IQ4_NL's codebook ([`iq4_nl::CODEBOOK`]), the nibbles of each
//! sub-block in Q4_0's order within its 16 bytes `qs[16s..16s + 16]`.

use half::f16;

use super::iq4_nl::CODEBOOK;
use super::super_block::{Parts, SuperBlock, Values};
use super::types::{BlockFacts, QuantFormat};

/// Values per super-block (ggml's `QK_K`).
const VALUES: usize = 256;
/// Values per sub-block (one scale each).
const SUB: usize = 32;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::IQ4_XS,
    ggml_id: 23,
    name: "IQ4_XS",
    block_values: VALUES,
    block_bytes: 2 + 2 + VALUES / 64 + VALUES / 2,
    dequantize,
    packed_kernels: false,
    transcode: None,
    super_block: Some(&SUPER),
};

/// Sub-block `s`'s (0..8) scale: low 4 bits from nibble `s % 2` of `scales_l[s / 2]`, top 2 bits
/// from bits `2s` of `scales_h`, stored offset by 32.
#[inline]
fn scale(scales_h: u16, scales_l: &[u8], s: usize) -> i8 {
    let low = (scales_l[s / 2] >> (4 * (s % 2))) & 0x0F;
    let high = ((scales_h >> (2 * s)) & 0x03) as u8;
    (low | (high << 4)) as i8 - 32
}

/// `x = (d·sc)·CODEBOOK[q]`, the scale product rounded to `f32` first (ggml's
/// `dequantize_row_iq4_xs`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let scales_h = u16::from_le_bytes([b[2], b[3]]);
        let (scales_l, qs) = (&b[4..8], &b[8..]);
        for (s, ys) in y.chunks_exact_mut(SUB).enumerate() {
            let dl = d * scale(scales_h, scales_l, s) as f32;
            let (lo, hi) = ys.split_at_mut(SUB / 2);
            for ((q, l), h) in qs[16 * s..][..16].iter().zip(lo).zip(hi) {
                *l = dl * CODEBOOK[(q & 0x0F) as usize] as f32;
                *h = dl * CODEBOOK[(q >> 4) as usize] as f32;
            }
        }
    }
}

/// For the super-block kernels: `w = (d·sc)·CODEBOOK[i]` per sub-block of 32, the nibble `i`
/// mapped through the codebook by the kernels ([`Values::Codebook`]).
const SUPER: SuperBlock = SuperBlock {
    scale_values: SUB,
    mins: false,
    values: Values::Codebook(&CODEBOOK),
    offset: 128,
    split,
};

/// One super-block's `d`, signed scales and codebook indices, as they are.
fn split(b: &[u8], p: &mut Parts) {
    p.d = f16::from_le_bytes([b[0], b[1]]);
    p.dmin = f16::ZERO;
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let (scales_l, qs) = (&b[4..8], &b[8..FACTS.block_bytes]);
    for s in 0..VALUES / SUB {
        p.sc[s] = scale(scales_h, scales_l, s);
        let (lo, hi) = p.u[SUB * s..][..SUB].split_at_mut(SUB / 2);
        for ((q, l), h) in qs[16 * s..][..16].iter().zip(lo).zip(hi) {
            (*l, *h) = (q & 0x0F, q >> 4);
        }
    }
}
