//! Buffers for weights converted at load (f16/bf16 upcasts, dequantized GGUF, stacked
//! projections). Decoding streams every weight once per token, so on Linux large buffers ask for
//! transparent huge pages: with 4 KiB pages a 500 MB model costs ~130k TLB misses per token.
//! (Kernels set to THP `madvise` mode, the common default, only grant them on request.)

/// Below this, huge pages cannot help (a buffer this small spans few 2 MiB pages).
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// A zero-filled `Vec<f32>` of `len` values for weights, backed by huge pages where the OS allows.
pub fn weight_buffer(len: usize) -> Vec<f32> {
    // `vec![0.0; n]` allocates zeroed memory (fresh, untouched pages for large sizes), so the
    // advice below takes effect when the caller first writes.
    let v = vec![0.0f32; len];
    advise_huge_pages(v.as_ptr() as usize, len * std::mem::size_of::<f32>());
    v
}

/// A zero-filled `Vec<u8>` of `len` bytes, as [`weight_buffer`].
pub fn byte_buffer(len: usize) -> Vec<u8> {
    let v = vec![0u8; len];
    advise_huge_pages(v.as_ptr() as usize, len);
    v
}

/// Drops the resident pages of a read-only file mapping's range from this process (the whole
/// pages inside it): for weights whose converted copy replaced them at load (stacked projections,
/// int8), so they stop counting in the process's memory. The mapping stays valid: a later read
/// would fault the pages in again from the file.
pub fn release_mapped(bytes: &[u8]) {
    release_pages(bytes.as_ptr() as usize, bytes.len());
}

#[cfg(target_os = "linux")]
fn release_pages(addr: usize, bytes: usize) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    // For a read-only file mapping MADV_DONTNEED only drops the cached pages, which are re-read
    // from the file if touched again: no content changes.
    advise_whole_pages(addr, bytes, page, libc::MADV_DONTNEED);
}

#[cfg(not(target_os = "linux"))]
fn release_pages(_addr: usize, _bytes: usize) {}

#[cfg(target_os = "linux")]
fn advise_huge_pages(addr: usize, bytes: usize) {
    if bytes >= HUGE_PAGE_MIN_BYTES {
        // MADV_HUGEPAGE changes only how pages are backed, never their contents.
        advise_whole_pages(addr, bytes, 2 << 20, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_addr: usize, _bytes: usize) {}

/// `madvise(advice)` over the whole `page`-sized pages inside `addr..addr + bytes`. Failure (an
/// advice the kernel does not support) is harmless, so the result is ignored.
#[cfg(target_os = "linux")]
fn advise_whole_pages(addr: usize, bytes: usize, page: usize, advice: libc::c_int) {
    let start = addr.next_multiple_of(page);
    let end = (addr + bytes) / page * page;
    if end > start {
        // SAFETY: the range lies inside a live allocation or mapping owned by the caller (the
        // callers' slices), and both advices used here leave the contents as they are.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, advice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_and_sized() {
        for len in [0, 1, 7, (HUGE_PAGE_MIN_BYTES / 4) + 3] {
            let v = weight_buffer(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
            let b = byte_buffer(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
        }
    }
}
