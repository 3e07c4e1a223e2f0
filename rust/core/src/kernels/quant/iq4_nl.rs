//! IQ4_NL (ggml's `block_iq4_nl`): 32 values in 18 bytes, `f16 d; u8 qs[16]`, each value
//! `w = CODEBOOK[nibble]·d`: 4-bit indices (in Q4_0's nibble order: byte `j` holds values `j` and
//! `j + 16`) into a fixed non-linear table of 16 signed 8-bit levels, denser near zero where
//! weights cluster. llama.cpp's fallback for Q2_K/Q3_K/IQ4_XS tensors whose rows are not whole
//! 256-value super-blocks.
//!
//! Every level is an int8, so every block is exactly a Q8_0 block (same `d`, the levels as
//! int8): loaders run IQ4_NL weights as Q8_0 ([`to_q8_0`]), 34 bytes per 32 values instead of 18,
//! for the native kernels.

use half::f16;

use super::types::{BlockFacts, QuantFormat, Transcode};

const VALUES: usize = 32;

/// ggml's `kvalues_iq4nl`: the 16 levels an index selects.
pub(super) const CODEBOOK: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::IQ4_NL,
    ggml_id: 20,
    name: "IQ4_NL",
    block_values: VALUES,
    block_bytes: 2 + VALUES / 2,
    dequantize,
    packed_kernels: false,
    transcode: Some(Transcode {
        to: QuantFormat::Q8_0,
        block: to_q8_0,
    }),
    super_block: None,
};

/// `x[j] = CODEBOOK[qs[j] & 0xF]·d`, `x[j + 16] = CODEBOOK[qs[j] >> 4]·d` (ggml's
/// `dequantize_row_iq4_nl`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let (lo, hi) = y.split_at_mut(VALUES / 2);
        for ((q, l), h) in b[2..].iter().zip(lo).zip(hi) {
            *l = CODEBOOK[(q & 0x0F) as usize] as f32 * d;
            *h = CODEBOOK[(q >> 4) as usize] as f32 * d;
        }
    }
}

/// The block as Q8_0's `f16 d; i8 qs[32]`: the same `d` bytes, `qs[v]` the level value `v`'s
/// nibble selects. Q8_0's `qs[v]·d` is then this block's `CODEBOOK[nibble]·d`, the same operation
/// on the same operands.
fn to_q8_0(src: &[u8], dst: &mut [u8]) {
    dst[..2].copy_from_slice(&src[..2]);
    let (lo, hi) = dst[2..2 + VALUES].split_at_mut(VALUES / 2);
    for ((q, l), h) in src[2..].iter().zip(lo).zip(hi) {
        *l = CODEBOOK[(q & 0x0F) as usize] as u8;
        *h = CODEBOOK[(q >> 4) as usize] as u8;
    }
}
