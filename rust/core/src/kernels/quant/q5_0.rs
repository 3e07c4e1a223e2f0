//! Q5_0 (ggml's `block_q5_0`): 32 values in 22 bytes, `f16 d; u8 qh[4]; u8 qs[16]`, each value
//! `w = (q - 16)·d` with the 5-bit `q` split: its low 4 bits in Q4_0's nibble order (byte `j` of
//! `qs`: values `j` and `j + 16`), its fifth bit as bit `v` of the little-endian `u32` `qh`.
//! llama.cpp's fallback for Q4_K tensors whose rows are not whole 256-value super-blocks.
//!
//! Every block is exactly a Q8_0 block (same `d`, `q - 16` as int8), so loaders run Q5_0 weights
//! as Q8_0 ([`to_q8_0`]): 34 bytes per 32 values instead of 22, for the native kernels.

use half::f16;

use super::types::{BlockFacts, QuantFormat, Transcode};

const VALUES: usize = 32;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q5_0,
    ggml_id: 6,
    name: "Q5_0",
    block_values: VALUES,
    block_bytes: 2 + 4 + VALUES / 2,
    dequantize,
    packed_kernels: false,
    transcode: Some(Transcode {
        to: QuantFormat::Q8_0,
        block: to_q8_0,
    }),
    super_block: None,
};

/// Value `v` (0..32) of a block's 5-bit `q`, unsigned (0..32), from its `qh` and `qs`.
#[inline]
pub(super) fn value(qh: u32, qs: &[u8], v: usize) -> u8 {
    let low = if v < VALUES / 2 {
        qs[v] & 0x0F
    } else {
        qs[v - VALUES / 2] >> 4
    };
    low | ((((qh >> v) & 1) as u8) << 4)
}

/// `x[v] = (q[v] - 16)·d` (ggml's `dequantize_row_q5_0`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for (v, x) in y.iter_mut().enumerate() {
            *x = (value(qh, &b[6..], v) as i32 - 16) as f32 * d;
        }
    }
}

/// The block as Q8_0's `f16 d; i8 qs[32]`: the same `d` bytes, `qs[v] = q[v] - 16` (in -16..16).
/// Q8_0's `qs[v]·d` is then this block's `(q[v] - 16)·d`, the same operation on the same operands.
fn to_q8_0(src: &[u8], dst: &mut [u8]) {
    dst[..2].copy_from_slice(&src[..2]);
    let qh = u32::from_le_bytes([src[2], src[3], src[4], src[5]]);
    for (v, q) in dst[2..2 + VALUES].iter_mut().enumerate() {
        *q = (value(qh, &src[6..], v) as i8 - 16) as u8;
    }
}
