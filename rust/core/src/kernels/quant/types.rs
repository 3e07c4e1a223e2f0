//! The quantized block types, each described once.
//!
//! Everything the rest of the crate needs to know about a block type (the tag GGUF files store
//! it under, its name, values and bytes per block, its exact dequantization, whether
//! [`quant_matmul`](super::quant_matmul) runs it or a type it converts to exactly) is one
//! [`BlockFacts`] row, written in the type's own file (`q4_0.rs`, `q4_k.rs`, ...) and listed in
//! [`TABLE`]. The GGUF reader, the tensor
//! layer and the kernels all read sizes from here; no other place lists them.
//!
//! # Adding a block type
//! 1. A file beside `q4_0.rs` with the block layout, its `dequantize` (bit for bit as ggml's
//!    reference `dequantize_row_*`) and its [`BlockFacts`], with `packed_kernels: false` and
//!    `transcode: None`, `super_block: None`.
//! 2. A variant of [`QuantFormat`] and its row in [`TABLE`], in the same position.
//!
//! Files holding the type then load: tensors of a type the kernels do not run are dequantized to
//! `f32` at load, as F16 ones are. Every type of [`TABLE`] runs quantized today: Q4_0, Q4_1, Q8_0,
//! Q5_0 and Q5_1 on the packed 32-value kernels, Q4_K, Q5_K, Q6_K, Q3_K, Q2_K and IQ4_XS on the
//! super-block kernels, IQ4_NL as Q8_0. To run a new type quantized:
//! * a type of 256-value super-blocks (a K-quant, IQ4_XS) gives a
//!   [`SuperBlock`](super::super_block::SuperBlock) in its file: which scales, minimums and
//!   offset it has, how its values are stored for the kernels, and `split`, its GGUF bytes as
//!   those integers; `super_block: Some(&...)` in its facts. Packing, packed dequantization and
//!   the kernels of every instruction set follow (`super_block.rs` says which value kinds exist);
//!   the tests in `tests.rs` then cover it once `tests.rs`'s `random_weights` knows where its
//!   `f16` scales are;
//! * a type of 32-value blocks with an `f16` scale fits the packed kernels (`pack.rs`,
//!   `portable.rs` and the per-ISA files, then `packed_kernels: true`);
//! * a type whose every block is exactly a block of a type with kernels (same values per block,
//!   each value the same `f32`) can instead name that type and the block converter
//!   ([`Transcode`]): loaders convert it at load ([`QuantFormat::runs_as`],
//!   [`QuantFormat::transcode`]), trading memory for the kernels' speed.

use super::super_block::SuperBlock;
use super::{iq4_nl, iq4_xs, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0};

/// A quantized block type (a GGUF / ggml type). Its facts are its row of `types.rs`'s `TABLE`.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// `f16 d; u8 qs[16]`: `w = (nibble - 8)·d` (`q4_0.rs`).
    Q4_0,
    /// `f16 d; f16 m; u8 qs[16]`: `w = nibble·d + m` (`q4_1.rs`).
    Q4_1,
    /// `f16 d; i8 qs[32]`: `w = q·d` (`q8_0.rs`).
    Q8_0,
    /// `f16 d; u8 qh[4]; u8 qs[16]`: `w = (q5 - 16)·d` (`q5_0.rs`).
    Q5_0,
    /// `f16 d; u8 qs[16]`: `w = CODEBOOK[nibble]·d` (`iq4_nl.rs`).
    IQ4_NL,
    /// 256-value super-blocks of 8 × 32 with 6-bit scales and minimums:
    /// `w = (d·sc)·q4 - dmin·m` (`q4_k.rs`).
    Q4_K,
    /// 256-value super-blocks of 16 × 16 with 8-bit scales: `w = (d·sc)·(q6 - 32)` (`q6_k.rs`).
    Q6_K,
    /// `f16 d; f16 m; u8 qh[4]; u8 qs[16]`: `w = q5·d + m` (`q5_1.rs`).
    Q5_1,
    /// Q4_K with a fifth bit per value (`q5_k.rs`).
    Q5_K,
    /// 256-value super-blocks of 16 × 16 with signed 6-bit scales: `w = (d·sc)·q3` (`q3_k.rs`).
    Q3_K,
    /// 256-value super-blocks of 16 × 16 with 4-bit scales and minimums:
    /// `w = (d·sc)·q2 - dmin·m` (`q2_k.rs`).
    Q2_K,
    /// 256-value super-blocks of 8 × 32 with signed 6-bit scales: `w = (d·sc)·CODEBOOK[nibble]`
    /// (`iq4_xs.rs`).
    IQ4_XS,
}

