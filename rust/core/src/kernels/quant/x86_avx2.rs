//! AVX2 dot products for [`super`] (x86_64 only): packed weight rows against 1..=8 rows of 8-bit
//! activations, in exactly the arithmetic of `super::dot_portable`.
//!
//! A packed group's piece `c` is one 32-byte load whose 32-bit lane `l` belongs to block `l`
//! (`pack.rs`). `maddubs` multiplies unsigned weight bytes by signed activation bytes and
//! adds adjacent pairs into `i16`; `madd` with ones adds those pairs into the 32-bit lanes, so
//! after all pieces lane `l` holds block `l`'s whole integer dot product. Nibbles go in as they
//! are; their pair sums (at most `2·15·127 = 3810`) can be added up across the 8 pieces in `i16`
//! (at most 30480) before one `madd`. Q8_0 weights (stored `q + 128`) go in as `|q|` with `q`'s
//! sign moved onto `x` (`sign_epi8`), as llama.cpp does: pair sums up to `2·128·127 = 32512`, so
//! each piece gets its own `madd`. Q5_1's and Q5_0's values (nibbles with a fifth bit from a full group's
//! masks or a short group's `qh` piece, spread to bytes by `pshufb` and a compare) pair up to
//! `2·31·127`: 4 pieces per `i16` sum.
//!
//! With two or more rows of `x`, Q8_0's weight rows go in pairs (`group_pair`): each piece of `x`
//! is loaded once for both, with the same per-piece integer sums and `f32` steps, so the same
//! bits; the other types keep one weight row at a time (`dot_rows`), its unpacked group (8
//! registers) meeting up to 8 rows of `x` one after the other, each row's sums going straight to
//! its accumulators ([`rows_per_tile`]).
//!
//! # Safety
//! Everything here is compiled with `#[target_feature(enable = "avx2,fma,f16c")]`; callers must
//! have checked [`available`].

use std::arch::x86_64::*;

use super::{pack, QuantFormat, XRow, XRowMut, LANES, QK};

/// Whether this CPU can run this file's code.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// How far ahead of the group being read the weights are prefetched: the best of 1-8 KiB, by
/// `benchmarks/decode_step.py` on SmolLM2 Q4_1 (2 KiB on Zen 3 earlier; 4 KiB on a Sapphire
/// Rapids VM, where 2 KiB was slower by a few percent and 8 KiB by more).
pub(super) const PREFETCH_BYTES: usize = 4096;

// `QuantFormat` as const-generic parameters (enums cannot be): its discriminants.
pub(super) const Q4_0: u8 = QuantFormat::Q4_0 as u8;
pub(super) const Q4_1: u8 = QuantFormat::Q4_1 as u8;
pub(super) const Q8_0: u8 = QuantFormat::Q8_0 as u8;
pub(super) const Q5_1: u8 = QuantFormat::Q5_1 as u8;
pub(super) const Q5_0: u8 = QuantFormat::Q5_0 as u8;

/// Whether the format tagged `f` has a fifth bit per value (its `qh` piece first).
pub(super) const fn has_qh(f: u8) -> bool {
    f == Q5_0 || f == Q5_1
}

/// Whether the format tagged `f` adds a minimum per block (`w = q·d + m`).
pub(super) const fn has_mins(f: u8) -> bool {
    f == Q4_1 || f == Q5_1
}

/// The format a const-generic tag stands for.
const fn format(f: u8) -> QuantFormat {
    match f {
        Q4_0 => QuantFormat::Q4_0,
        Q4_1 => QuantFormat::Q4_1,
        Q5_1 => QuantFormat::Q5_1,
        Q5_0 => QuantFormat::Q5_0,
        _ => QuantFormat::Q8_0,
    }
}

/// Bytes per block of the format tagged `f` (a constant in every instantiation).
pub(super) const fn block_bytes(f: u8) -> usize {
    format(f).block_bytes()
}

