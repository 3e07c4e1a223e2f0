//! AVX2 and AVX-512 dot products of packed super-block rows (`super_block.rs`) against 1..=8 rows
//! (AVX2) or 1..=4 rows (AVX-512) of 8-bit activations, in exactly the arithmetic of
//! `super_block::dot_portable` (x86_64 only).
//!
//! A packed super-block is one full group of the module's interleaving, so its 8 sub-blocks sit
//! in the 8 lanes and the integer steps are those of the 32-value kernels (`x86_avx2.rs`,
//! `x86_avx512.rs`), kept apart for the two halves of each sub-block: `Sa` (pieces 0..4) and
//! `Sb` (pieces 4..8). AVX2: `maddubs` pairs in `i16`, then `madd` into the lanes: 4-bit values
//! give pairs of at most `2·15·127`, so a half's 4 pieces add up in `i16`; 6-bit ones (`2·63·127`
//! per pair) two pieces at a time (with one scale per 32 values, 4-bit values take all 8
//! pieces at once: `8·2·15·127 < 2^15`). AVX-512: `vpdpbusd` on pieces `(0,1)`, `(2,3)` for `Sa` and
//! `(4,5)`, `(6,7)` for `Sb` (exact in `i32`), the two 256-bit halves of each added. Codebook
//! values (IQ4_XS): `pshufb` maps the nibbles through the table; AVX-512 multiplies
//! `u = c + 128` and takes `128·X` out with the other offsets, AVX2 multiplies `|c|` by `x`
//! with `c`'s sign (pairs up to `2·127·127`, a `madd` per piece) and so has no offset to take
//! out: the same integers. Then, on 8
//! lanes, the integer combination with the offset, scales and minimums (exact in `i32`) and the
//! `f32` steps of the portable kernel.
//!
//! AVX2 takes one weight row at a time, its unpacked super-block (8 registers) and header
//! meeting up to 8 rows of `x` one after the other (`x86_avx2::rows_per_tile`), each row's
//! integers going through `finish` to its accumulators.
//!
//! AVX-512 computes tiles of up to 4 rows of `x` by two weight rows (`avx512::tile`): both
//! rows' super-blocks are unpacked, then each row of `x`'s 4 registers meet both, and each output
//! goes through `finish` on its own lanes, exactly as alone.
//!
//! The type's shape (minimums or not, scales per 16 or 32, 4- or 6-bit values, a codebook) is a
//! set of const generics, so every combination is compiled (codebooks only without minimums and
//! with scales per 32) and a new type of an existing shape needs no code here.
//!
//! # Safety
//! Compiled with `#[target_feature]`: callers must have checked `x86_avx2::available()` (and
//! `x86_avx512::available()` for `avx512`).

use std::arch::x86_64::*;

use super::super_block::{dispatch_shape, Layout, SuperBlock, Values, VALUES};
use super::x86_avx2::{hsum, PREFETCH_BYTES};
use super::{XRow, LANES};

/// Raw pointers to one quantized row of `x` (see `super::XRow`).
#[derive(Clone, Copy)]
struct XPtr {
    qs: *const i8,
    d: *const f32,
    sum: *const i32,
    half: *const i32,
}

impl XPtr {
    /// Row `x`, checked to hold `ns` super-blocks.
    fn new(x: &XRow<'_>, ns: usize) -> XPtr {
        assert!(
            x.qs.len() >= ns * VALUES
                && x.d.len() >= ns * LANES
                && x.sum.len() >= ns * LANES
                && x.half.len() >= 2 * ns * LANES,
            "x row shorter than {ns} super-blocks"
        );
        XPtr {
            qs: x.qs.as_ptr(),
            d: x.d.as_ptr(),
            sum: x.sum.as_ptr(),
            half: x.half.as_ptr(),
        }
    }
}

