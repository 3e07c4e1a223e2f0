//! Stopping a long native call from outside. A prefill of thousands of tokens is one call that
//! runs for seconds; the caller (the Python bindings, on Ctrl-C) raises an [`Interrupt`] it handed
//! to the call, and the forward passes check it between layers and sublayers, returning
//! [`Error::Interrupted`]. A check is one relaxed atomic load, so it costs nothing beside a layer.
//! Inside a sublayer, attention skips its remaining (query, head) pairs once interrupted, and the
//! projections of long inputs run in chunks of rows with a check between them ([`chunk_rows`]),
//! so no stretch of work between two checks is longer than a few tens of milliseconds.
//!
//! An interrupted step leaves its session as it was before the step: the key/value cache commits a
//! step only when every layer has run, and the row positions are advanced only on success.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// A request to stop, raised by one thread and seen by the computation on others.
#[derive(Debug, Default)]
pub struct Interrupt(AtomicBool);

impl Interrupt {
    /// Asks the computation watching this to stop at its next check.
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `Err(Error::Interrupted)` once `interrupt` (if any) has been requested.
pub(crate) fn check(interrupt: Option<&Interrupt>) -> Result<()> {
    match interrupt {
        Some(i) if i.is_requested() => Err(Error::Interrupted),
        _ => Ok(()),
    }
}

/// Multiply-adds a long product does between two checks: 20–50 ms at the 25–50 GMAC/s of f32 on
/// two cores, well inside the 0.5 s Ctrl-C may take, and enough work per chunk that the pause at
/// its end (the threads meeting before the next chunk) is lost in the noise.
const CHECK_WORK: usize = 1 << 30;

/// Rows per chunk of a product costing `row_work` multiply-adds per row: about [`CHECK_WORK`] of
/// work, in whole multiples of `row_block` (the rows the kernel takes per pass over the weights,
/// so that chunking does not make it read them more often), at least one `row_block`.
pub(crate) fn chunk_rows(row_work: usize, row_block: usize) -> usize {
    let row_block = row_block.max(1);
    (CHECK_WORK / row_work.max(1) / row_block).max(1) * row_block
}

/// `0..m` cut into ranges of `chunk` rows (the last one shorter).
pub(crate) fn row_ranges(m: usize, chunk: usize) -> impl Iterator<Item = Range<usize>> {
    let chunk = chunk.max(1);
    (0..m).step_by(chunk).map(move |r| r..(r + chunk).min(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_about_the_check_work_in_whole_row_blocks() {
        // A small product: one chunk of everything.
        assert!(chunk_rows(1000, 84) >= 100_000);
        // SmolLM2's head (49152 x 576): ~37 rows of work, rounded down to whole blocks of 84.
        assert_eq!(chunk_rows(49152 * 576, 84), 84);
        // A 7B feed-forward (2 x 11008 x 4096): 11 rows, 12 per kernel block.
        assert_eq!(chunk_rows(2 * 11008 * 4096, 12), 12);
        assert_eq!(chunk_rows(1 << 20, 12), 1020);
        let ranges: Vec<_> = row_ranges(10, 4).collect();
        assert_eq!(ranges, [0..4, 4..8, 8..10]);
        assert_eq!(row_ranges(0, 4).count(), 0);
    }

    #[test]
    fn check_fails_only_after_a_request() {
        let i = Interrupt::default();
        assert!(check(None).is_ok());
        assert!(check(Some(&i)).is_ok());
        i.request();
        assert!(matches!(check(Some(&i)), Err(Error::Interrupted)));
    }
}