/// Bytes of scales (and Q4_1 minimums) per block, at the start of a packed group.
pub(super) const fn head_bytes(f: u8) -> usize {
    pack::head_bytes(format(f))
}

/// Raw pointers to one quantized row of `x` (see `super::XRow`).
#[derive(Clone, Copy)]
pub(super) struct XPtr {
    pub qs: *const i8,
    pub d: *const f32,
    pub sum: *const i32,
    pub s: *const f32,
}

impl XPtr {
    pub(super) fn new(x: &XRow<'_>, nb: usize) -> XPtr {
        let nbp = nb.next_multiple_of(LANES);
        debug_assert!(x.qs.len() >= nbp * QK && x.d.len() >= nbp);
        debug_assert!(x.sum.len() >= nbp && x.s.len() >= nbp);
        XPtr {
            qs: x.qs.as_ptr(),
            d: x.d.as_ptr(),
            sum: x.sum.as_ptr(),
            s: x.s.as_ptr(),
        }
    }
}

/// The row loops shared by this file's kernel and `x86_avx512.rs`, compiled for the CPU
/// features `$features` and the numbers of rows of `x` `$rows` (each a tile's height) around the calling module's own `group::<F, R, FULL>` (which must be in
/// scope there, with `hsum`, `block_bytes`, `XPtr`, `QuantFormat`, `XRow`, `LANES` and the
/// format constants). Generates:
///
/// * `dot(fmt, w, rb, xs, y, ldy)`: `y[r·ldy + j] = w_j · xs[r]` for every packed weight row `w_j`
///   of `w` (rows of `rb` bytes, whole blocks) and each row of `xs` (a number in `$rows`). Safety: the CPU
///   has `$features`; `y` is valid for those writes; each `xs[r]` holds the blocks of a row of
///   `nb = rb / fmt.block_bytes()` blocks padded to whole groups (as `super::Activations` makes);
/// * `dot_row::<F, R>`: one weight row, group after group, then the lane sum.
///
/// and calls the module's own `dot_rows::<F, R>(w, rb, xs, y, ldy)`, the loop over the weight
/// rows (this file's one at a time, `x86_avx512.rs`'s in tiles of two).
macro_rules! packed_row_kernels {
    ($features:literal, [$($rows:literal),*]) => {
        /// See `x86_avx2::packed_row_kernels`.
        ///
        /// # Safety
        /// See `x86_avx2::packed_row_kernels`.
        pub(super) unsafe fn dot(
            fmt: QuantFormat,
            w: &[u8],
            rb: usize,
            xs: &[XRow<'_>],
            y: *mut f32,
            ldy: usize,
        ) {
            macro_rules! rows {
                ($f:expr) => {
                    match xs.len() {
                        $($rows => dot_rows::<$f, $rows>(w, rb, xs, y, ldy),)*
                        r => unreachable!("{r} rows of x at once"),
                    }
                };
            }
            match fmt {
                QuantFormat::Q4_0 => rows!(Q4_0),
                QuantFormat::Q4_1 => rows!(Q4_1),
                QuantFormat::Q8_0 => rows!(Q8_0),
                QuantFormat::Q5_1 => rows!(Q5_1),
                QuantFormat::Q5_0 => rows!(Q5_0),
                _ => unreachable!("{fmt:?} has no packed kernels"),
            }
        }

        /// One packed weight row of `nb` blocks at `w` against `R` rows of `x`.
        ///
        /// # Safety
        /// `w` valid for `nb` blocks; the rows as `dot` requires; the CPU has `$features`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_row<const F: u8, const R: usize>(
            w: *const u8,
            nb: usize,
            x: &[XPtr; R],
        ) -> [f32; R] {
            let bb = const { block_bytes(F) };
            let mut acc = [_mm256_setzero_ps(); R];
            let mut mins = [_mm256_setzero_ps(); R];
            let full = nb - nb % LANES;
            for b0 in (0..full).step_by(LANES) {
                group::<F, R, true>(w.add(b0 * bb), b0, LANES, x, &mut acc, &mut mins);
            }
            if full < nb {
                group::<F, R, false>(w.add(full * bb), full, nb - full, x, &mut acc, &mut mins);
            }
            std::array::from_fn(|r| {
                hsum(if has_mins(F) {
                    _mm256_add_ps(acc[r], mins[r])
                } else {
                    acc[r]
                })
            })
        }
    };
}
pub(super) use packed_row_kernels;

