//! Matrix products: `y = x · wᵀ` against weights in PyTorch `Linear` layout ([`matmul_nt`], the hot
//! kernel) and the plain `y = a · b` ([`matmul_nn`], attention probabilities times values).
//!
//! # How `matmul_nt` is organised
//! Both operands are contiguous along `k`, so each output is a dot product of two rows. A
//! micro-kernel ("tile", one per instruction set) computes `mr × nr` outputs at once (`mr` rows of
//! `x`, `nr` rows of `w`, `mr·nr` vector accumulators in registers), loading each `w` vector once for
//! all `mr` rows: decoding (`m = 1..8`) streams the weights from memory exactly once per call.
//!
//! Above the tiles, `y` is cut into blocks (rows of `x` × rows of `w`) that become rayon tasks in
//! the current pool. A block walks its `w` rows in groups of `nr` and, for each group (hot in L1),
//! every group of `mr` rows of `x`; the rows of `x` in a block are capped so they stay in L2.
//! Blocks of at most 8 rows (decoding) read each `w` row about once, from memory: there the
//! multi-row tiles also prefetch `w` ahead (see `x86_avx2::NT_PREFETCH`: for rows shorter than a
//! page, the whole next tile in address order).
//!
//! # Decoding: weights streamed from memory
//! Decoding reads every weight once per step, so its speed is the rate at which the tiles stream
//! `w` from DRAM. f32 safetensors weights are read through the file mapping (4 KiB pages, no huge
//! pages for page-cache mappings here), converted ones from huge-page buffers
//! ([`crate::memory`]). `bench_matmul_mapped` (below; `cargo test --release -p fasttx-core --
//! --ignored --nocapture bench_matmul_mapped`) streams ~320 MB of distinct matrices per pass from
//! both. On Zen 4 (a KVM guest; the huge pages granted in full) the mapping streamed as fast or
//! faster: 1.1-1.3x the huge-page rate at k = 512, equal at k = 2048, with 1 or 2 threads (which
//! reach the same ~20-26 GB/s there). The pages were not what made beam search slow; the
//! multi-row tiles were: at k = 512 the m = 4 tile streamed 11-12 GB/s against 18-20 for m = 1,
//! because its prefetch pattern did not fit rows shorter than a page. With the next-tile
//! prefetch (`x86_avx2::NT_PREFETCH`) m = 4 streams 21-23 GB/s. (m = 8, two 4-row tiles per
//! group of `w` rows, went from ~10 to ~12 GB/s, about 48 GFLOP/s: half of what the same tiles
//! reach on weights in cache. Not pursued further.)
//!
//! safetensors aligns tensor data to 8 bytes only, so mapped weights usually start inside a cache
//! line (20 bytes past one in opus-mt-en-de, 40 in t5-small), and every 64-byte load of `w` then
//! spans two lines: 0.75-0.95x the aligned rate at k = 512 (`bench_matmul_misaligned`). On
//! AVX-512 the decoding tiles read such rows by whole aligned lines instead, the rows of `x`
//! copied once per call to the same place in a line (`columns_x_along_w`,
//! `x86_avx512::tile_rotated`), with the same bits.
//!
//! Blocks of more than 8 rows (prefill, batches) are bound by arithmetic instead, and take three
//! more steps: the kernel's big tile (6 × 4 on AVX-512: 24 accumulators; its own function, whose
//! start and end of a slice of `k` are fixed at compile time); a copy of the block's `x` rows at
//! a stride of an odd number of cache lines (rows `k = 1024·j` apart share L1 sets, and a tile's
//! rows would evict each other); and for `k > K_WHOLE_MAX` with more rows than fit the cache
//! budget whole, the reduction cut into slices of about `K_SLICE`, each output's lane partial sums
//! kept in memory from one slice to the next ([`KSlice`]), so that a block can take the kernel's
//! `sliced` rows per pass over `w`.
//!
//! # Determinism
//! Every output `y[i][j]` is computed by one tile with one fixed reduction order: `LANES` partial
//! sums over `k` (lane `l` takes `k`-indices `≡ l mod LANES`, the ragged end padded with zeros), then
//! a horizontal sum in a fixed order. That order does not depend on the tile shape, the block, the
//! thread or `m`, so a row's result has the same bits at any thread count and in any batch. (It does
//! depend on the instruction set: AVX-512, AVX2 and portable code round differently.) Cutting `k`
//! into slices keeps it: a slice starts from the previous slice's lane accumulators, stored and
//! reloaded unrounded, so every lane sees the same FMAs in the same order as in one pass.

use rayon::prelude::*;

use super::cpu::{self, Isa};
#[cfg(target_arch = "x86_64")]
use super::{x86_avx2, x86_avx512};

/// `m·n·k` below which a product runs on the calling thread: rayon's dispatch (a few µs) would
/// cost more than it saves.
const SERIAL_WORK: usize = 32 * 1024;
/// Multiply-adds a parallel task should at least have, for the same reason.
const MIN_TASK_WORK: usize = 64 * 1024;
/// Aim for this many tasks per thread so uneven progress evens out.
const TASKS_PER_THREAD: usize = 8;
/// Bytes of `x` rows a block of more than 8 rows takes (with the `w` rows it sweeps, inside a
/// 1 MiB L2; on a 512 KiB one they spill to L3, still read once per group of `w` rows). The more
/// rows, the fewer passes over `w`, which comes from L3 or memory.
const X_BLOCK_BYTES: usize = 768 * 1024;
/// Block widths (rows of `w`) are multiples of this, a multiple of every tile width, so only the
/// last block of a row has a ragged edge.
const COL_ALIGN: usize = 24;
/// Longest `k` a block of many rows always reduces in one pass. Above it, a product with more
/// rows than fit [`X_BLOCK_BYTES`] whole (k = 4864: 40) has its reduction cut into slices, so
/// that a block takes the kernel's `sliced` rows per pass over `w` instead of those few, `w`
/// coming from L3 or memory once per block. (Products with fewer rows gain nothing from it and
/// lose the carrying of partial sums: one pass, ~10% faster at k = 4864, m = 9..33.)
const K_WHOLE_MAX: usize = 4096;
/// Target slice of `k` (floats) when it is cut.
const K_SLICE: usize = 1024;
/// The widest lane count of any tile (AVX-512): floats of partial sum per output.
const MAX_LANES: usize = 16;

/// Matrix product against a weight stored `[n, k]`: `y[i][j] = Σ_p x[i][p] · w[j][p]`.
/// Parallel over the current rayon pool; the result is bitwise independent of the thread count
/// and of `m` (see the module docs).
pub fn matmul_nt(x: &[f32], w: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) {
    matmul_nt_with(cpu::isa(), x, w, y, m, k, n)
}