/// What one block type is.
pub(super) struct BlockFacts {
    pub(super) format: QuantFormat,
    /// ggml's tag for it (`enum ggml_type`), as GGUF tensor infos store it.
    pub(super) ggml_id: u32,
    /// ggml's name for it.
    pub(super) name: &'static str,
    /// Values per block.
    pub(super) block_values: usize,
    /// Bytes per block (`ggml_type_size`).
    pub(super) block_bytes: usize,
    /// Whole blocks to `f32` (`dst.len() / block_values` blocks in `src`, checked by the caller,
    /// [`QuantFormat::dequantize`]).
    pub(super) dequantize: fn(&[u8], &mut [f32]),
    /// Whether the packed kernels of 32-value blocks run it (`pack.rs`).
    pub(super) packed_kernels: bool,
    /// For a type without kernels of its own: the exact conversion of its blocks into a type
    /// that has them, applied at load.
    pub(super) transcode: Option<Transcode>,
    /// For a type of 256-value super-blocks, what the super-block kernels need to run it
    /// (`super_block.rs`). A type with neither kernel is kept as `f32` by loaders.
    pub(super) super_block: Option<&'static SuperBlock>,
}

/// An exact conversion of one block type into another with the same values per block: every
/// converted block dequantizes to the same `f32` values as the original.
pub(super) struct Transcode {
    /// The type converted to.
    pub(super) to: QuantFormat,
    /// One block of the type (`src`) into one block of `to` (`dst`).
    pub(super) block: fn(src: &[u8], dst: &mut [u8]),
}

/// Every block type, row `i` describing the variant with discriminant `i`.
const TABLE: [&BlockFacts; 12] = [
    &q4_0::FACTS,
    &q4_1::FACTS,
    &q8_0::FACTS,
    &q5_0::FACTS,
    &iq4_nl::FACTS,
    &q4_k::FACTS,
    &q6_k::FACTS,
    &q5_1::FACTS,
    &q5_k::FACTS,
    &q3_k::FACTS,
    &q2_k::FACTS,
    &iq4_xs::FACTS,
];