// Up to 8 rows of `x` (`rows_per_tile`).
packed_row_kernels!("avx2,fma,f16c", [1, 2, 3, 4, 5, 6, 7, 8]);

/// Bytes of quantized `x` rows a tile may stream for each weight row: half of a 32 KiB L1, the
/// rest for the weight chunk (`super::W_CHUNK_BYTES`).
const X_TILE_BYTES: usize = 16 * 1024;

/// Rows of `x` per tile for `fmt` (32-value blocks or super-blocks, `x86_super.rs`) and rows of
/// `k` quantized values: 8 where 8 rows stay in L1 ([`X_TILE_BYTES`]), each unpacked weight group
/// (8 registers) then meeting 8 rows, the accumulators in memory; otherwise 4. Q8_0 keeps 4
/// (its pairs of weight rows hold 2·R accumulators), and so does Q3_K (its per-row integer steps
/// leave no registers to spare: 8 rows were ~8% slower). By `bench_quant_matmul_avx2_tiles` on a
/// Zen 4 core: 8 rows 1.04-1.25x faster than 4 at k ≤ 1536, up to 7% slower at k = 4864 (and
/// no faster there with 8 rows taken in slices of `k` that fit, the accumulators of 16 weight
/// rows kept in memory across the slices).
pub(super) fn rows_per_tile(fmt: QuantFormat, k: usize) -> usize {
    match fmt {
        QuantFormat::Q8_0 | QuantFormat::Q3_K => 4,
        _ if 8 * k <= X_TILE_BYTES => 8,
        _ => 4,
    }
}

/// The loop over weight rows, so that the constants and row pointers are set up once, not per
/// row (rows are short: 18 blocks for a hidden size of 576). Q8_0 with two or more rows of `x`
/// takes the weight rows in pairs (`dot_row_pair`), each piece of `x` loaded once for both: 2-10%
/// faster by `bench_quant_matmul_tiles` on a Zen 4 core. The nibble types stay one weight row at
/// a time (by up to 8 rows of `x`): their unpacked group fills 8 registers per weight row, and
/// pairs of them (4 or 2 rows of `x`, folding piece by piece) were 5-25% slower.
///
/// # Safety
/// As `dot`, with `xs.len() == R`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows<const F: u8, const R: usize>(
    w: &[u8],
    rb: usize,
    xs: &[XRow<'_>],
    y: *mut f32,
    ldy: usize,
) {
    let nb = rb / const { block_bytes(F) };
    let x: [XPtr; R] = std::array::from_fn(|r| XPtr::new(&xs[r], nb));
    let cols = w.len() / rb;
    let mut j = 0;
    if F == Q8_0 && R > 1 && super::wide_tiles() {
        while j + 2 <= cols {
            let w0 = w.as_ptr().add(j * rb);
            let out = dot_row_pair::<R>([w0, w0.add(rb)], nb, &x);
            for (r, v) in out.into_iter().enumerate() {
                *y.add(r * ldy + j) = v[0];
                *y.add(r * ldy + j + 1) = v[1];
            }
            j += 2;
        }
    }
    for j in j..cols {
        let out = dot_row::<F, R>(w.as_ptr().add(j * rb), nb, &x);
        for (r, v) in out.into_iter().enumerate() {
            *y.add(r * ldy + j) = v;
        }
    }
}

