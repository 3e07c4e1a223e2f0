//! Q5_0 (ggml's `block_q5_0`): 32 values in 22 bytes, `f16 d; u8 qh[4]; u8 qs[16]`, each value
//! `w = (q - 16)·d` with the 5-bit `q` split: its low 4 bits in Q4_0's nibble order (byte `j` of
//! `qs`: values `j` and `j + 16`), its fifth bit as bit `v` of the little-endian `u32` `qh`.
//! llama.cpp's fallback for Q4_K tensors whose rows are not whole 256-value super-blocks.
//!
//! The packed kernels run it in its own 22 bytes per block (`pack.rs`: its `qh` as a piece before
//! the nibbles, as Q5_1's; the products `Σq·x - 16·Σx`).

use half::f16;

use super::types::{BlockFacts, QuantFormat};

const VALUES: usize = 32;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q5_0,
    ggml_id: 6,
    name: "Q5_0",
    block_values: VALUES,
    block_bytes: 2 + 4 + VALUES / 2,
    dequantize,
    packed_kernels: true,
    transcode: None,
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