/// [`matmul_nt`] on an explicit instruction set (tests, benchmarks).
///
/// # Panics
/// If this CPU cannot run `isa`, or a slice is too short.
pub(crate) fn matmul_nt_with(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(cpu::supported(isa), "{isa:?} is not supported on this CPU");
    assert!(x.len() >= m * k && w.len() >= n * k && y.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let kernel = NtKernel::for_isa(isa);

    let threads = rayon::current_num_threads();
    let work = m.saturating_mul(n).saturating_mul(k);
    let parallel = threads > 1 && work >= SERIAL_WORK;

    // Rows of x per block: all of them when they fit the cache budget; the reduction cut into
    // slices when k is long and they do not.
    // Blocks of equal size (a multiple of 4) rather than full ones and a short last one: with
    // two threads, 512 rows at k = 896 as 216 + 216 + 80 left one thread idle near the end.
    let (slice, fit) = kernel.plan(m, k);
    let mb = if m <= fit {
        m
    } else {
        m.div_ceil(m.div_ceil(fit)).next_multiple_of(4).min(fit)
    };
    let row_blocks = m.div_ceil(mb);
    // Rows of w per block: only a matter of load balance, since a block's w rows are read once
    // per row block whatever its width.
    let nb = if parallel {
        let wanted = (TASKS_PER_THREAD * threads).div_ceil(row_blocks);
        let affordable = (mb * n * k.max(1) / MIN_TASK_WORK).max(1);
        let col_tasks = balanced_tasks(wanted.min(affordable), threads, row_blocks);
        n.div_ceil(col_tasks).next_multiple_of(COL_ALIGN).min(n)
    } else {
        n
    };
    let col_blocks = n.div_ceil(nb);

    let yp = SyncPtr(y.as_mut_ptr());
    let run = |t: usize| {
        let (r0, c0) = ((t / col_blocks) * mb, (t % col_blocks) * nb);
        let (rows, cols) = (mb.min(m - r0), nb.min(n - c0));
        // SAFETY: r0 + rows <= m and c0 + cols <= n, and the lengths were asserted above, so every
        // pointer below stays in its slice; `kernel` matches `isa`, which the CPU supports. Tasks
        // write disjoint rectangles of y, and `y` stays mutably borrowed by this call throughout.
        unsafe {
            kernel.block(
                x.as_ptr().add(r0 * k),
                w.as_ptr().add(c0 * k),
                yp.get().add(r0 * n + c0),
                rows,
                cols,
                k,
                slice,
                n,
            )
        }
    };
    let tasks = row_blocks * col_blocks;
    if parallel && tasks > 1 {
        (0..tasks).into_par_iter().for_each(run);
    } else {
        (0..tasks).for_each(run);
    }
}

/// The stride of the rows of `x` copied into the scratch: an odd number of cache lines, since
/// rows `k` apart (k a multiple of 1024, say) would map to the same L1 sets, and the rows a tile
/// sweeps would evict each other.
fn x_copy_stride(k: usize) -> usize {
    (k.div_ceil(MAX_LANES) | 1) * MAX_LANES
}

/// Copies `rows` rows of `x` (`k` apart) into `dst`, row `r` at `offset + r·ldx`.
///
/// # Safety
/// `x` valid for `rows·k` reads; `dst` holds `offset + (rows - 1)·ldx + k` values.
unsafe fn copy_x_rows(
    dst: &mut [f32],
    x: *const f32,
    rows: usize,
    k: usize,
    ldx: usize,
    offset: usize,
) {
    for r in 0..rows {
        let row = std::slice::from_raw_parts(x.add(r * k), k);
        dst[offset + r * ldx..offset + r * ldx + k].copy_from_slice(row);
    }
}

/// Rows of `x` (of length `k`) that one block of a long product takes: as many as stay in L2, a
/// multiple of 4. Each block reads all of `w` once, so a caller cutting a long product into
/// pieces of whole blocks (see [`crate::tensor::Linear::forward_checked`]) reads `w` no more
/// often than one call does.
pub(crate) fn row_block(k: usize) -> usize {
    // The rows a long product's blocks take (such a product is cut into slices when k is long).
    NtKernel::for_isa(cpu::isa()).plan(usize::MAX, k).1
}

/// Rows of length `len` that fit [`X_BLOCK_BYTES`], a multiple of 4.
fn whole_rows(len: usize) -> usize {
    (X_BLOCK_BYTES / (4 * len.max(1))).max(4) / 4 * 4
}

/// The slices `k` is cut into: `(slice length, count)`, equal lengths that are multiples of
/// every lane count (so that only the last slice has a ragged end), the last one shorter.
fn k_slices(k: usize) -> (usize, usize) {
    if k <= K_WHOLE_MAX {
        return (k, 1);
    }
    let len = k.div_ceil(k.div_ceil(K_SLICE)).next_multiple_of(MAX_LANES);
    (len, k.div_ceil(len))
}

/// The part of the reduction over `k` one tile call computes, and where it keeps its partial sums.
///
/// A tile reduces `len` elements of rows `ldx` (`x`) and `ld` (`w`) apart, its `x` and `w`
/// pointers already at the slice's start. Unless the slice is the first, it starts from the
/// partial sums in `partial` (the lane accumulators, unrounded); unless it is the last, it leaves
/// them there instead of summing them into `y`. The FMAs are the same, in the same order, as in
/// one pass over `k`.
#[derive(Clone, Copy)]
pub(crate) struct KSlice {
    pub(crate) ld: usize,
    pub(crate) ldx: usize,
    pub(crate) len: usize,
    pub(crate) first: bool,
    pub(crate) last: bool,
    /// Partial sums of output `(r, c)` of the tile at `partial + (r·ldp + c)·MAX_LANES` (the
    /// first `lanes` floats of it); only read or written when not both `first` and `last`.
    pub(crate) partial: *mut f32,
    pub(crate) ldp: usize,
}

impl KSlice {
    /// The whole of `k` in one pass.
    fn whole(k: usize) -> KSlice {
        KSlice {
            ld: k,
            ldx: k,
            len: k,
            first: true,
            last: true,
            partial: std::ptr::null_mut(),
            ldp: 0,
        }
    }

    /// Where output `(r, c)` of the tile keeps its partial sums.
    ///
    /// # Safety
    /// Only when `partial` is used (see the field), for an output of the tile.
    #[inline]
    pub(crate) unsafe fn partial_of(&self, r: usize, c: usize, lanes: usize) -> *mut f32 {
        debug_assert!(lanes <= MAX_LANES);
        self.partial.add((r * self.ldp + c) * MAX_LANES)
    }

    /// The same slice for the 1 × 1 tile of output `(r, c)`.
    ///
    /// # Safety
    /// As [`KSlice::partial_of`] when `partial` is used.
    #[inline]
    pub(crate) unsafe fn at(&self, r: usize, c: usize, lanes: usize) -> KSlice {
        KSlice {
            partial: if self.first && self.last {
                self.partial
            } else {
                self.partial_of(r, c, lanes)
            },
            ..*self
        }
    }
}

/// Tasks per row block: `tasks`, lowered to a multiple of the thread count when there is a single
/// row block (decoding), so that no thread is left with one task more than the others (5 equal
/// tasks on 2 threads take as long as 6).
pub(crate) fn balanced_tasks(tasks: usize, threads: usize, row_blocks: usize) -> usize {
    if row_blocks == 1 && tasks >= threads {
        tasks - tasks % threads
    } else {
        tasks.max(1)
    }
}

/// The tile micro-kernels of one instruction set.
struct NtKernel {
    /// Tile width (rows of `w`) to pair with a group of `mr` rows of `x`, indexed by `mr` (1..=4).
    nr: [usize; 5],
    /// Tile (rows of `x`, rows of `w`) for blocks of more than 8 rows.
    big: (usize, usize),
    /// A block of more than 8 rows whose `k` is cut into slices: (rows of `x` it takes, columns
    /// (rows of `w`) whose partial sums it carries at once, a multiple of every tile width).
    /// Their `rows × cols` outputs' partial sums ([`MAX_LANES`] floats each) and the slices of
    /// `x` and `w` they sweep stay within a 1 MiB L2.
    sliced: (usize, usize),
    /// Computes an `mr × nr` tile; see `x86_avx2::nt_tile` for the contract. The products run
    /// `stream_tile` and `gemm`; this plain tile is what `stream_tile` falls back to, kept for
    /// `bench_matmul_misaligned` to time against it.
    #[cfg_attr(not(test), allow(dead_code))]
    tile: unsafe fn(usize, usize, bool, *const f32, *const f32, &KSlice, *mut f32, usize),
    /// The tile of blocks of more than 8 rows: `tile`'s contract without `stream` (never set
    /// there), the same bits (see `x86_avx512::gemm_tile`).
    gemm: unsafe fn(usize, usize, *const f32, *const f32, &KSlice, *mut f32, usize),
    /// The same for blocks of at most 8 rows (decoding), with the same bits: tiles that also
    /// stream `w` well when its rows start inside a cache line (see `x86_avx512::nt_tile_stream`).
    stream_tile: unsafe fn(usize, usize, bool, *const f32, *const f32, &KSlice, *mut f32, usize),
    /// `stream_tile` reads `w` rows that start inside a cache line by whole lines only when
    /// several rows of `x` start at the same place in a line: `block` copies them there.
    x_along_w: bool,
}

impl NtKernel {
    fn for_isa(isa: Isa) -> NtKernel {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => NtKernel {
                nr: x86_avx512::NT_NR,
                big: x86_avx512::NT_BIG,
                tile: x86_avx512::nt_tile,
                gemm: x86_avx512::gemm_tile,
                // 216 KiB of partial sums + ~550 KiB of x + ~92 KiB of w (slices of ~1000).
                // Measured on Zen 4 against (96, 48), (192, 24) and (144, 12): as fast or faster
                // at k = 4864 and 8960.
                sliced: (144, 24),
                stream_tile: x86_avx512::nt_tile_stream,
                x_along_w: true,
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => NtKernel {
                nr: x86_avx2::NT_NR,
                big: x86_avx2::NT_BIG,
                tile: x86_avx2::nt_tile,
                gemm: x86_avx2::gemm_tile,
                // 288 KiB of partial sums + 384 KiB of x + 192 KiB of w. (The AVX-512 blocking
                // measured 0.85-0.97x at k = 8960 with the AVX2 tile of before `gemm_tile`;
                // not remeasured since.)
                sliced: (96, 48),
                stream_tile: x86_avx2::nt_tile,
                x_along_w: false,
            },
            _ => NtKernel {
                nr: portable::NT_NR,
                big: (4, portable::NT_NR[4]),
                tile: portable::nt_tile,
                gemm: portable::gemm_tile,
                sliced: (96, 48),
                stream_tile: portable::nt_tile,
                x_along_w: false,
            },
        }
    }

    /// How a product of `m` rows is cut: `(slice of k, rows of x per block)`. One pass over `k`
    /// (the slice is `k`) unless `k` is long and the rows do not fit the cache budget whole.
    fn plan(&self, m: usize, k: usize) -> (usize, usize) {
        let whole = whole_rows(k);
        if k > K_WHOLE_MAX && m > whole {
            (k_slices(k).0, self.sliced.0)
        } else {
            (k, whole)
        }
    }

    /// `y[..rows][..cols] = x[..rows] · w[..cols]ᵀ` for one block (`y` rows `ldy` apart), `k`
    /// reduced in slices of `slice` (all of it in one pass when `slice == k`).
    ///
    /// # Safety
    /// `x` valid for `rows·k` reads, `w` for `cols·k`, `y` for writes of `rows` rows of `cols` at
    /// stride `ldy`; the CPU supports this kernel's instruction set.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        &self,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        rows: usize,
        cols: usize,
        k: usize,
        slice: usize,
        ldy: usize,
    ) {
        // Up to 8 rows (decoding) w streams from memory once, whatever k is: one pass, over x
        // as it is, or copied to start where w's rows do in a cache line (see `x_along_w`).
        if rows <= 8 {
            let shift = w as usize % 64 / 4;
            if self.x_along_w
                && rows >= 2
                && (w as usize).is_multiple_of(4)
                && shift != 0
                && k.is_multiple_of(MAX_LANES)
            {
                self.columns_x_along_w(x, w, y, rows, cols, k, ldy, shift);
            } else {
                self.columns(x, w, y, rows, cols, &KSlice::whole(k), ldy);
            }
            return;
        }
        let slices = k.div_ceil(slice.max(1));
        let sliced_cols = self.sliced.1;
        SCRATCH.with_borrow_mut(|scratch| {
            let ldx = x_copy_stride(k);
            let partials = if slices > 1 {
                rows * sliced_cols * MAX_LANES
            } else {
                0
            };
            let (xp, partial) = scratch.split(rows * ldx, partials);
            copy_x_rows(xp, x, rows, k, ldx, 0);
            let xp = xp.as_ptr();
            if slices == 1 {
                let ks = KSlice {
                    ldx,
                    ..KSlice::whole(k)
                };
                self.columns(xp, w, y, rows, cols, &ks, ldy);
                return;
            }
            // Long k: for each group of columns, every slice of k in turn, each output's
            // partial sums carried in `partial` from one slice to the next.
            let mut j = 0;
            while j < cols {
                let width = sliced_cols.min(cols - j);
                for s in 0..slices {
                    let p = s * slice;
                    let ks = KSlice {
                        ld: k,
                        ldx,
                        len: slice.min(k - p),
                        first: s == 0,
                        last: s + 1 == slices,
                        partial: partial.as_mut_ptr(),
                        ldp: sliced_cols,
                    };
                    self.columns(xp.add(p), w.add(j * k + p), y.add(j), rows, width, &ks, ldy);
                }
                j += width;
            }
        });
    }

    /// [`NtKernel::block`] of at most 8 rows over `w` rows starting `shift` floats past a cache
    /// line: the rows of `x` copied once into the thread's scratch, each `shift` floats past a
    /// line, so that the tiles load both `x` and `w` by whole lines (`x86_avx512::nt_tile_stream`).
    /// Rows an odd number of lines apart ([`x_copy_stride`]), as in `block`.
    ///
    /// # Safety
    /// As [`NtKernel::block`], with `k` a multiple of 16.
    #[allow(clippy::too_many_arguments)]
    unsafe fn columns_x_along_w(
        &self,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        rows: usize,
        cols: usize,
        k: usize,
        ldy: usize,
        shift: usize,
    ) {
        SCRATCH.with_borrow_mut(|scratch| {
            let ldx = x_copy_stride(k);
            let (xp, _) = scratch.split(rows * ldx + MAX_LANES, 0);
            copy_x_rows(xp, x, rows, k, ldx, shift);
            let ks = KSlice {
                ldx,
                ..KSlice::whole(k)
            };
            self.columns(xp.as_ptr().add(shift), w, y, rows, cols, &ks, ldy);
        });
    }

    /// `y[..rows][..cols]` for the slice `ks` of `k`: for each group of `w` rows (then hot in
    /// L1), every group of `x` rows. Output `(i, j)` keeps its partial sums at `(i·ldp + j)` of
    /// `ks.partial`.
    ///
    /// # Safety
    /// As [`NtKernel::block`], for `ks.len` elements of rows `ks.ldx` (`x`) and `ks.ld` (`w`)
    /// apart; `ks.partial` holds `rows × ks.ldp` outputs when used.
    #[allow(clippy::too_many_arguments)]
    unsafe fn columns(
        &self,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        rows: usize,
        cols: usize,
        ks: &KSlice,
        ldy: usize,
    ) {
        let (tile, gemm) = (self.stream_tile, self.gemm);
        // Few rows (decoding): one group, with the widest tile for that many rows; up to 8, groups
        // of 4; more, the kernel's big tile (the last group, if shorter, keeps the same width).
        let (mr, nr) = if rows > 8 {
            self.big
        } else if rows >= 4 {
            (4, self.nr[4])
        } else {
            (rows, self.nr[rows])
        };

        // With at most two groups of x rows, each w row is used about once: it streams from
        // memory, and the tiles prefetch it. (In bigger blocks it is re-read from cache.)
        let stream = rows <= 8;
        let sliced = !(ks.first && ks.last);
        // For each group of w rows (then hot in L1), every group of x rows.
        let sweep = |j: usize, width: usize| {
            let mut i = 0;
            while i < rows {
                let h = mr.min(rows - i);
                let here = if sliced {
                    KSlice {
                        partial: ks.partial_of(i, j, MAX_LANES),
                        ..*ks
                    }
                } else {
                    *ks
                };
                if stream {
                    tile(
                        h,
                        width,
                        stream,
                        x.add(i * ks.ldx),
                        w.add(j * ks.ld),
                        &here,
                        y.add(i * ldy + j),
                        ldy,
                    );
                } else {
                    gemm(
                        h,
                        width,
                        x.add(i * ks.ldx),
                        w.add(j * ks.ld),
                        &here,
                        y.add(i * ldy + j),
                        ldy,
                    );
                }
                i += h;
            }
        };
        let mut j = 0;
        while j + nr <= cols {
            sweep(j, nr);
            j += nr;
        }
        // The ragged edge (last block only): one w row at a time.
        for j in j..cols {
            sweep(j, 1);
        }
    }
}

