//! Q6_K (ggml's `block_q6_K`): a super-block of 256 values in 210 bytes,
//! `u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d`. The 256 values are 16 sub-blocks of 16, each
//! with a signed 8-bit scale; value `v` is `w = (d·scales[v / 16])·(q - 32)` with `q` 6 bits: 4 low
//! bits in `ql`, 2 high bits in `qh` ([`value`]). Used by Q4_K_M / Q5_K_M files for `output.weight`
//! and some layers' `attn_v` / `ffn_down`.

use half::f16;

use super::super_block::{Parts, SuperBlock, Values};
use super::types::{BlockFacts, QuantFormat};

/// Values per super-block (ggml's `QK_K`).
const VALUES: usize = 256;
/// Values per sub-block (one scale each).
const SUB: usize = 16;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q6_K,
    ggml_id: 14,
    name: "Q6_K",
    block_values: VALUES,
    block_bytes: VALUES / 2 + VALUES / 4 + VALUES / 16 + 2,
    dequantize,
    packed_kernels: false,
    transcode: None,
    super_block: Some(&SUPER),
};

/// Value `v` (0..256) of a super-block's 6-bit `q`, unsigned (0..64). The block is two halves of
/// 128 values; in half `h`, value `i` (0..128) takes its low 4 bits from byte `64h + i % 64` of
/// `ql` (low nibble for `i < 64`, high nibble above) and its high 2 bits from bits `2·(i / 32)`
/// of byte `32h + i % 32` of `qh`.
#[inline]
pub(super) fn value(ql: &[u8], qh: &[u8], v: usize) -> u8 {
    let (h, i) = (v / 128, v % 128);
    let low = (ql[64 * h + i % 64] >> (4 * (i / 64))) & 0x0F;
    let high = (qh[32 * h + i % 32] >> (2 * (i / 32))) & 0x03;
    low | (high << 4)
}

/// `x[v] = (d·scales[v / 16])·(q[v] - 32)`, the scale product rounded to `f32` first (ggml's
/// `dequantize_row_q6_K`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
        let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
        for (v, x) in y.iter_mut().enumerate() {
            let scale = d * (scales[v / SUB] as i8) as f32;
            *x = scale * (value(ql, qh, v) as i32 - 32) as f32;
        }
    }
}

/// For the super-block kernels: `w = (d·sc)·(q - 32)` per 16 values, `q` 6 bits.
const SUPER: SuperBlock = SuperBlock {
    scale_values: SUB,
    mins: false,
    values: Values::U6,
    offset: 32,
    split,
};

/// One super-block's `d`, 8-bit scales and 6-bit values, as they are.
fn split(b: &[u8], p: &mut Parts) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    p.d = f16::from_le_bytes([b[208], b[209]]);
    p.dmin = f16::ZERO;
    for (sc, &s) in p.sc.iter_mut().zip(scales) {
        *sc = s as i8;
    }
    for (v, u) in p.u.iter_mut().enumerate() {
        *u = value(ql, qh, v);
    }
}