impl QuantFormat {
    const fn facts(self) -> &'static BlockFacts {
        TABLE[self as usize]
    }

    /// Every block type, in the order of the variants.
    pub fn all() -> impl Iterator<Item = QuantFormat> {
        TABLE.iter().map(|f| f.format)
    }

    /// The block type stored under ggml tag `id`, if it is one of these.
    pub fn from_ggml_id(id: u32) -> Option<QuantFormat> {
        Self::all().find(|f| f.ggml_id() == id)
    }

    /// ggml's tag for this type, as GGUF files store it.
    pub const fn ggml_id(self) -> u32 {
        self.facts().ggml_id
    }

    /// ggml's name for this type (`"Q4_0"`).
    pub const fn name(self) -> &'static str {
        self.facts().name
    }

    /// Values per block.
    pub const fn block_values(self) -> usize {
        self.facts().block_values
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        self.facts().block_bytes
    }

    /// Bytes of one row of `k` values (`k` a multiple of [`Self::block_values`]).
    pub const fn row_bytes(self, k: usize) -> usize {
        k / self.block_values() * self.block_bytes()
    }

    /// `cols` rounded up to whole blocks.
    pub const fn padded_cols(self, cols: usize) -> usize {
        cols.next_multiple_of(self.block_values())
    }

    /// Whether [`quant_matmul`](super::quant_matmul) runs this type (otherwise its tensors are
    /// dequantized at load).
    pub const fn has_kernels(self) -> bool {
        self.facts().packed_kernels || self.facts().super_block.is_some()
    }

    /// How the super-block kernels run this type, if it is one of theirs.
    pub(crate) const fn super_block(self) -> Option<&'static SuperBlock> {
        self.facts().super_block
    }

    /// Bytes of one block in the kernels' packed layout ([`pack_rows`](super::pack_rows)): a
    /// GGUF block's, except for super-block types whose scales the packing unpacks.
    pub const fn packed_block_bytes(self) -> usize {
        match self.super_block() {
            Some(sb) => sb.packed_bytes(),
            None => self.block_bytes(),
        }
    }

    /// Bytes of one packed row of `k` values (`k` a multiple of [`Self::block_values`]).
    pub const fn packed_row_bytes(self, k: usize) -> usize {
        k / self.block_values() * self.packed_block_bytes()
    }

    /// The type whose kernels run this type's weights: itself if it has kernels
    /// ([`Self::has_kernels`]), else the type its blocks convert to exactly ([`Self::transcode`]:
    /// IQ4_NL runs as Q8_0), else none (its tensors are dequantized at load).
    pub fn runs_as(self) -> Option<QuantFormat> {
        if self.has_kernels() {
            return Some(self);
        }
        self.facts()
            .transcode
            .as_ref()
            .map(|t| t.to)
            .filter(|to| to.has_kernels())
    }

    /// Whole blocks `src` as blocks of [`Self::runs_as`], exactly: the result dequantizes to the
    /// same `f32` values as `src` does (the same values per block, rows keep their places).
    ///
    /// # Panics
    /// If the type runs as no other type, or `src` is not a whole number of blocks (caller bugs).
    pub fn transcode(self, src: &[u8]) -> Vec<u8> {
        let t = match (&self.facts().transcode, self.runs_as()) {
            (Some(t), Some(to)) if to == t.to && to != self => t,
            _ => panic!("transcode: {} runs as no other type", self.name()),
        };
        let bb = self.block_bytes();
        assert!(
            src.len().is_multiple_of(bb),
            "transcode: {} bytes are no whole number of {} blocks",
            src.len(),
            self.name()
        );
        let mut dst = vec![0u8; src.len() / bb * t.to.block_bytes()];
        for (s, d) in src
            .chunks_exact(bb)
            .zip(dst.chunks_exact_mut(t.to.block_bytes()))
        {
            (t.block)(s, d);
        }
        dst
    }

    /// Converts whole blocks `src` into `dst`, bit for bit as ggml's reference dequantizer.
    ///
    /// # Panics
    /// If `dst.len()` is not a whole number of blocks, or `src` does not hold exactly that many
    /// (a caller bug: the GGUF reader checks sizes when it opens a file).
    pub fn dequantize(self, src: &[u8], dst: &mut [f32]) {
        let (bv, bb) = (self.block_values(), self.block_bytes());
        assert!(
            dst.len().is_multiple_of(bv) && src.len() == dst.len() / bv * bb,
            "dequantize: {} bytes cannot fill {} values of {} ({bv}-value, {bb}-byte blocks)",
            src.len(),
            dst.len(),
            self.name()
        );
        (self.facts().dequantize)(src, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row sits at its variant's place, and tags and names are unique.
    #[test]
    fn table_rows_match_their_variants() {
        for (i, facts) in TABLE.iter().enumerate() {
            assert_eq!(facts.format as usize, i, "{}", facts.name);
            assert_eq!(format!("{:?}", facts.format), facts.name);
            assert_eq!(QuantFormat::from_ggml_id(facts.ggml_id), Some(facts.format));
            assert!(facts.block_bytes > 0 && facts.block_values > 0);
        }
        let names: std::collections::HashSet<_> = QuantFormat::all().map(|f| f.name()).collect();
        assert_eq!(names.len(), TABLE.len());
        assert_eq!(QuantFormat::from_ggml_id(0), None, "F32 is no block type");
    }

    /// ggml's sizes (`ggml_type_size`, `ggml_blck_size`) and tags (ggml.h).
    #[test]
    fn sizes_and_tags_are_ggml_s() {
        let want = [
            (QuantFormat::Q4_0, 2, 32, 18),
            (QuantFormat::Q4_1, 3, 32, 20),
            (QuantFormat::Q8_0, 8, 32, 34),
            (QuantFormat::Q5_0, 6, 32, 22),
            (QuantFormat::IQ4_NL, 20, 32, 18),
            (QuantFormat::Q4_K, 12, 256, 144),
            (QuantFormat::Q6_K, 14, 256, 210),
            (QuantFormat::Q5_1, 7, 32, 24),
            (QuantFormat::Q5_K, 13, 256, 176),
            (QuantFormat::Q3_K, 11, 256, 110),
            (QuantFormat::Q2_K, 10, 256, 84),
            (QuantFormat::IQ4_XS, 23, 256, 136),
        ];
        for (f, id, values, bytes) in want {
            assert_eq!(
                (f.ggml_id(), f.block_values(), f.block_bytes()),
                (id, values, bytes)
            );
        }
        assert_eq!(QuantFormat::Q4_1.row_bytes(96), 60);
        assert_eq!(QuantFormat::Q8_0.padded_cols(33), 64);
    }

    /// The kernels run a type as itself, as the type it converts to, or not at all; converted
    /// random blocks (finite `f16` scales) dequantize to the same `f32` bits as the originals.
    /// (gguf.rs's cross-check holds both against gguf-py's dequantizers.)
    #[test]
    fn runs_as_and_exact_transcodes() {
        assert_eq!(QuantFormat::Q5_0.runs_as(), Some(QuantFormat::Q5_0));
        assert_eq!(QuantFormat::IQ4_NL.runs_as(), Some(QuantFormat::Q8_0));
        for fmt in QuantFormat::all() {
            let Some(to) = fmt.runs_as() else {
                assert!(!fmt.has_kernels() && fmt.facts().transcode.is_none());
                continue;
            };
            assert!(to.has_kernels(), "{fmt:?}");
            if to == fmt {
                continue;
            }
            assert_eq!(to.block_values(), fmt.block_values(), "{fmt:?}");
            let blocks = 64;
            let mut src: Vec<u8> = (0..blocks * fmt.block_bytes())
                .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
                .collect();
            for (b, block) in src.chunks_exact_mut(fmt.block_bytes()).enumerate() {
                // The type converted today (IQ4_NL) keeps `f16 d` in their first two bytes.
                let d = half::f16::from_f32(0.001 * (b as f32 - 20.0));
                block[..2].copy_from_slice(&d.to_le_bytes());
            }
            let converted = fmt.transcode(&src);
            assert_eq!(converted.len(), blocks * to.block_bytes());
            let n = blocks * fmt.block_values();
            let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
            fmt.dequantize(&src, &mut want);
            to.dequantize(&converted, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{fmt:?} as {to:?} [{i}]");
            }
        }
    }

    #[test]
    #[should_panic(expected = "Q4_0 runs as no other type")]
    fn transcode_rejects_types_run_as_themselves() {
        QuantFormat::Q4_0.transcode(&[0; 18]);
    }

    #[test]
    #[should_panic(expected = "cannot fill")]
    fn dequantize_rejects_partial_blocks() {
        QuantFormat::Q8_0.dequantize(&[0; 34], &mut [0.0; 31]);
    }
}