thread_local! {
    /// A thread's scratch for the copies of x its blocks make (kept between calls).
    static SCRATCH: std::cell::RefCell<Scratch> = const { std::cell::RefCell::new(Scratch(Vec::new())) };
}

/// Scratch memory handed out as 64-byte aligned pieces (each a whole number of cache lines).
struct Scratch(Vec<f32>);

impl Scratch {
    /// Two pieces of `a` and `b` floats (multiples of 16), 64-byte aligned.
    fn split(&mut self, a: usize, b: usize) -> (&mut [f32], &mut [f32]) {
        debug_assert!(a.is_multiple_of(MAX_LANES) && b.is_multiple_of(MAX_LANES));
        self.0.resize(a + b + MAX_LANES, 0.0);
        let skip = self.0.as_ptr().align_offset(64).min(MAX_LANES);
        self.0[skip..skip + a + b].split_at_mut(a)
    }
}

/// Raw output pointer shared by the tasks of one product (here and in `quant`), each writing its
/// own part of the output.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub(crate) *mut f32);
// SAFETY: only used by the parallel products (`matmul_nt_with`, `quant_matmul_with`), whose tasks
// write disjoint parts of the buffer the caller holds mutably for the whole call.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    // A method (not `.0`) so closures capture the whole Send/Sync wrapper, not the bare pointer.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Scalar reference: the definition, used to test the fast paths.
pub fn matmul_nt_scalar(x: &[f32], w: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(x.len() >= m * k && w.len() >= n * k && y.len() >= m * n);
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            y[i * n + j] = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
        }
    }
}