/// The row loops of one instruction set around its `group::<MINS, PER16, U6, R>` (in scope
/// where this is expanded, with this file's imports). Generates:
///
/// * `dot(sb, w, rb, xs, y, ldy)`: `y[r·ldy + j] = w_j · xs[r]` for every packed row `w_j` of
///   `w` (rows of `rb` bytes, whole super-blocks of type `sb`) and each row of `xs` (a number in
///   `$rows`).
///   Safety: the CPU has `$features`; `y` is valid for those writes; each `xs[r]` is a row from
///   `super::Activations` for `rb`'s number of values;
/// * `rows`: the dispatch onto the const generics, onto the module's own `dot_rows::<MINS, PER16,
///   U6, CB, R>(args)`, the loop over the weight rows (in tiles of two for AVX-512).
macro_rules! super_row_kernels {
    ($features:literal, [$($rows:literal),*]) => {
        /// See `x86_super::super_row_kernels`.
        ///
        /// # Safety
        /// See `x86_super::super_row_kernels`.
        pub(in crate::kernels::quant) unsafe fn dot(
            sb: &SuperBlock,
            w: &[u8],
            rb: usize,
            xs: &[XRow<'_>],
            y: *mut f32,
            ldy: usize,
        ) {
            let args = (sb, w, rb, xs, y, ldy);
            dispatch_shape!(sb, rows, args)
        }

        /// # Safety
        /// As `dot`.
        unsafe fn rows<const MINS: bool, const PER16: bool, const U6: bool, const CB: bool>(
            args: (&SuperBlock, &[u8], usize, &[XRow<'_>], *mut f32, usize),
        ) {
            match args.3.len() {
                $($rows => dot_rows::<MINS, PER16, U6, CB, $rows>(args),)*
                r => unreachable!("{r} rows of x at once"),
            }
        }
    };
}

/// What a type adds to the integer steps: its offset `o` as the kernels apply it
/// (`o·X = X << shift` when `any`) and, for [`Values::Codebook`] types, the 16 signed table values.
#[derive(Clone, Copy)]
struct TypeConsts {
    any: bool,
    shift: __m128i,
    codebook: __m128i,
}

impl TypeConsts {
    /// The constants of type `sb`.
    ///
    /// # Safety
    /// The CPU has SSE2 (every x86_64).
    #[inline]
    unsafe fn new(sb: &SuperBlock) -> TypeConsts {
        TypeConsts {
            any: sb.offset != 0,
            // `o·X` as a shift: the offsets are 0 or powers of two (`super_block` tests it).
            shift: _mm_cvtsi32_si128(sb.offset.trailing_zeros() as i32),
            codebook: match sb.values {
                Values::Codebook(table) => _mm_loadu_si128(table.as_ptr().cast()),
                _ => _mm_setzero_si128(),
            },
        }
    }
}

/// The lanes a row's result sums: `acc - mins` (`acc` without minimums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes<const MINS: bool>(acc: __m256, mins: __m256) -> __m256 {
    if MINS {
        _mm256_sub_ps(acc, mins)
    } else {
        acc
    }
}

/// A packed super-block's header, one value per lane (sub-block): `d` and `dmin` broadcast, the
/// scales and minimums of each lane's halves `a` (values 0..16) and `b` (16..32).
#[derive(Clone, Copy)]
struct Head {
    d: __m256,
    dmin: __m256,
    sc_a: __m256i,
    sc_b: __m256i,
    m_a: __m256i,
    m_b: __m256i,
}

/// The header of the packed super-block at `w`.
///
/// # Safety
/// `w` valid for the header; the CPU has AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn head<const MINS: bool, const PER16: bool, const U6: bool>(w: *const u8) -> Head {
    let lay = const { Layout::new(MINS, PER16, U6) };
    let half_float =
        |at: usize| _mm256_cvtph_ps(_mm_set1_epi16(w.add(at).cast::<i16>().read_unaligned()));
    let bytes8 = |at: usize| _mm_loadl_epi64(w.add(at).cast());
    let sc_a = _mm256_cvtepi8_epi32(bytes8(lay.sc));
    let sc_b = if PER16 {
        _mm256_cvtepi8_epi32(bytes8(lay.sc + LANES))
    } else {
        sc_a
    };
    let (m_a, m_b) = if MINS {
        let m_a = _mm256_cvtepu8_epi32(bytes8(lay.m));
        if PER16 {
            (m_a, _mm256_cvtepu8_epi32(bytes8(lay.m + LANES)))
        } else {
            (m_a, m_a)
        }
    } else {
        (_mm256_setzero_si256(), _mm256_setzero_si256())
    };
    Head {
        d: half_float(0),
        dmin: if MINS {
            half_float(lay.dmin)
        } else {
            _mm256_setzero_ps()
        },
        sc_a,
        sc_b,
        m_a,
        m_b,
    }
}

/// Super-block `s` of one row of `x` after its integer sums: with scales per 16, `sa` and `sb`
/// per lane (halves `a` and `b`), `isum = sc_a·(sa - o·Xa) + sc_b·(sb - o·Xb)` and
/// `msum = m_a·Xa + m_b·Xb`; with scales per 32, `sa` is the whole `Sa + Sb` (`sb` unused) and the
/// same integers come out of `sc·(sa - o·X)` and `m·X`. Then `acc = fma(d·dx, isum, acc)` and
/// `mins = fma(dmin·dx, msum, mins)`.
///
/// # Safety
/// `x` holds super-block `s`; the CPU has AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish<const MINS: bool, const PER16: bool>(
    sa: __m256i,
    sb: __m256i,
    s: usize,
    offset: TypeConsts,
    h: &Head,
    x: &XPtr,
    acc: &mut __m256,
    mins: &mut __m256,
) {
    let load = |p: *const i32| _mm256_loadu_si256(p.cast());
    let minus_offset = |v: __m256i, xs: __m256i| {
        if offset.any {
            _mm256_sub_epi32(v, _mm256_sll_epi32(xs, offset.shift))
        } else {
            v
        }
    };
    let (isum, msum) = if PER16 {
        let xa = load(x.half.add(2 * LANES * s));
        let xb = load(x.half.add(2 * LANES * s + LANES));
        let isum = _mm256_add_epi32(
            _mm256_mullo_epi32(h.sc_a, minus_offset(sa, xa)),
            _mm256_mullo_epi32(h.sc_b, minus_offset(sb, xb)),
        );
        let msum = if MINS {
            _mm256_add_epi32(_mm256_mullo_epi32(h.m_a, xa), _mm256_mullo_epi32(h.m_b, xb))
        } else {
            _mm256_setzero_si256()
        };
        (isum, msum)
    } else {
        let xsum = load(x.sum.add(LANES * s));
        let isum = _mm256_mullo_epi32(h.sc_a, minus_offset(sa, xsum));
        let msum = if MINS {
            _mm256_mullo_epi32(h.m_a, xsum)
        } else {
            _mm256_setzero_si256()
        };
        (isum, msum)
    };
    let dx = _mm256_loadu_ps(x.d.add(LANES * s));
    *acc = _mm256_fmadd_ps(_mm256_mul_ps(h.d, dx), _mm256_cvtepi32_ps(isum), *acc);
    if MINS {
        *mins = _mm256_fmadd_ps(_mm256_mul_ps(h.dmin, dx), _mm256_cvtepi32_ps(msum), *mins);
    }
}