/// Two packed Q8_0 weight rows of `nb` blocks at `w` against `R` rows of `x`: per row of `x` and
/// weight row, the arithmetic of `dot_row`.
///
/// # Safety
/// Each `w[i]` valid for `nb` blocks; the rows as `dot` requires; the CPU has AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_row_pair<const R: usize>(
    w: [*const u8; 2],
    nb: usize,
    x: &[XPtr; R],
) -> [[f32; 2]; R] {
    let bb = const { block_bytes(Q8_0) };
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let full = nb - nb % LANES;
    for b0 in (0..full).step_by(LANES) {
        let wg = [w[0].add(b0 * bb), w[1].add(b0 * bb)];
        group_pair::<R, true>(wg, b0, LANES, x, &mut acc);
    }
    if full < nb {
        let wg = [w[0].add(full * bb), w[1].add(full * bb)];
        group_pair::<R, false>(wg, full, nb - full, x, &mut acc);
    }
    let mut out = [[0.0; 2]; R];
    for r in 0..R {
        out[r] = [hsum(acc[r][0]), hsum(acc[r][1])];
    }
    out
}

/// `group` for Q8_0 and two weight rows: the packed groups of `t` blocks at `w[0]` and `w[1]`
/// (8 when `FULL`) against `R` rows, piece after piece, each piece of `x` loaded once for both
/// weight rows and each weight piece's `|q|` and sign computed once for all the rows. Each
/// block's `i32` sum adds the same per-piece `madd` results in the same order as `group`'s, and
/// the `f32` steps are `group`'s, so the bits are too.
///
/// # Safety
/// As `group`, for both weight rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_pair<const R: usize, const FULL: bool>(
    w: [*const u8; 2],
    b0: usize,
    t: usize,
    x: &[XPtr; R],
    acc: &mut [[__m256; 2]; R],
) {
    let t = if FULL { LANES } else { t };
    let mut dw = [_mm256_setzero_ps(); 2];
    let mut data = w;
    for i in 0..2 {
        for off in (0..t * const { block_bytes(Q8_0) }).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(w[i].wrapping_add(off + PREFETCH_BYTES).cast());
        }
        dw[i] = half_floats::<FULL>(w[i], t);
        data[i] = w[i].add(const { head_bytes(Q8_0) } * t);
    }
    let keep = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(t as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let (ones, flip) = (_mm256_set1_epi16(1), _mm256_set1_epi8(-128));
    let mut isum = [[_mm256_setzero_si256(); 2]; R];
    for c in 0..8 {
        // Piece c of each weight row: q (stored byte - 128) for its sign, |q| for `maddubs`.
        let mut q = [_mm256_setzero_si256(); 2];
        let mut unsigned = q;
        for i in 0..2 {
            let piece = if FULL {
                _mm256_loadu_si256(data[i].add(32 * c).cast())
            } else {
                _mm256_maskload_epi32(data[i].add(4 * t * c).cast(), keep)
            };
            q[i] = _mm256_xor_si256(piece, flip);
            unsigned[i] = _mm256_abs_epi8(q[i]);
        }
        for r in 0..R {
            let xc = _mm256_loadu_si256(x[r].qs.add(b0 * QK + 32 * c).cast());
            for i in 0..2 {
                let pairs = _mm256_maddubs_epi16(unsigned[i], _mm256_sign_epi8(xc, q[i]));
                isum[r][i] = _mm256_add_epi32(isum[r][i], _mm256_madd_epi16(pairs, ones));
            }
        }
    }
    for r in 0..R {
        let dx = _mm256_loadu_ps(x[r].d.add(b0));
        for i in 0..2 {
            let scale = _mm256_mul_ps(dw[i], dx);
            acc[r][i] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum[r][i]), acc[r][i]);
        }
    }
}

/// `super::quantize_row_lanes` compiled with AVX2 (always inlined, as `quantize_row`).
///
/// # Safety
/// [`available`] is true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_row_lanes(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    offsets: &mut [i32],
) {
    super::quantize_row_lanes(x, qs, d, offsets)
}