/// Plain product `y = a · b` for `a: [m, k]`, `b: [k, n]`, `y: [m, n]` (attention probabilities
/// times values). Each output is summed in `p` order, so rows do not depend on `m` or threads.
pub fn matmul_nn(a: &[f32], b: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) {
    matmul_nn_with(cpu::isa(), a, b, y, m, k, n)
}

/// [`matmul_nn`] on an explicit instruction set.
///
/// # Panics
/// If this CPU cannot run `isa`, or a slice is too short.
pub(crate) fn matmul_nn_with(
    isa: Isa,
    a: &[f32],
    b: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(cpu::supported(isa), "{isa:?} is not supported on this CPU");
    assert!(a.len() >= m * k && b.len() >= k * n && y.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let b = &b[..k * n];
    let row = |i: usize, yr: &mut [f32]| {
        let ar = &a[i * k..(i + 1) * k];
        match isa {
            // SAFETY: the CPU supports AVX2+FMA (asserted above; AVX-512 implies both); the slice
            // lengths are what `nn_row` requires.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe { x86_avx2::nn_row(ar, b, yr, k, n) },
            _ => nn_row_portable(ar, b, yr, n),
        }
    };
    let y = &mut y[..m * n];
    let work = m.saturating_mul(n).saturating_mul(k);
    if rayon::current_num_threads() > 1 && work >= SERIAL_WORK {
        let min_rows = MIN_TASK_WORK.div_ceil(n * k.max(1));
        y.par_chunks_mut(n)
            .enumerate()
            .with_min_len(min_rows)
            .for_each(|(i, yr)| row(i, yr));
    } else {
        y.chunks_mut(n).enumerate().for_each(|(i, yr)| row(i, yr));
    }
}

/// One row of `a · b` as a sequence of `y += a[p] · b[p]` (vectorised by the compiler).
fn nn_row_portable(a: &[f32], b: &[f32], y: &mut [f32], n: usize) {
    y.fill(0.0);
    for (&ap, br) in a.iter().zip(b.chunks_exact(n)) {
        for (yj, &bj) in y.iter_mut().zip(br) {
            *yj += ap * bj;
        }
    }
}

/// Scalar reference for [`matmul_nn`].
pub fn matmul_nn_scalar(a: &[f32], b: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(a.len() >= m * k && b.len() >= k * n && y.len() >= m * n);
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
}

/// Portable tiles: the AVX2 algorithm written over `[f32; 8]` accumulators, which the compiler
/// maps onto whatever vectors the target has (SSE2, NEON). Same lane layout and horizontal-sum
/// order as the AVX2 tiles, but multiply and add are separate roundings (no FMA).
mod portable {
    use super::KSlice;

    const LANES: usize = 8;

    pub(super) const NT_NR: [usize; 5] = [0, 8, 6, 4, 3];

    /// Same contract as `x86_avx2::gemm_tile`.
    ///
    /// # Safety
    /// As [`nt_tile`].
    pub(super) unsafe fn gemm_tile(
        mr: usize,
        nr: usize,
        x: *const f32,
        w: *const f32,
        ks: &KSlice,
        y: *mut f32,
        ldy: usize,
    ) {
        nt_tile(mr, nr, false, x, w, ks, y, ldy)
    }

    /// Same contract as `x86_avx2::nt_tile`.
    ///
    /// # Safety
    /// `x` valid for `mr` rows and `w` for `nr` rows of `ks.len` reads (rows `ks.ld` apart), `y`
    /// valid for writes at `r·ldy + c` for `r < mr`, `c < nr`; `ks.partial` as [`KSlice`] says.
    #[allow(clippy::too_many_arguments)] // one flat signature shared by every ISA
    pub(super) unsafe fn nt_tile(
        mr: usize,
        nr: usize,
        _stream: bool,
        x: *const f32,
        w: *const f32,
        ks: &KSlice,
        y: *mut f32,
        ldy: usize,
    ) {
        match (mr, nr) {
            (1, 8) => tile::<1, 8>(x, w, ks, y, ldy),
            (2, 6) => tile::<2, 6>(x, w, ks, y, ldy),
            (3, 4) => tile::<3, 4>(x, w, ks, y, ldy),
            (4, 3) => tile::<4, 3>(x, w, ks, y, ldy),
            (1, 3) => tile::<1, 3>(x, w, ks, y, ldy),
            (2, 3) => tile::<2, 3>(x, w, ks, y, ldy),
            (3, 3) => tile::<3, 3>(x, w, ks, y, ldy),
            _ => {
                for r in 0..mr {
                    for c in 0..nr {
                        let one = ks.at(r, c, LANES);
                        tile::<1, 1>(
                            x.add(r * ks.ldx),
                            w.add(c * ks.ld),
                            &one,
                            y.add(r * ldy + c),
                            ldy,
                        );
                    }
                }
            }
        }
    }

    #[inline]
    unsafe fn tile<const MR: usize, const NR: usize>(
        x: *const f32,
        w: *const f32,
        ks: &KSlice,
        y: *mut f32,
        ldy: usize,
    ) {
        let (ld, ldx, k) = (ks.ld, ks.ldx, ks.len);
        // SAFETY: the caller guarantees MR rows of x (ldx apart) and NR rows of w (ld apart),
        // each k long.
        let xs: [&[f32]; MR] =
            std::array::from_fn(|r| std::slice::from_raw_parts(x.add(r * ldx), k));
        let ws: [&[f32]; NR] =
            std::array::from_fn(|c| std::slice::from_raw_parts(w.add(c * ld), k));
        let mut acc = [[[0.0f32; LANES]; NR]; MR];
        if !ks.first {
            for (r, acc_r) in acc.iter_mut().enumerate() {
                for (c, a) in acc_r.iter_mut().enumerate() {
                    // SAFETY: partial sums of an output of this tile (`KSlice`).
                    a.copy_from_slice(std::slice::from_raw_parts(
                        ks.partial_of(r, c, LANES),
                        LANES,
                    ));
                }
            }
        }
        let body = k - k % LANES;
        for p in (0..body).step_by(LANES) {
            for (xr, acc_r) in xs.iter().zip(acc.iter_mut()) {
                let xv: &[f32; LANES] = xr[p..p + LANES].try_into().unwrap();
                for (wr, a) in ws.iter().zip(acc_r.iter_mut()) {
                    let wv: &[f32; LANES] = wr[p..p + LANES].try_into().unwrap();
                    for l in 0..LANES {
                        a[l] += xv[l] * wv[l];
                    }
                }
            }
        }
        for (l, p) in (body..k).enumerate() {
            for (xr, acc_r) in xs.iter().zip(acc.iter_mut()) {
                for (wr, a) in ws.iter().zip(acc_r.iter_mut()) {
                    a[l] += xr[p] * wr[p];
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (c, a) in acc_r.iter().enumerate() {
                if ks.last {
                    // SAFETY: r < MR, c < NR: inside the caller's y rectangle.
                    *y.add(r * ldy + c) = hsum(a);
                } else {
                    // SAFETY: partial sums of an output of this tile (`KSlice`).
                    std::slice::from_raw_parts_mut(ks.partial_of(r, c, LANES), LANES)
                        .copy_from_slice(a);
                }
            }
        }
    }

    /// The AVX2 `hsum` order: `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
    #[inline]
    fn hsum(a: &[f32; LANES]) -> f32 {
        let s = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
        (s[0] + s[2]) + (s[1] + s[3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close_to_ref, random, report_skipped, with_threads};

    /// Σ|x·w| per output: the scale of the rounding error a reordered sum may have.
    fn abs_nt(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let wa: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        let mut out = vec![0.0; m * n];
        matmul_nt_scalar(&xa, &wa, &mut out, m, k, n);
        out
    }

    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 7, 1),
        (1, 33, 7),
        (2, 8, 24),
        (3, 65, 129),
        (4, 16, 3),
        (5, 9, 26),
        (7, 513, 33),
        (8, 512, 100),
        (1, 513, 1025),
        (37, 513, 1025),
        // k above K_WHOLE_MAX with more rows than fit whole: k cut into slices (the last one
        // ragged, a multiple of no lane count), m and n not multiples of the tile or the column
        // group; then with rows that fit whole (one pass over a long k).
        (70, 6200, 31),
        (45, 4864, 30),
        (50, 4100, 27),
        (9, 6145, 50),
        (13, 7000, 9),
        (20, 8200, 11),
        // More than 8 rows, one pass over a long k (x rows copied at a padded stride).
        (13, 2100, 49),
        (70, 3001, 101),
        (66, 4864, 9),
        // More than 8 rows, one pass: every edge of the big tile (6 × 4 on AVX-512).
        (9, 7, 5),
        (11, 64, 7),
        (25, 100, 30),
        (3, 0, 5),
        (0, 5, 3),
        (3, 5, 0),
    ];

    #[test]
    fn matmul_nt_matches_scalar() {
        report_skipped();
        for isa in cpu::supported_isas() {
            for &(m, k, n) in SHAPES {
                let x = random(m * k, 1);
                let w = random(n * k, 2);
                let mut want = vec![0.0; m * n];
                matmul_nt_scalar(&x, &w, &mut want, m, k, n);
                for threads in [1, 2] {
                    let mut got = vec![f32::NAN; m * n];
                    with_threads(threads, || matmul_nt_with(isa, &x, &w, &mut got, m, k, n));
                    let scale = abs_nt(&x, &w, m, k, n);
                    let what = format!("{isa:?} m={m} k={k} n={n} threads={threads}");
                    assert_close_to_ref(&got, &want, &scale, 1e-5, &what);
                }
            }
        }
    }

    /// Large enough to be cut into several row and column blocks.
    #[test]
    fn matmul_nt_blocked_prefill_shape() {
        let (m, k, n) = (130, 700, 300);
        let x = random(m * k, 3);
        let w = random(n * k, 4);
        let mut want = vec![0.0; m * n];
        matmul_nt_scalar(&x, &w, &mut want, m, k, n);
        let scale = abs_nt(&x, &w, m, k, n);
        for isa in cpu::supported_isas() {
            let mut got = vec![f32::NAN; m * n];
            with_threads(2, || matmul_nt_with(isa, &x, &w, &mut got, m, k, n));
            assert_close_to_ref(&got, &want, &scale, 1e-5, &format!("{isa:?} blocked"));
        }
    }

    /// y[i] has the same bits whether x[i] is alone (m = 1) or row i of a batch of 7, and with
    /// 1 or 2 threads: generation must not depend on batch composition or thread count.
    #[test]
    fn matmul_nt_bitwise_independent_of_m_and_threads() {
        for isa in cpu::supported_isas() {
            for &(k, n) in &[(513, 1025), (64, 50), (7, 33), (2048, 97)] {
                let m = 7;
                let x = random(m * k, 5);
                let w = random(n * k, 6);
                let mut batch1 = vec![0.0; m * n];
                let mut batch2 = vec![0.0; m * n];
                with_threads(1, || matmul_nt_with(isa, &x, &w, &mut batch1, m, k, n));
                with_threads(2, || matmul_nt_with(isa, &x, &w, &mut batch2, m, k, n));
                assert_eq!(
                    bits(&batch1),
                    bits(&batch2),
                    "{isa:?} k={k} n={n}: 1 vs 2 threads"
                );
                for i in 0..m {
                    for threads in [1, 2] {
                        let mut single = vec![0.0; n];
                        let xi = &x[i * k..(i + 1) * k];
                        with_threads(threads, || {
                            matmul_nt_with(isa, xi, &w, &mut single, 1, k, n)
                        });
                        assert_eq!(
                            bits(&single),
                            bits(&batch1[i * n..(i + 1) * n]),
                            "{isa:?} k={k} n={n} row {i}: m=1 ({threads} threads) vs m=7"
                        );
                    }
                }
                // A pair of rows takes yet another tile shape.
                let mut pair = vec![0.0; 2 * n];
                matmul_nt_with(isa, &x[5 * k..], &w, &mut pair, 2, k, n);
                assert_eq!(
                    bits(&pair),
                    bits(&batch1[5 * n..]),
                    "{isa:?} rows 5..7 as m=2"
                );
            }
        }
    }

    /// With k cut into slices (k > K_WHOLE_MAX, more rows than fit whole), each row still has the
    /// bits of the one-pass product of that row alone: every m from 1 to 14 and large (several
    /// row blocks, several column groups), 1 and 2 threads.
    #[test]
    fn matmul_nt_sliced_k_bitwise_equals_one_pass() {
        for isa in cpu::supported_isas() {
            for &(m, k, n) in &[
                (70, 6145, 53),
                (21, 7001, 20),
                (17, 9000, 27),
                (130, 6200, 7),
                (45, 4864, 30),
                (50, 4100, 27),
                (200, 4864, 26),
                (100, 9000, 51),
            ] {
                assert!(k_slices(k).1 > 1);
                let x = random(m * k, 13);
                let w = random(n * k, 14);
                let mut single = vec![0.0; m * n];
                for i in 0..m {
                    matmul_nt_with(
                        isa,
                        &x[i * k..(i + 1) * k],
                        &w,
                        &mut single[i * n..],
                        1,
                        k,
                        n,
                    );
                }
                for threads in [1, 2] {
                    let mut batch = vec![f32::NAN; m * n];
                    with_threads(threads, || matmul_nt_with(isa, &x, &w, &mut batch, m, k, n));
                    for i in 0..m {
                        assert_eq!(
                            bits(&batch[i * n..(i + 1) * n]),
                            bits(&single[i * n..(i + 1) * n]),
                            "{isa:?} m={m} k={k} n={n} threads={threads} row {i}"
                        );
                    }
                }
                // Every smaller batch (up to 8 rows with the decoding tiles, then the big tile)
                // from row 1 on.
                for rows in 1..=14.min(m - 1) {
                    let mut part = vec![f32::NAN; rows * n];
                    with_threads(2, || {
                        matmul_nt_with(isa, &x[k..], &w, &mut part, rows, k, n)
                    });
                    assert_eq!(
                        bits(&part),
                        bits(&single[n..(rows + 1) * n]),
                        "{isa:?} k={k} rows={rows}"
                    );
                }
            }
        }
    }

    #[test]
    fn k_slices_cover_k_in_lane_multiples() {
        for k in [1, 512, K_WHOLE_MAX, K_WHOLE_MAX + 1, 2048, 4864, 8191] {
            let (len, count) = k_slices(k);
            assert!(len * count >= k && len * (count - 1) < k, "k={k}");
            if count > 1 {
                assert_eq!(len % MAX_LANES, 0, "k={k}");
                assert!(len <= K_SLICE + MAX_LANES, "k={k}");
            }
        }
    }

    /// `w` starting anywhere in a cache line (as f32 weights mapped from a safetensors file do):
    /// every decoding tile and edge gives the bits it gives on 64-byte aligned rows, with 1 and 2
    /// threads, and stays close to the scalar reference.
    #[test]
    fn matmul_nt_misaligned_w_bitwise_equals_aligned() {
        for isa in cpu::supported_isas() {
            for &k in &[16, 32, 48, 512, 2048, 17, 40, 520] {
                for &n in &[1, 4, 5, 12, 13, 25, 50] {
                    let w = random(n * k, 16);
                    // Room to place `w` at every offset from a 64-byte boundary.
                    let mut buf = vec![0.0f32; n * k + 2 * MAX_LANES];
                    let base = buf.as_ptr().align_offset(64);
                    assert!(base < MAX_LANES);
                    for m in 1..=8 {
                        let x = random(m * k, 15);
                        let mut want = vec![0.0; m * n];
                        matmul_nt_scalar(&x, &w, &mut want, m, k, n);
                        let scale = abs_nt(&x, &w, m, k, n);
                        let mut aligned = vec![f32::NAN; m * n];
                        for shift in 0..MAX_LANES {
                            let at = base + shift;
                            buf[at..at + n * k].copy_from_slice(&w);
                            let ws = &buf[at..at + n * k];
                            for threads in [1, 2] {
                                let mut got = vec![f32::NAN; m * n];
                                with_threads(threads, || {
                                    matmul_nt_with(isa, &x, ws, &mut got, m, k, n)
                                });
                                let what = format!(
                                    "{isa:?} m={m} k={k} n={n} shift={shift} threads={threads}"
                                );
                                if shift == 0 && threads == 1 {
                                    assert_close_to_ref(&got, &want, &scale, 1e-5, &what);
                                    aligned = got;
                                } else {
                                    assert_eq!(bits(&got), bits(&aligned), "{what}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    #[test]
    fn matmul_nn_matches_scalar() {
        let shapes = [
            (1, 1, 1),
            (1, 7, 33),
            (3, 65, 129),
            (5, 17, 64),
            (37, 513, 71),
            (64, 300, 64),
            (2, 0, 9),
            (0, 3, 3),
            (3, 3, 0),
        ];
        for isa in cpu::supported_isas() {
            for &(m, k, n) in &shapes {
                let a = random(m * k, 7);
                let b = random(k * n, 8);
                let mut want = vec![0.0; m * n];
                matmul_nn_scalar(&a, &b, &mut want, m, k, n);
                let aa: Vec<f32> = a.iter().map(|v| v.abs()).collect();
                let ba: Vec<f32> = b.iter().map(|v| v.abs()).collect();
                let mut scale = vec![0.0; m * n];
                matmul_nn_scalar(&aa, &ba, &mut scale, m, k, n);
                for threads in [1, 2] {
                    let mut got = vec![f32::NAN; m * n];
                    with_threads(threads, || matmul_nn_with(isa, &a, &b, &mut got, m, k, n));
                    let what = format!("nn {isa:?} m={m} k={k} n={n} threads={threads}");
                    assert_close_to_ref(&got, &want, &scale, 1e-5, &what);
                }
            }
        }
    }

    /// Nanoseconds this thread has run on a CPU (Linux), to time single-threaded runs on a
    /// machine shared with other work.
    fn thread_cpu_ns() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        s.split_whitespace().next()?.parse().ok()
    }

    /// Fastest of `reps` runs of `f` in a pool of `threads` (after one warm-up), in seconds of
    /// wall time and, with one thread, the mean CPU time of the thread.
    fn best_of(threads: usize, reps: usize, mut f: impl FnMut() + Send) -> (f64, Option<f64>) {
        with_threads(threads, || {
            f();
            let (mut wall, cpu0) = (f64::INFINITY, thread_cpu_ns());
            for _ in 0..reps {
                let t = std::time::Instant::now();
                f();
                wall = wall.min(t.elapsed().as_secs_f64());
            }
            // Mean rather than best: the kernel's count is only updated at scheduler ticks.
            let cpu = match (cpu0, thread_cpu_ns(), threads) {
                (Some(c0), Some(c1), 1) if c1 > c0 => Some((c1 - c0) as f64 * 1e-9 / reps as f64),
                _ => None,
            };
            (wall, cpu)
        })
    }

    /// `cargo test --release -p fasttx-core -- --ignored --nocapture bench`
    ///
    /// Prints a memory-read baseline first (a parallel dot product over the same 66 MB as the
    /// m=1, n=32128 product), since decoding shapes can at best match it. With one thread it also
    /// prints rates by CPU time, which other processes on the machine disturb less.
    #[test]
    #[ignore]
    fn bench_matmul() {
        let big = random(512 * 32128, 10);
        let isa = cpu::isa();
        for threads in [1, 2] {
            let (t, _) = best_of(threads, 10, || {
                let s: f32 = big
                    .par_chunks(1 << 16)
                    .map(|c| crate::kernels::vector::dot_with(isa, c, c))
                    .sum();
                std::hint::black_box(s);
            });
            let gbs = (big.len() * 4) as f64 / t / 1e9;
            println!(
                "baseline: read 66 MB threads={threads}: {:8.3} ms  {gbs:5.1} GB/s",
                t * 1e3
            );
        }
        drop(big);
        let shapes = [
            (1, 512, 32128),
            (4, 512, 32128),
            (1, 512, 2048),
            (1, 2048, 512),
            (256, 512, 2048),
            (512, 2048, 512),
            // Qwen2.5-0.5B's MLP (k = 4864 cut into slices).
            (128, 896, 4864),
            (128, 4864, 896),
        ];
        for isa in cpu::supported_isas() {
            for &(m, k, n) in &shapes {
                let x = random(m * k, 9);
                let w = random(n * k, 10);
                let mut y = vec![0.0; m * n];
                let flops = 2.0 * (m * n * k) as f64;
                // About 0.3 s of repetitions at 10 GFLOP/s, at least 3.
                let reps = ((3e9 / flops) as usize).clamp(3, 2000);
                for threads in [1, 2] {
                    let (t, cpu) = best_of(threads, reps, || {
                        matmul_nt_with(isa, &x, &w, &mut y, m, k, n)
                    });
                    let gbs = ((n * k + m * k + m * n) * 4) as f64 / t / 1e9;
                    let by_cpu = cpu.map_or(String::new(), |c| {
                        format!(
                            "  (CPU time {:.3} ms: {:.1} GFLOP/s)",
                            c * 1e3,
                            flops / c / 1e9
                        )
                    });
                    println!(
                        "matmul_nt {isa:?} m={m:3} k={k:4} n={n:5} threads={threads}: \
                         {:8.3} ms  {:6.1} GFLOP/s  {gbs:5.1} GB/s{by_cpu}",
                        t * 1e3,
                        flops / t / 1e9,
                    );
                }
            }
        }
        for isa in cpu::supported_isas() {
            let (m, k, n) = (512, 512, 64);
            let a = random(m * k, 11);
            let b = random(k * n, 12);
            let mut y = vec![0.0; m * n];
            for threads in [1, 2] {
                let (t, _) = best_of(threads, 50, || matmul_nn_with(isa, &a, &b, &mut y, m, k, n));
                println!(
                    "matmul_nn {isa:?} m={m} k={k} n={n} threads={threads}: {:8.3} ms  {:6.1} GFLOP/s",
                    t * 1e3,
                    2.0 * (m * n * k) as f64 / t / 1e9
                );
            }
        }
    }

    /// Weights of one decoding shape, `count` distinct `[n, k]` matrices back to back (together
    /// far larger than L3, so every pass reads them from memory), in a read-only file mapping (as
    /// `formats::safetensors` maps f32 weights: 4 KiB pages) and in a [`crate::memory`] weight
    /// buffer (huge pages).
    struct StreamedWeights {
        mapped: memmap2::Mmap,
        huge: Vec<f32>,
        count: usize,
        path: std::path::PathBuf,
    }

    impl StreamedWeights {
        fn new(k: usize, n: usize, total_bytes: usize) -> StreamedWeights {
            use std::io::Write;
            let one = random(n * k, 20);
            let count = total_bytes.div_ceil(n * k * 4).max(2);
            // Next to the build outputs by default: a disk file system, whose page cache
            // mappings have 4 KiB pages (a tmpfs /tmp could back them with huge pages).
            let dir = std::env::var_os("FASTTX_BENCH_DIR").map_or_else(
                || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
                std::path::PathBuf::from,
            );
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("bench-mapped-{}-{k}x{n}.bin", std::process::id()));
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            let bytes =
                unsafe { std::slice::from_raw_parts(one.as_ptr() as *const u8, one.len() * 4) };
            for _ in 0..count {
                file.write_all(bytes).unwrap();
            }
            drop(file);
            // SAFETY: a file this test wrote and nobody else touches.
            let mapped =
                unsafe { memmap2::Mmap::map(&std::fs::File::open(&path).unwrap()) }.unwrap();
            let mut huge = crate::memory::weight_buffer(count * n * k);
            for c in huge.chunks_mut(n * k) {
                c.copy_from_slice(&one);
            }
            StreamedWeights {
                mapped,
                huge,
                count,
                path,
            }
        }

        fn mapped(&self) -> &[f32] {
            // SAFETY: the mapping is page-aligned and holds `count·n·k` floats.
            unsafe {
                std::slice::from_raw_parts(self.mapped.as_ptr() as *const f32, self.huge.len())
            }
        }
    }

    impl Drop for StreamedWeights {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// This thread's CPU time in seconds (exact, unlike `/proc` counters updated at ticks).
    #[cfg(target_os = "linux")]
    fn thread_cpu_s() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a pointer to a live timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }

    #[cfg(not(target_os = "linux"))]
    fn thread_cpu_s() -> f64 {
        f64::NAN
    }

    /// `cargo test --release -p fasttx-core -- --ignored --nocapture bench_matmul_mapped`
    ///
    /// Decoding products (m = 1..8 rows against every weight once) over ~320 MB of distinct
    /// weights per pass, read from a 4 KiB-page file mapping and from huge pages, interleaved;
    /// prints GB/s of weights streamed (best of `FASTTX_BENCH_REPS`, default 5 passes).
    /// `FASTTX_BENCH_M` / `FASTTX_BENCH_THREADS` (comma lists) and `FASTTX_BENCH_KN` (k,n pairs:
    /// `512,2048,2048,512`) narrow the runs; `FASTTX_BENCH_ISA=avx2` runs the AVX2 tiles;
    /// `FASTTX_BENCH_DIR` is where the weight file goes (default: the workspace's `target`).
    #[test]
    #[ignore]
    fn bench_matmul_mapped() {
        let list = |var: &str, default: &[usize]| -> Vec<usize> {
            std::env::var(var).map_or(default.to_vec(), |s| {
                s.split(',').map(|v| v.trim().parse().unwrap()).collect()
            })
        };
        let ms = list("FASTTX_BENCH_M", &[1, 2, 4, 8]);
        let thread_counts = list("FASTTX_BENCH_THREADS", &[1, 2]);
        let reps = list("FASTTX_BENCH_REPS", &[5])[0];
        let shapes = list("FASTTX_BENCH_KN", &[]);
        let shapes: Vec<(usize, usize)> = if shapes.is_empty() {
            vec![
                (512, 512),
                (512, 1536),
                (512, 2048),
                (2048, 512),
                (512, 32128),
                (512, 58101),
            ]
        } else {
            shapes.chunks(2).map(|c| (c[0], c[1])).collect()
        };
        let isa = cpu::isa();
        let isa = match std::env::var("FASTTX_BENCH_ISA").as_deref() {
            Ok("avx2") => Isa::Avx2,
            _ => isa,
        };
        for (k, n) in shapes {
            let weights = StreamedWeights::new(k, n, 320 << 20);
            // Whether the kernel granted the huge pages (it may not, e.g. when memory is
            // fragmented): the comparison means little otherwise.
            if let Some(line) = std::fs::read_to_string("/proc/self/smaps_rollup")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("AnonHugePages"))
                        .map(String::from)
                })
            {
                println!(
                    "k={k} n={n}: {} MB of weights; {line}",
                    (weights.huge.len() * 4) >> 20
                );
            }

            let bytes = (weights.huge.len() * 4) as f64;
            for &m in &ms {
                let x = random(m * k, 21);
                let mut y = vec![0.0; m * n];
                for &threads in &thread_counts {
                    let (mut rates, mut cpu_rates) = ([0.0; 2], [0.0; 2]);
                    let mut pass = |w: &[f32]| {
                        for c in 0..weights.count {
                            let wc = &w[c * n * k..(c + 1) * n * k];
                            matmul_nt_with(isa, &x, wc, &mut y, m, k, n);
                        }
                    };
                    with_threads(threads, || {
                        // Interleaved, so both see the same disturbances from other processes.
                        pass(weights.mapped());
                        pass(&weights.huge);
                        let (mut best, mut best_cpu) = ([f64::INFINITY; 2], [f64::INFINITY; 2]);
                        for _ in 0..reps {
                            for (s, w) in [weights.mapped(), &weights.huge[..]]
                                .into_iter()
                                .enumerate()
                            {
                                let (t, c) = (std::time::Instant::now(), thread_cpu_s());
                                pass(w);
                                best[s] = best[s].min(t.elapsed().as_secs_f64());
                                best_cpu[s] = best_cpu[s].min(thread_cpu_s() - c);
                            }
                        }
                        rates = best.map(|t| bytes / t / 1e9);
                        cpu_rates = best_cpu.map(|t| bytes / t / 1e9);
                    });
                    // With one thread, also by the thread's CPU time (less disturbed by others).
                    let by_cpu = if threads == 1 {
                        format!(
                            "  | by CPU time: mapped {:5.1}  huge {:5.1} ({:.2}x)",
                            cpu_rates[0],
                            cpu_rates[1],
                            cpu_rates[0] / cpu_rates[1]
                        )
                    } else {
                        String::new()
                    };
                    println!(
                        "mapped vs huge {isa:?} k={k:4} n={n:5} m={m} threads={threads}: \
                         mapped {:5.1} GB/s  huge {:5.1} GB/s  ({:.2}x){by_cpu}",
                        rates[0],
                        rates[1],
                        rates[0] / rates[1]
                    );
                }
            }
        }
    }

    /// `cargo test --release -p fasttx-core -- --ignored --nocapture bench_matmul_misaligned`
    ///
    /// Decoding products (one thread) over ~320 MB of distinct weights in a 4 KiB-page file
    /// mapping, read at the mapping's start (64-byte aligned rows) and at an offset of a few
    /// floats: a safetensors file aligns its data to 8 bytes at most, so mapped f32 rows usually
    /// start inside a cache line (all alike when `k` is a multiple of 16). At each offset the
    /// decoding tiles run twice: with plain unaligned loads (`NtKernel::tile`, what every block
    /// used before) and as products run them (`NtKernel::stream_tile`). Interleaved; prints GB/s
    /// of weights streamed by the thread's CPU time (less disturbed by other processes than wall
    /// time; median of `FASTTX_BENCH_REPS` passes, default 7) and ratios to aligned.
    /// `FASTTX_BENCH_OFFSETS` (bytes, multiples of 4 below 64; default `20,40`),
    /// `FASTTX_BENCH_M`, `FASTTX_BENCH_KN`, `FASTTX_BENCH_ISA`, `FASTTX_BENCH_DIR` as in
    /// `bench_matmul_mapped`; `x` is 64-byte aligned, or at `w`'s offset with
    /// `FASTTX_BENCH_XSAME=1`.
    #[test]
    #[ignore]
    fn bench_matmul_misaligned() {
        use std::io::Write;
        let list = |var: &str, default: &[usize]| -> Vec<usize> {
            std::env::var(var).map_or(default.to_vec(), |s| {
                s.split(',').map(|v| v.trim().parse().unwrap()).collect()
            })
        };
        let ms = list("FASTTX_BENCH_M", &[1, 4, 8]);
        let reps = list("FASTTX_BENCH_REPS", &[7])[0];
        let offsets = list("FASTTX_BENCH_OFFSETS", &[20, 40]);
        let shapes = list(
            "FASTTX_BENCH_KN",
            &[512, 512, 512, 2048, 512, 58101, 2048, 512],
        );
        let isa = match std::env::var("FASTTX_BENCH_ISA").as_deref() {
            Ok("avx2") => Isa::Avx2,
            _ => cpu::isa(),
        };
        let dir = std::env::var_os("FASTTX_BENCH_DIR").map_or_else(
            || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
            std::path::PathBuf::from,
        );
        std::fs::create_dir_all(&dir).unwrap();
        let stream = NtKernel::for_isa(isa);
        let plain = NtKernel {
            stream_tile: stream.tile,
            x_along_w: false,
            ..NtKernel::for_isa(isa)
        };
        // (offset in bytes, kernel): aligned first, then each offset with either kind of tile.
        let mut runs = vec![(0, &stream)];
        for &off in &offsets {
            assert!(off.is_multiple_of(4) && off < 64, "offset {off}");
            runs.push((off, &plain));
            runs.push((off, &stream));
        }
        for kn in shapes.chunks(2) {
            let (k, n) = (kn[0], kn[1]);
            let one = random(n * k, 20);
            let count = (320usize << 20).div_ceil(n * k * 4).max(2);
            let path = dir.join(format!(
                "bench-misaligned-{}-{k}x{n}.bin",
                std::process::id()
            ));
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            // SAFETY: the floats' bytes.
            let bytes =
                unsafe { std::slice::from_raw_parts(one.as_ptr() as *const u8, one.len() * 4) };
            for _ in 0..count {
                file.write_all(bytes).unwrap();
            }
            file.write_all(&[0u8; 64]).unwrap(); // room for the offset
            drop(file);
            // SAFETY: a file this test wrote and nobody else touches.
            let mapped =
                unsafe { memmap2::Mmap::map(&std::fs::File::open(&path).unwrap()) }.unwrap();
            let _ = std::fs::remove_file(&path);
            let bytes = (count * n * k * 4) as f64;
            for &m in &ms {
                assert!(m <= 8, "decoding shapes only");
                let x = random(m * k, 21);
                // x 64-byte aligned, or (FASTTX_BENCH_XSAME=1) at w's offset.
                let x_same = std::env::var("FASTTX_BENCH_XSAME").is_ok();
                let mut xbuf = vec![0.0f32; m * k + 32];
                let xbase = xbuf.as_ptr().align_offset(64);
                let mut y = vec![0.0; m * n];
                let mut pass = |off: usize, kernel: &NtKernel| {
                    let xo = xbase + if x_same { off / 4 } else { 0 };
                    xbuf[xo..xo + m * k].copy_from_slice(&x);
                    let x = &xbuf[xo..xo + m * k];
                    // SAFETY: the mapping is page-aligned and holds `count·n·k` floats and 64
                    // more bytes; `off` is a multiple of 4 below 64.
                    let w = unsafe { mapped.as_ptr().add(off) } as *const f32;
                    for c in 0..count {
                        // SAFETY: matrix `c` lies in the mapping, x holds m·k and y m·n floats;
                        // the CPU supports `isa`. One block of at most 8 rows, as a product on
                        // one thread computes it.
                        unsafe {
                            kernel.block(
                                x.as_ptr(),
                                w.add(c * n * k),
                                y.as_mut_ptr(),
                                m,
                                n,
                                k,
                                k,
                                n,
                            )
                        };
                    }
                };
                let mut times = vec![Vec::new(); runs.len()];
                with_threads(1, || {
                    // Interleaved, so every run sees the same disturbances.
                    for &(off, kernel) in &runs {
                        pass(off, kernel);
                    }
                    for _ in 0..reps {
                        for (s, &(off, kernel)) in runs.iter().enumerate() {
                            let c = thread_cpu_s();
                            pass(off, kernel);
                            times[s].push(thread_cpu_s() - c);
                        }
                    }
                });
                let rates: Vec<f64> = times
                    .iter_mut()
                    .map(|t| {
                        t.sort_by(f64::total_cmp);
                        bytes / t[t.len() / 2] / 1e9
                    })
                    .collect();
                let line: Vec<String> = runs
                    .iter()
                    .zip(&rates)
                    .skip(1)
                    .collect::<Vec<_>>()
                    .chunks(2)
                    .map(|pair| {
                        let (plain, shifted) = (pair[0].1, pair[1].1);
                        format!(
                            "+{}B plain {plain:5.1} ({:.2}x) shifted {shifted:5.1} ({:.2}x)",
                            pair[0].0 .0,
                            plain / rates[0],
                            shifted / rates[0]
                        )
                    })
                    .collect();
                println!(
                    "misaligned {isa:?} k={k:4} n={n:5} m={m}: aligned {:5.1} GB/s | {}",
                    rates[0],
                    line.join(" | ")
                );
            }
        }
    }
}