/// Prefetches the weights [`PREFETCH_BYTES`] ahead of the `bytes` at `w` (as the 32-value
/// kernels do; the address may lie past the slice, and prefetching never faults).
#[inline(always)]
unsafe fn prefetch(w: *const u8, bytes: usize) {
    for off in (0..bytes).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(off + PREFETCH_BYTES).cast());
    }
}

/// The AVX2 kernel.
pub(super) mod avx2 {
    use super::*;

    super_row_kernels!("avx2,fma,f16c", [1, 2, 3, 4, 5, 6, 7, 8]);

    /// The loop over weight rows, one at a time (by up to 8 rows of `x`).
    ///
    /// # Safety
    /// As `dot`, with `R` rows of `x`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_rows<
        const MINS: bool,
        const PER16: bool,
        const U6: bool,
        const CB: bool,
        const R: usize,
    >(
        (sb, w, rb, xs, y, ldy): (&SuperBlock, &[u8], usize, &[XRow<'_>], *mut f32, usize),
    ) {
        let lay = const { Layout::new(MINS, PER16, U6) };
        let ns = rb / lay.bytes;
        let x: [XPtr; R] = std::array::from_fn(|r| XPtr::new(&xs[r], ns));
        let offset = TypeConsts::new(sb);
        for (j, wj) in w.chunks_exact(rb).enumerate() {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut mins = [_mm256_setzero_ps(); R];
            for s in 0..ns {
                let b = wj.as_ptr().add(s * lay.bytes);
                group::<MINS, PER16, U6, CB, R>(b, s, offset, &x, &mut acc, &mut mins);
            }
            for r in 0..R {
                *y.add(r * ldy + j) = hsum(lanes::<MINS>(acc[r], mins[r]));
            }
        }
    }

    /// The packed super-block at `w` (super-block `s` of the row) against `R` rows of `x`.
    ///
    /// # Safety
    /// `w` valid for the super-block; each row holds super-block `s`; the CPU has AVX2, FMA
    /// and F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group<
        const MINS: bool,
        const PER16: bool,
        const U6: bool,
        const CB: bool,
        const R: usize,
    >(
        w: *const u8,
        s: usize,
        offset: TypeConsts,
        x: &[XPtr; R],
        acc: &mut [__m256; R],
        mins: &mut [__m256; R],
    ) {
        let lay = const { Layout::new(MINS, PER16, U6) };
        prefetch(w, lay.bytes);
        let h = head::<MINS, PER16, U6>(w);
        let low = _mm256_set1_epi8(0x0F);
        let n: [__m256i; 4] =
            std::array::from_fn(|p| _mm256_loadu_si256(w.add(lay.values + 32 * p).cast()));
        // Value piece c: low nibbles of vector c (c < 4), high nibbles of vector c - 4.
        let mut u: [__m256i; 8] = std::array::from_fn(|c| {
            if c < 4 {
                _mm256_and_si256(n[c], low)
            } else {
                _mm256_and_si256(_mm256_srli_epi16::<4>(n[c - 4]), low)
            }
        });
        if U6 {
            // Nibble vector p's top bits: plane vector p % 2, field 2·(p / 2) + (c >= 4),
            // each moved to bits 4-5.
            let top = _mm256_set1_epi8(0x30);
            let plane: [__m256i; 2] =
                std::array::from_fn(|i| _mm256_loadu_si256(w.add(lay.plane + 32 * i).cast()));
            for (c, uc) in u.iter_mut().enumerate() {
                let (p, high) = (c % 4, c / 4);
                let hv = plane[p % 2];
                let bits = match 2 * (p / 2) + high {
                    0 => _mm256_slli_epi16::<4>(hv),
                    1 => _mm256_slli_epi16::<2>(hv),
                    2 => hv,
                    _ => _mm256_srli_epi16::<2>(hv),
                };
                *uc = _mm256_or_si256(*uc, _mm256_and_si256(bits, top));
            }
        }
        let ones = _mm256_set1_epi16(1);
        if CB {
            // Codebook values `c` (signed) by `pshufb` on the nibbles; `maddubs` would saturate on
            // `c + 128` (pairs up to `2·255·127`), so `|c|` against `x` with `c`'s sign (Q8_0's
            // trick in `x86_avx2.rs`): pairs up to `2·127·127`, each piece its own `madd`. That
            // sums `c·x`, which is `u·x - 128·x`: the offset is already out.
            let table = _mm256_broadcastsi128_si256(offset.codebook);
            let c: [__m256i; 8] = std::array::from_fn(|i| _mm256_shuffle_epi8(table, u[i]));
            let mag: [__m256i; 8] = std::array::from_fn(|i| _mm256_abs_epi8(c[i]));
            let no_offset = TypeConsts {
                any: false,
                ..offset
            };
            for r in 0..R {
                let xg = x[r].qs.add(s * VALUES);
                let p: [__m256i; 8] = std::array::from_fn(|i| {
                    let xi = _mm256_sign_epi8(_mm256_loadu_si256(xg.add(32 * i).cast()), c[i]);
                    _mm256_madd_epi16(_mm256_maddubs_epi16(mag[i], xi), ones)
                });
                let half = |h: usize| {
                    _mm256_add_epi32(
                        _mm256_add_epi32(p[4 * h], p[4 * h + 1]),
                        _mm256_add_epi32(p[4 * h + 2], p[4 * h + 3]),
                    )
                };
                let (sa, sb) = if PER16 {
                    (half(0), half(1))
                } else {
                    let all = _mm256_add_epi32(half(0), half(1));
                    (all, all)
                };
                finish::<MINS, PER16>(sa, sb, s, no_offset, &h, &x[r], &mut acc[r], &mut mins[r]);
            }
            return;
        }
        for r in 0..R {
            let xg = x[r].qs.add(s * VALUES);
            let p: [__m256i; 8] = std::array::from_fn(|c| {
                _mm256_maddubs_epi16(u[c], _mm256_loadu_si256(xg.add(32 * c).cast()))
            });
            // Pairs of pieces summed in i16, then into the lanes (the module docs' bounds: 4-bit
            // values take all of a half's pieces, or all 8 with one scale per 32, at once).
            let pairs: [__m256i; 4] =
                std::array::from_fn(|i| _mm256_add_epi16(p[2 * i], p[2 * i + 1]));
            let lanes = |a: __m256i, b: __m256i| {
                if U6 {
                    _mm256_add_epi32(_mm256_madd_epi16(a, ones), _mm256_madd_epi16(b, ones))
                } else {
                    _mm256_madd_epi16(_mm256_add_epi16(a, b), ones)
                }
            };
            let (sa, sb) = if PER16 {
                (lanes(pairs[0], pairs[1]), lanes(pairs[2], pairs[3]))
            } else if U6 {
                let all = _mm256_add_epi32(lanes(pairs[0], pairs[1]), lanes(pairs[2], pairs[3]));
                (all, all)
            } else {
                let all = _mm256_add_epi16(
                    _mm256_add_epi16(pairs[0], pairs[1]),
                    _mm256_add_epi16(pairs[2], pairs[3]),
                );
                let all = _mm256_madd_epi16(all, ones);
                (all, all)
            };
            finish::<MINS, PER16>(sa, sb, s, offset, &h, &x[r], &mut acc[r], &mut mins[r]);
        }
    }
}

/// The AVX-512 (VNNI) kernel.
pub(super) mod avx512 {
    use super::*;

    super_row_kernels!(
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        [1, 2, 3, 4]
    );

    /// The loop over weight rows: in tiles of `R` rows of `x` by two weight rows (the last one
    /// alone when their number is odd), each piece of `x` loaded once for both.
    ///
    /// # Safety
    /// As `dot`, with `R` rows of `x`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn dot_rows<
        const MINS: bool,
        const PER16: bool,
        const U6: bool,
        const CB: bool,
        const R: usize,
    >(
        (sb, w, rb, xs, y, ldy): (&SuperBlock, &[u8], usize, &[XRow<'_>], *mut f32, usize),
    ) {
        let ns = rb / const { Layout::new(MINS, PER16, U6) }.bytes;
        let x: [XPtr; R] = std::array::from_fn(|r| XPtr::new(&xs[r], ns));
        let offset = TypeConsts::new(sb);
        let cols = w.len() / rb;
        let mut j = 0;
        if crate::kernels::quant::wide_tiles() {
            while j + 2 <= cols {
                let wj = w.as_ptr().add(j * rb);
                let out = tile::<MINS, PER16, U6, CB, R, 2>([wj, wj.add(rb)], ns, offset, &x);
                for (r, v) in out.into_iter().enumerate() {
                    *y.add(r * ldy + j) = v[0];
                    *y.add(r * ldy + j + 1) = v[1];
                }
                j += 2;
            }
        }
        for j in j..cols {
            let wj = w.as_ptr().add(j * rb);
            let out = tile::<MINS, PER16, U6, CB, R, 1>([wj], ns, offset, &x);
            for (r, v) in out.into_iter().enumerate() {
                *y.add(r * ldy + j) = v[0];
            }
        }
    }

    /// `NC` packed weight rows of `ns` super-blocks at `w` against `R` rows of `x`.
    ///
    /// # Safety
    /// Each `w[c]` valid for `ns` super-blocks; the rows hold them; the CPU has this kernel's
    /// features.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile<
        const MINS: bool,
        const PER16: bool,
        const U6: bool,
        const CB: bool,
        const R: usize,
        const NC: usize,
    >(
        w: [*const u8; NC],
        ns: usize,
        offset: TypeConsts,
        x: &[XPtr; R],
    ) -> [[f32; NC]; R] {
        let bytes = const { Layout::new(MINS, PER16, U6) }.bytes;
        let mut acc = [[_mm256_setzero_ps(); NC]; R];
        let mut mins = [[_mm256_setzero_ps(); NC]; R];
        let mut ws = w;
        for s in 0..ns {
            group::<MINS, PER16, U6, CB, R, NC>(ws, s, offset, x, &mut acc, &mut mins);
            for wc in ws.iter_mut() {
                *wc = wc.add(bytes);
            }
        }
        std::array::from_fn(|r| std::array::from_fn(|c| hsum(lanes::<MINS>(acc[r][c], mins[r][c]))))
    }

    /// The sum of `z`'s two 256-bit halves.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn fold(z: __m512i) -> __m256i {
        _mm256_add_epi32(_mm512_castsi512_si256(z), _mm512_extracti64x4_epi64::<1>(z))
    }

    /// The packed super-block at `w` unpacked: its values in the order of the `x` registers they
    /// meet (pieces (0,1), (2,3), (4,5), (6,7)), as `vpdpbusd` takes them.
    ///
    /// # Safety
    /// `w` valid for the super-block; the CPU has this kernel's features.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn values<const MINS: bool, const PER16: bool, const U6: bool, const CB: bool>(
        w: *const u8,
        offset: TypeConsts,
    ) -> [__m512i; 4] {
        let lay = const { Layout::new(MINS, PER16, U6) };
        let low = _mm512_set1_epi8(0x0F);
        let (w01, w23) = (
            _mm512_loadu_si512(w.add(lay.values).cast()),
            _mm512_loadu_si512(w.add(lay.values + 64).cast()),
        );
        let mut v = [
            _mm512_and_si512(w01, low),
            _mm512_and_si512(w23, low),
            _mm512_and_si512(_mm512_srli_epi16::<4>(w01), low),
            _mm512_and_si512(_mm512_srli_epi16::<4>(w23), low),
        ];
        if U6 {
            // Plane byte k: bits 0-1 for w01's low nibble, 2-3 its high one, 4-5 and 6-7 w23's.
            let top = _mm512_set1_epi8(0x30);
            let plane = _mm512_loadu_si512(w.add(lay.plane).cast());
            let bits = [
                _mm512_slli_epi16::<4>(plane),
                plane,
                _mm512_slli_epi16::<2>(plane),
                _mm512_srli_epi16::<2>(plane),
            ];
            for (vi, b) in v.iter_mut().zip(bits) {
                *vi = _mm512_or_si512(*vi, _mm512_and_si512(b, top));
            }
        }
        if CB {
            // `u = c + 128` (`c`'s bits with the top one flipped) by `vpshufb` on the nibbles:
            // unsigned bytes as `vpdpbusd` takes them; `finish` takes `128·X` back out.
            let table =
                _mm512_broadcast_i32x4(_mm_xor_si128(offset.codebook, _mm_set1_epi8(i8::MIN)));
            for vi in v.iter_mut() {
                *vi = _mm512_shuffle_epi8(table, *vi);
            }
        }
        v
    }

    /// As `avx2::group` for each of the `NC` packed super-blocks at `w` (super-block `s` of
    /// `NC` weight rows), two pieces per register, each piece of `x` loaded once for all of them.
    ///
    /// # Safety
    /// As `avx2::group`, for each `w[c]`, with this kernel's CPU features.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn group<
        const MINS: bool,
        const PER16: bool,
        const U6: bool,
        const CB: bool,
        const R: usize,
        const NC: usize,
    >(
        w: [*const u8; NC],
        s: usize,
        offset: TypeConsts,
        x: &[XPtr; R],
        acc: &mut [[__m256; NC]; R],
        mins: &mut [[__m256; NC]; R],
    ) {
        // No closures on this path (nor `array::map`/`from_fn`): one handed to a generic
        // function is compiled without this function's CPU features and called, not inlined.
        let bytes = const { Layout::new(MINS, PER16, U6) }.bytes;
        let mut h = [head::<MINS, PER16, U6>(w[0]); NC];
        let mut v = [[_mm512_setzero_si512(); 4]; NC];
        for c in 0..NC {
            prefetch(w[c], bytes);
            if c > 0 {
                h[c] = head::<MINS, PER16, U6>(w[c]);
            }
            v[c] = values::<MINS, PER16, U6, CB>(w[c], offset);
        }
        for r in 0..R {
            let xg = x[r].qs.add(s * VALUES);
            let mut xv = [_mm512_setzero_si512(); 4];
            for (i, xi) in xv.iter_mut().enumerate() {
                *xi = _mm512_loadu_si512(xg.add(64 * i).cast());
            }
            for c in 0..NC {
                let a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[c][0], xv[0]);
                let a = _mm512_dpbusd_epi32(a, v[c][1], xv[1]);
                let b = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[c][2], xv[2]);
                let b = _mm512_dpbusd_epi32(b, v[c][3], xv[3]);
                let (sa, sb) = if PER16 {
                    (fold(a), fold(b))
                } else {
                    let all = fold(_mm512_add_epi32(a, b));
                    (all, all)
                };
                let (acc, mins) = (&mut acc[r][c], &mut mins[r][c]);
                finish::<MINS, PER16>(sa, sb, s, offset, &h[c], &x[r], acc, mins);
            }
        }
    }
}