/// `super::quantize_row` compiled with AVX2 (it is always inlined, so this is its vector code).
///
/// # Safety
/// [`available`] is true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_row(x: &[f32], out: XRowMut<'_>) {
    super::quantize_row(x, out)
}

/// The packed group of `t` blocks at `w` (blocks `b0..b0 + t` of the row; `t = 8` when `FULL`)
/// against `R` rows: lane `l` of `acc[r]` += `dw·dx · isum` of block `b0 + l` (and of `mins[r]`
/// += `mw·s` for Q4_1 and Q5_1); lanes past `t` add `0·0`.
///
/// # Safety
/// `w` valid for `t` blocks; each row holds the group's 8 blocks; the CPU has AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group<const F: u8, const R: usize, const FULL: bool>(
    w: *const u8,
    b0: usize,
    t: usize,
    x: &[XPtr; R],
    acc: &mut [__m256; R],
    mins: &mut [__m256; R],
) {
    let t = if FULL { LANES } else { t };
    // Software prefetch of the weights PREFETCH_BYTES ahead (past the row end into the next
    // rows of the task: the hardware prefetcher alone left a single thread at ~7 GB/s where it
    // reaches ~12-15 with this). `wrapping_add` because the address may lie past the slice;
    // prefetching never faults.
    for off in (0..t * const { block_bytes(F) }).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(off + PREFETCH_BYTES).cast());
    }
    let dw = half_floats::<FULL>(w, t);
    let mw = if has_mins(F) {
        half_floats::<FULL>(w.add(2 * t), t)
    } else {
        _mm256_setzero_ps()
    };
    let data = w.add(const { head_bytes(F) } * t);
    // Lanes 0..t of piece `c` (the rest zero in a short group).
    let keep = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(t as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let piece = |c: usize| {
        if FULL {
            _mm256_loadu_si256(data.add(32 * c).cast())
        } else {
            _mm256_maskload_epi32(data.add(4 * t * c).cast(), keep)
        }
    };
    let ones = _mm256_set1_epi16(1);
    // The group's 8 pieces as `maddubs` takes them, shared by every row of `x`: Q8_0's `|q|`
    // (`sign` holds `q`, whose sign moves onto `x`), the other types' unsigned values.
    let (values, sign): ([__m256i; 8], [__m256i; 8]) = if F == Q8_0 {
        // q = stored byte - 128.
        let flip = _mm256_set1_epi8(-128);
        let q: [__m256i; 8] = std::array::from_fn(|c| _mm256_xor_si256(piece(c), flip));
        (std::array::from_fn(|c| _mm256_abs_epi8(q[c])), q)
    } else {
        // Nibbles: low ones are values 4c..4c+4 (x piece c), high ones 16+4c.. (x piece c + 4).
        // Q5_1's and Q5_0's follow their `qh` piece.
        let first = if has_qh(F) { 1 } else { 0 };
        let low = _mm256_set1_epi8(0x0F);
        let p: [__m256i; 4] = std::array::from_fn(|c| piece(first + c));
        let mut nib: [__m256i; 8] = std::array::from_fn(|c| {
            if c < 4 {
                _mm256_and_si256(p[c], low)
            } else {
                _mm256_and_si256(_mm256_srli_epi16::<4>(p[c - 4]), low)
            }
        });
        if has_qh(F) {
            let qh = piece(0);
            for (c, n) in nib.iter_mut().enumerate() {
                // A full group holds masks (`pack.rs`), a short one the blocks' `qh`.
                let fifth = if FULL {
                    mask_bits(data.add(4 * c))
                } else {
                    fifth_bits(qh, c)
                };
                *n = _mm256_or_si256(*n, fifth);
            }
        }
        (nib, nib)
    };
    // Row after row, each to its accumulators: only the 8 pieces stay in registers across the
    // rows, however many the tile has.
    for r in 0..R {
        let xg = x[r].qs.add(b0 * QK);
        let xc = |c: usize| _mm256_loadu_si256(xg.add(32 * c).cast());
        let isum = if F == Q8_0 {
            let mut sum = _mm256_setzero_si256();
            for c in 0..8 {
                let pairs = _mm256_maddubs_epi16(values[c], _mm256_sign_epi8(xc(c), sign[c]));
                sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, ones));
            }
            sum
        } else {
            let p: [__m256i; 8] = std::array::from_fn(|c| _mm256_maddubs_epi16(values[c], xc(c)));
            let quarter = |c: usize| {
                _mm256_add_epi16(
                    _mm256_add_epi16(p[c], p[c + 1]),
                    _mm256_add_epi16(p[c + 2], p[c + 3]),
                )
            };
            let sum = if has_qh(F) {
                // Pairs up to 2·31·127: four pieces per i16 sum.
                _mm256_add_epi32(
                    _mm256_madd_epi16(quarter(0), ones),
                    _mm256_madd_epi16(quarter(4), ones),
                )
            } else {
                _mm256_madd_epi16(_mm256_add_epi16(quarter(0), quarter(4)), ones)
            };
            let xsum = || _mm256_loadu_si256(x[r].sum.add(b0).cast());
            match F {
                // Σ(nibble - 8)·x = Σ nibble·x - 8·Σx.
                Q4_0 => _mm256_sub_epi32(sum, _mm256_slli_epi32::<3>(xsum())),
                // Σ(q - 16)·x = Σ q·x - 16·Σx.
                Q5_0 => _mm256_sub_epi32(sum, _mm256_slli_epi32::<4>(xsum())),
                _ => sum,
            }
        };
        let scale = _mm256_mul_ps(dw, _mm256_loadu_ps(x[r].d.add(b0)));
        acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum), acc[r]);
        if has_mins(F) {
            mins[r] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(x[r].s.add(b0)), mins[r]);
        }
    }
}

