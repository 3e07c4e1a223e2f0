//! Q3_K (ggml's `block_q3_K`): a super-block of 256 values in 110 bytes,
//! `u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d`. The 256 values are 16 sub-blocks of 16, each
//! with a signed 6-bit scale ([`scale`]); value `v` is `w = (d·sc)·q` with `q` in -4..4: 2 low bits
//! from `qs` (byte `32·(v / 128) + v % 32`, bits `2·((v / 32) % 4)`) minus 4 unless bit `v / 32` of
//! `hmask[v % 32]` is set. Q3_K_M files use it for most matrices.

use half::f16;

use super::super_block::{Parts, SuperBlock, Values};
use super::types::{BlockFacts, QuantFormat};

/// Values per super-block (ggml's `QK_K`).
const VALUES: usize = 256;
/// Values per sub-block (one scale each).
const SUB: usize = 16;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q3_K,
    ggml_id: 11,
    name: "Q3_K",
    block_values: VALUES,
    block_bytes: VALUES / 8 + VALUES / 4 + 12 + 2,
    dequantize,
    packed_kernels: false,
    transcode: None,
    super_block: Some(&SUPER),
};

/// Sub-block `s`'s (0..16) scale from the 12 packed bytes: its low 4 bits are the low nibble of
/// byte `s` (`s < 8`) or the high nibble of byte `s - 8`, its top 2 bits are bits `2·(s / 4)` of
/// byte `8 + s % 4`; the 6-bit value is stored offset by 32.
#[inline]
fn scale(scales: &[u8], s: usize) -> i8 {
    let low = (scales[s % 8] >> (4 * (s / 8))) & 0x0F;
    let high = (scales[8 + s % 4] >> (2 * (s / 4))) & 0x03;
    (low | (high << 4)) as i8 - 32
}

/// Value `v` (0..256) of a super-block's signed `q` (-4..4).
#[inline]
fn value(hmask: &[u8], qs: &[u8], v: usize) -> i8 {
    let low = (qs[32 * (v / 128) + v % 32] >> (2 * ((v / 32) % 4))) & 0x03;
    let high_clear = ((hmask[v % 32] >> (v / 32)) & 1) ^ 1;
    low as i8 - (high_clear << 2) as i8
}

/// `x[v] = (d·sc)·q[v]`, the scale product rounded to `f32` first (ggml's
/// `dequantize_row_q3_K`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
        let d = f16::from_le_bytes([b[108], b[109]]).to_f32();
        for (v, x) in y.iter_mut().enumerate() {
            let dl = d * scale(scales, v / SUB) as f32;
            *x = dl * value(hmask, qs, v) as f32;
        }
    }
}

/// For the super-block kernels: `w = (d·sc)·(u - 4)` per 16 values, `u = q + 4` in 0..8.
const SUPER: SuperBlock = SuperBlock {
    scale_values: SUB,
    mins: false,
    values: Values::U4,
    offset: 4,
    split,
};

/// One super-block's `d`, signed scales and values made unsigned (`q + 4`).
fn split(b: &[u8], p: &mut Parts) {
    let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
    p.d = f16::from_le_bytes([b[108], b[109]]);
    p.dmin = f16::ZERO;
    for (s, sc) in p.sc.iter_mut().enumerate() {
        *sc = scale(scales, s);
    }
    for (v, u) in p.u.iter_mut().enumerate() {
        *u = (value(hmask, qs, v) + 4) as u8;
    }
}
