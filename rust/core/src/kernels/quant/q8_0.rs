//! Q8_0 (ggml's `block_q8_0`): 32 values in 34 bytes, `f16 d; i8 qs[32]`, each value `w = q·d`.
//! Also the storage of per-channel int8 (`int8.rs`), whose blocks all carry their row's `d`.

use half::f16;

use super::types::{BlockFacts, QuantFormat};

const VALUES: usize = 32;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q8_0,
    ggml_id: 8,
    name: "Q8_0",
    block_values: VALUES,
    block_bytes: 2 + VALUES,
    dequantize,
    packed_kernels: true,
    transcode: None,
    super_block: None,
};

/// `x[j] = qs[j]·d`, `qs` signed (ggml's `dequantize_row_q8_0`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        for (q, x) in b[2..].iter().zip(y) {
            *x = (*q as i8) as f32 * d;
        }
    }
}