/// The fifth bits of register `c` of a full Q5_0/Q5_1 group's nibbles from its mask `c` (the
/// `u32` at `mask`, bit `i` for byte `i`), as 0x10 or 0 per byte: llama.cpp's `bytes_from_bits_32`
/// (each byte gets the mask byte holding its bit, every other bit set, and compares equal to all
/// ones).
///
/// # Safety
/// `mask` valid for 4 bytes; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mask_bits(mask: *const u8) -> __m256i {
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let word = std::ptr::read_unaligned(mask.cast::<i32>());
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(word), spread);
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    let set = _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Q5_1's and Q5_0's fifth bits, in a short group, for x piece `c` (values `4c..4c+4` of each block): byte `j` of lane `l` is
/// `0x10` where bit `4c + j` of block `l`'s `qh` (lane `l` of `qh`) is set, else 0. `pshufb`
/// copies the byte holding those bits into the lane's 4 bytes, each byte tests its own bit.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fifth_bits(qh: __m256i, c: usize) -> __m256i {
    let byte = |i: i32| (4 * i + (c / 2) as i32) * 0x0101_0101;
    let copy = _mm256_setr_epi32(
        byte(0),
        byte(1),
        byte(2),
        byte(3),
        byte(0),
        byte(1),
        byte(2),
        byte(3),
    );
    let s = 4 * (c % 2) as u32;
    let bits = _mm256_set1_epi32(i32::from_le_bytes([1 << s, 2 << s, 4 << s, 8 << s]));
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(qh, copy), bits), bits);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The `t` (8 when `FULL`) consecutive `f16` at `p` as 8 `f32` lanes, zero past `t`.
///
/// # Safety
/// `p` valid for `2·t` bytes; the CPU has AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn half_floats<const FULL: bool>(p: *const u8, t: usize) -> __m256 {
    if FULL {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    } else {
        // A short group happens once per row at most: a plain copy is cheap enough.
        let mut h = [0u16; LANES];
        std::ptr::copy_nonoverlapping(p, h.as_mut_ptr().cast::<u8>(), 2 * t);
        _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast()))
    }
}

/// Horizontal sum in the order of `super::hsum`: `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<0b01>(t, t)))
}
