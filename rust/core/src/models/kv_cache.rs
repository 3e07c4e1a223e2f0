//! The decoder's self-attention key/value cache, shared by every architecture.
//!
//! Per layer, keys and values are stored `[rows, kv_heads, capacity, head_dim]`, so the keys of one
//! (row, head) are contiguous and attention reads them without copies. All rows advance together
//! (one token per row per generation step); a per-row key mask marks padding (left-padded prompts of
//! decoder-only models) so it is never attended to.
//!
//! Its size follows the request (rows times positions), so growing and reordering allocate
//! fallibly: a request beyond the machine's memory is an [`Error::OutOfMemory`], not an abort.

use super::attention::KeyValues;
use crate::error::{try_zeroed, Error, Result};

pub struct KvCache {
    rows: usize,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    /// Positions committed by finished steps.
    len: usize,
    /// Positions being written by the step in progress (`len..len + pending`).
    pending: usize,
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// `[rows, capacity]`: 1 where the key at that position may be attended to.
    mask: Vec<u8>,
}

impl KvCache {
    pub fn new(layers: usize, rows: usize, kv_heads: usize, head_dim: usize) -> Self {
        KvCache {
            rows,
            kv_heads,
            head_dim,
            capacity: 0,
            len: 0,
            pending: 0,
            layers: (0..layers).map(|_| (Vec::new(), Vec::new())).collect(),
            mask: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes one row holds per position: keys and values of every layer, and the mask byte.
    pub fn bytes_per_position(&self) -> usize {
        self.layers.len() * 2 * self.kv_heads * self.head_dim * std::mem::size_of::<f32>() + 1
    }

    /// Makes room for a step of `n` new positions, or fails without changing the cache. Sessions
    /// call it before a step's forward pass, so that [`KvCache::begin_step`] never has to grow.
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        let needed = self
            .len
            .checked_add(n)
            .ok_or_else(|| Error::InvalidInput(format!("a step of {n} tokens is too long")))?;
        if needed > self.capacity {
            // Doubling keeps growth amortised; the memory stays within twice what was produced.
            self.grow(needed.max(self.capacity.saturating_mul(2)).max(16))?;
        }
        Ok(())
    }

    /// Makes room for `positions` positions per row in all, exactly: a generation whose length is
    /// known reserves it once instead of growing by doubling (a copy of the cache each time, and
    /// up to twice the room it needs). Unwritten room costs no resident memory ([`try_zeroed`]).
    pub fn reserve_total(&mut self, positions: usize) -> Result<()> {
        if positions > self.capacity {
            self.grow(positions)?;
        }
        Ok(())
    }

    /// Forgets the positions from `len` on (committed by the chunks of a step that was then
    /// interrupted: the step never happened).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.pending = 0;
    }

    /// Per row: how many of the committed positions from `from` on may be attended to (real
    /// tokens, not padding), i.e. what a row's position count loses when they are truncated.
    pub fn attended_since(&self, from: usize) -> Vec<u32> {
        let from = from.min(self.len);
        (0..self.rows)
            .map(|r| {
                let row = &self.mask[r * self.capacity..][from..self.len];
                row.iter().filter(|&&m| m != 0).count() as u32
            })
            .collect()
    }

    /// Opens a step of `n` new positions with their mask (`[rows, n]`, `None` = all real tokens).
    ///
    /// # Panics
    /// If the cache cannot grow to hold them (sessions [`KvCache::reserve`] first, which fails
    /// as an error instead).
    pub fn begin_step(&mut self, n: usize, mask: Option<&[u8]>) {
        if let Err(e) = self.reserve(n) {
            panic!("{e}");
        }
        for r in 0..self.rows {
            let dst = &mut self.mask[r * self.capacity + self.len..][..n];
            match mask {
                Some(m) => dst.copy_from_slice(&m[r * n..(r + 1) * n]),
                None => dst.fill(1),
            }
        }
        self.pending = n;
    }

    /// Stores layer `layer`'s keys and values for the open step; `k`, `v` are `[rows, n, kv_heads*head_dim]`.
    pub fn write(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let (n, hd, cap, len) = (self.pending, self.head_dim, self.capacity, self.len);
        let width = self.kv_heads * hd;
        let (kc, vc) = &mut self.layers[layer];
        for r in 0..self.rows {
            for i in 0..n {
                let src = (r * n + i) * width;
                for h in 0..self.kv_heads {
                    let dst = ((r * self.kv_heads + h) * cap + len + i) * hd;
                    kc[dst..dst + hd].copy_from_slice(&k[src + h * hd..src + (h + 1) * hd]);
                    vc[dst..dst + hd].copy_from_slice(&v[src + h * hd..src + (h + 1) * hd]);
                }
            }
        }
    }

    /// The keys and values of `layer` visible to the open step (committed plus pending).
    pub fn view(&self, layer: usize) -> KeyValues<'_> {
        let (kc, vc) = &self.layers[layer];
        KeyValues {
            k: kc,
            v: vc,
            row_stride: self.kv_heads * self.capacity * self.head_dim,
            head_stride: self.capacity * self.head_dim,
            pos_stride: self.head_dim,
            len: self.len + self.pending,
            mask: Some((&self.mask, self.capacity)),
            row_map: None,
        }
    }

    /// Closes the open step: its positions become part of the past.
    pub fn commit(&mut self) {
        self.len += self.pending;
        self.pending = 0;
    }

    /// Row `i` afterwards holds what old row `source[i]` held; on failure the cache is unchanged.
    pub fn reorder(&mut self, source: &[usize]) -> Result<()> {
        let identity = source.len() == self.rows && source.iter().enumerate().all(|(i, &s)| i == s);
        if identity {
            return Ok(());
        }
        let (cap, hd, filled) = (self.capacity, self.head_dim, self.len * self.head_dim);
        let block = self.kv_heads * cap * hd;
        let values = source.len().saturating_mul(block);
        // Only the positions written so far are copied: the room after them stays untouched
        // (no resident memory) in the new buffers too.
        let gather = |old: &[f32]| -> Result<Vec<f32>> {
            let mut new = try_zeroed(values, "the reordered KV cache")?;
            for (dst, &s) in new.chunks_exact_mut(block.max(1)).zip(source) {
                for head in 0..self.kv_heads {
                    let at = head * cap * hd;
                    dst[at..at + filled].copy_from_slice(&old[s * block + at..][..filled]);
                }
            }
            Ok(new)
        };
        // Everything new is built before anything is replaced.
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((gather(k)?, gather(v)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut mask = try_zeroed(source.len().saturating_mul(cap), "the KV cache mask")?;
        for (dst, &s) in mask.chunks_exact_mut(cap.max(1)).zip(source) {
            dst.copy_from_slice(&self.mask[s * cap..(s + 1) * cap]);
        }
        self.layers = layers;
        self.mask = mask;
        self.rows = source.len();
        Ok(())
    }

    /// Appends `other`'s rows after this cache's rows; on failure (memory, or caches of different
    /// shapes) both are unchanged. `other` is left as it was: its session empties it.
    ///
    /// All rows share one length, so each side is right-aligned to the longer one, the shorter
    /// side's rows getting leading positions masked out (never attended to: attention skips a
    /// row's leading padding, so the row's results keep their bits). Before that, each side drops
    /// the leading positions that every one of its rows has masked: rows that left a running
    /// batch leave such a prefix behind, which would otherwise make the length grow without end in
    /// a batch that never empties.
    pub fn join(&mut self, other: &KvCache) -> Result<()> {
        let shape = |c: &KvCache| (c.layers.len(), c.kv_heads, c.head_dim);
        if shape(self) != shape(other) {
            return Err(Error::InvalidInput(format!(
                "join: the caches differ in shape ((layers, kv heads, head dim) {:?} and {:?})",
                shape(self),
                shape(other)
            )));
        }
        debug_assert!(
            self.pending == 0 && other.pending == 0,
            "join inside a step"
        );
        let (skip_self, skip_other) = (self.masked_prefix(), other.masked_prefix());
        let (kept_self, kept_other) = (self.len - skip_self, other.len - skip_other);
        let len = kept_self.max(kept_other);
        // The room either side reserved beyond its positions is kept (it costs no memory until
        // written: `try_zeroed`), so a generation that reserved its length does not grow.
        let room = (self.capacity - self.len).max(other.capacity - other.len);
        let capacity = len.checked_add(room).ok_or_else(|| {
            Error::InvalidInput("join: the sessions' reserved room is too large".into())
        })?;
        let rows = self
            .rows
            .checked_add(other.rows)
            .ok_or_else(|| Error::InvalidInput("join: too many rows".into()))?;
        let (hd, heads) = (self.head_dim, self.kv_heads);
        // Each side as (cache, first kept position, positions kept, first row in the result).
        let sides = [
            (&*self, skip_self, kept_self, 0),
            (other, skip_other, kept_other, self.rows),
        ];
        let values = rows
            .checked_mul(heads)
            .and_then(|v| v.checked_mul(capacity))
            .and_then(|v| v.checked_mul(hd))
            .unwrap_or(usize::MAX);
        // Layer `layer`'s keys (or values) of both sides, in one new buffer.
        let gather = |layer: usize, values_not_keys: bool| {
            let mut new = try_zeroed(values, "the joined KV cache")?;
            for &(side, skip, kept, first_row) in &sides {
                let (k, v) = &side.layers[layer];
                let old = if values_not_keys { v } else { k };
                for hr in 0..side.rows * heads {
                    let src = &old[(hr * side.capacity + skip) * hd..][..kept * hd];
                    let dst = ((first_row * heads + hr) * capacity + len - kept) * hd;
                    new[dst..dst + kept * hd].copy_from_slice(src);
                }
            }
            Ok::<_, Error>(new)
        };
        // Everything new is built before anything is replaced.
        let layers = (0..self.layers.len())
            .map(|l| Ok((gather(l, false)?, gather(l, true)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut mask = try_zeroed(rows.saturating_mul(capacity), "the KV cache mask")?;
        for &(side, skip, kept, first_row) in &sides {
            for r in 0..side.rows {
                let src = &side.mask[r * side.capacity + skip..][..kept];
                mask[(first_row + r) * capacity + len - kept..][..kept].copy_from_slice(src);
            }
        }
        self.layers = layers;
        self.mask = mask;
        self.rows = rows;
        self.capacity = capacity;
        self.len = len;
        Ok(())
    }

    /// How many leading positions every row has masked: none of them will ever be attended to.
    /// A row with no real position yet keeps them all (its queries so far attended to padding
    /// alone, which dropping would change).
    fn masked_prefix(&self) -> usize {
        (0..self.rows)
            .map(|r| {
                let row = &self.mask[r * self.capacity..][..self.len];
                row.iter().position(|&m| m != 0).unwrap_or(0)
            })
            .min()
            .unwrap_or(self.len)
    }

    /// Reallocates every layer for `capacity` positions; on failure the cache is unchanged.
    fn grow(&mut self, capacity: usize) -> Result<()> {
        let (old_cap, hd, filled) = (self.capacity, self.head_dim, self.len * self.head_dim);
        let heads_rows = self.rows * self.kv_heads;
        let values = heads_rows
            .checked_mul(capacity)
            .and_then(|v| v.checked_mul(hd))
            .unwrap_or(usize::MAX);
        let copy = |old: &[f32]| -> Result<Vec<f32>> {
            let mut new = try_zeroed(values, "the KV cache")?;
            for hr in 0..heads_rows {
                // The positions written so far; the room after them stays untouched.
                new[hr * capacity * hd..][..filled]
                    .copy_from_slice(&old[hr * old_cap * hd..][..filled]);
            }
            Ok(new)
        };
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((copy(k)?, copy(v)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut mask = try_zeroed(self.rows.saturating_mul(capacity), "the KV cache mask")?;
        for r in 0..self.rows {
            mask[r * capacity..][..old_cap].copy_from_slice(&self.mask[r * old_cap..][..old_cap]);
        }
        self.layers = layers;
        self.mask = mask;
        self.capacity = capacity;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Value stored for (row, step, head, dim): unique, so any misplaced copy is detected.
    fn value(row: usize, pos: usize, head: usize, d: usize) -> f32 {
        (row * 1000 + pos * 100 + head * 10 + d) as f32
    }

    fn step(cache: &mut KvCache, n: usize, rows: &[usize]) {
        let (heads, hd) = (cache.kv_heads, cache.head_dim);
        let start = cache.len();
        let mut k = Vec::new();
        for &r in rows {
            for i in 0..n {
                for h in 0..heads {
                    for d in 0..hd {
                        k.push(value(r, start + i, h, d));
                    }
                }
            }
        }
        cache.begin_step(n, None);
        cache.write(0, &k, &k);
        cache.commit();
    }

    fn check(cache: &KvCache, rows: &[usize]) {
        let view = cache.view(0);
        for (r, &src) in rows.iter().enumerate() {
            for h in 0..cache.kv_heads {
                for pos in 0..cache.len() {
                    let at = r * view.row_stride + h * view.head_stride + pos * view.pos_stride;
                    for d in 0..cache.head_dim {
                        assert_eq!(
                            view.k[at + d],
                            value(src, pos, h, d),
                            "row {r} head {h} pos {pos}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn grows_and_keeps_contents() {
        let mut cache = KvCache::new(1, 2, 3, 4);
        step(&mut cache, 5, &[0, 1]);
        for _ in 0..20 {
            step(&mut cache, 1, &[0, 1]);
        }
        assert_eq!(cache.len(), 25);
        check(&cache, &[0, 1]);
    }

    #[test]
    fn a_reserved_generation_never_grows() {
        let mut cache = KvCache::new(1, 2, 3, 4);
        cache.reserve_total(30).unwrap();
        step(&mut cache, 5, &[0, 1]);
        for _ in 0..25 {
            step(&mut cache, 1, &[0, 1]);
        }
        assert_eq!((cache.len(), cache.capacity), (30, 30));
        check(&cache, &[0, 1]);
        // Reserving less than it holds changes nothing.
        cache.reserve_total(10).unwrap();
        assert_eq!(cache.capacity, 30);
        check(&cache, &[0, 1]);
    }

    #[test]
    fn truncated_positions_are_forgotten_and_rewritten() {
        let mut cache = KvCache::new(1, 2, 3, 4);
        step(&mut cache, 6, &[0, 1]);
        // The chunks of an interrupted step: committed, then taken back.
        step(&mut cache, 3, &[5, 5]);
        cache.truncate(6);
        assert_eq!(cache.len(), 6);
        step(&mut cache, 2, &[0, 1]);
        assert_eq!(cache.len(), 8);
        check(&cache, &[0, 1]);
    }

    #[test]
    fn attended_since_counts_real_positions_per_row() {
        let mut cache = KvCache::new(1, 2, 1, 2);
        // Row 0 left-padded by two positions, row 1 not.
        cache.begin_step(4, Some(&[0, 0, 1, 1, 1, 1, 1, 1]));
        cache.write(0, &[0.0; 16], &[0.0; 16]);
        cache.commit();
        step(&mut cache, 3, &[0, 1]);
        assert_eq!(cache.attended_since(0), vec![5, 7]);
        assert_eq!(cache.attended_since(1), vec![5, 6]);
        assert_eq!(cache.attended_since(4), vec![3, 3]);
        assert_eq!(cache.attended_since(7), vec![0, 0]);
        assert_eq!(cache.attended_since(9), vec![0, 0]);
    }

    #[test]
    fn reorder_repeats_and_drops_rows() {
        let mut cache = KvCache::new(1, 3, 2, 4);
        step(&mut cache, 3, &[0, 1, 2]);
        cache.reorder(&[2, 2, 0, 1]).unwrap();
        assert_eq!(cache.rows(), 4);
        check(&cache, &[2, 2, 0, 1]);
        cache.reorder(&[3]).unwrap();
        check(&cache, &[1]);
    }

    #[test]
    fn growth_beyond_memory_is_an_error_and_leaves_the_cache_usable() {
        let mut cache = KvCache::new(2, 2, 3, 4);
        step(&mut cache, 5, &[0, 1]);
        let err = cache.reserve(usize::MAX / 8).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
        // Beyond any machine, but within the address space: the allocator itself refuses.
        assert!(matches!(cache.reserve(1 << 40), Err(Error::OutOfMemory(_))));
        assert!(matches!(
            cache.reserve(usize::MAX),
            Err(Error::InvalidInput(_))
        ));
        step(&mut cache, 1, &[0, 1]);
        assert_eq!(cache.len(), 6);
        check(&cache, &[0, 1]);
    }

    /// Checks that row `r` holds source row `src`'s positions `from..` at `shift + from..` (keys
    /// and values).
    fn check_shifted(cache: &KvCache, r: usize, src: usize, from: usize, shift: usize) {
        let view = cache.view(0);
        for h in 0..cache.kv_heads {
            for pos in shift + from..cache.len() {
                let at = r * view.row_stride + h * view.head_stride + pos * view.pos_stride;
                for d in 0..cache.head_dim {
                    let want = value(src, pos - shift, h, d);
                    assert_eq!(view.k[at + d], want, "row {r} head {h} pos {pos}");
                    assert_eq!(view.v[at + d], want, "row {r} head {h} pos {pos}");
                }
            }
        }
    }

    fn row_mask(cache: &KvCache, r: usize) -> &[u8] {
        &cache.mask[r * cache.capacity..][..cache.len()]
    }

    #[test]
    fn join_right_aligns_the_shorter_side_behind_masked_positions() {
        let mut a = KvCache::new(1, 2, 3, 4);
        step(&mut a, 5, &[0, 1]);
        let mut b = KvCache::new(1, 1, 3, 4);
        step(&mut b, 8, &[2]);
        a.join(&b).unwrap();
        assert_eq!((a.rows(), a.len()), (3, 8));
        check_shifted(&a, 0, 0, 0, 3);
        check_shifted(&a, 1, 1, 0, 3);
        check_shifted(&a, 2, 2, 0, 0);
        assert_eq!(row_mask(&a, 0), [0, 0, 0, 1, 1, 1, 1, 1]);
        assert_eq!(row_mask(&a, 2), [1; 8]);
        // The joined cache steps on like any other: all rows advance together.
        step(&mut a, 2, &[0, 1, 2]);
        assert_eq!(a.len(), 10);
        check_shifted(&a, 2, 2, 0, 0);
        assert_eq!(row_mask(&a, 1), [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]);

        // The longer side joining the shorter: the running rows move right instead.
        let mut short = KvCache::new(1, 1, 3, 4);
        step(&mut short, 3, &[4]);
        short.join(&b).unwrap();
        assert_eq!((short.rows(), short.len()), (2, 8));
        check_shifted(&short, 0, 4, 0, 5);
        check_shifted(&short, 1, 2, 0, 0);
        assert_eq!(row_mask(&short, 0), [0, 0, 0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn join_drops_the_positions_every_row_has_masked() {
        // Row 0 padded by 3 positions, row 1 by 2: the first 2 are nobody's.
        let mut a = KvCache::new(1, 2, 1, 2);
        step(&mut a, 6, &[0, 1]);
        a.mask[..2].fill(0);
        a.mask[2] = 0;
        a.mask[a.capacity..][..2].fill(0);
        let mut b = KvCache::new(1, 1, 1, 2);
        step(&mut b, 3, &[2]);
        a.join(&b).unwrap();
        assert_eq!((a.rows(), a.len()), (3, 4));
        // Old positions 2..6 are now 0..4.
        let view = a.view(0);
        for (r, src) in [(0, 0), (1, 1)] {
            for pos in 0..4 {
                let at = r * view.row_stride + pos * view.pos_stride;
                assert_eq!(view.k[at], value(src, pos + 2, 0, 0), "row {r} pos {pos}");
            }
        }
        check_shifted(&a, 2, 2, 0, 1);
        assert_eq!(row_mask(&a, 0), [0, 1, 1, 1]);
        assert_eq!(row_mask(&a, 1), [1, 1, 1, 1]);
        assert_eq!(row_mask(&a, 2), [0, 1, 1, 1]);

        // Rows that leave can leave a common masked prefix: the length then shrinks on the next
        // join instead of growing for as long as the batch runs.
        a.reorder(&[0, 2]).unwrap();
        let empty = KvCache::new(1, 0, 1, 2);
        a.join(&empty).unwrap();
        assert_eq!((a.rows(), a.len()), (2, 3));
        assert_eq!(row_mask(&a, 0), [1, 1, 1]);
        assert_eq!(row_mask(&a, 1), [1, 1, 1]);
        check_shifted(&a, 1, 2, 0, 0);

        // A row with no real position yet keeps every position (its queries attended to padding
        // alone); a session with no rows keeps none.
        let mut padding = KvCache::new(1, 1, 1, 2);
        padding.begin_step(3, Some(&[0, 0, 0]));
        padding.write(0, &[0.0; 6], &[0.0; 6]);
        padding.commit();
        let mut none = KvCache::new(1, 0, 1, 2);
        none.join(&padding).unwrap();
        assert_eq!((none.rows(), none.len()), (1, 3));
        a.reorder(&[]).unwrap();
        a.join(&b).unwrap();
        assert_eq!((a.rows(), a.len()), (1, 3));
        check_shifted(&a, 0, 2, 0, 0);
    }

    #[test]
    fn join_keeps_the_room_either_side_reserved() {
        let mut a = KvCache::new(1, 1, 1, 2);
        a.reserve_total(40).unwrap();
        step(&mut a, 10, &[0]);
        let mut b = KvCache::new(1, 1, 1, 2);
        step(&mut b, 4, &[1]);
        a.join(&b).unwrap();
        assert_eq!((a.len(), a.capacity), (10, 40));
    }

    #[test]
    fn join_of_caches_of_different_shapes_is_refused() {
        let mut a = KvCache::new(1, 1, 2, 4);
        let b = KvCache::new(1, 1, 1, 4);
        let err = a.join(&b).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        let c = KvCache::new(2, 1, 2, 4);
        assert!(matches!(a.join(&c), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn join_beyond_memory_is_an_error_and_leaves_the_cache_unchanged() {
        // As in the reorder test below: room claimed without allocating, which the join keeps.
        let mut a = KvCache::new(1, 1, 1 << 10, 1 << 10);
        a.capacity = 1 << 20;
        a.mask = vec![0; 1 << 20];
        let b = KvCache::new(1, 1, 1 << 10, 1 << 10);
        let err = a.join(&b).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
        assert!(err.to_string().contains("KV cache"), "{err}");
        assert_eq!((a.rows(), a.len(), a.capacity), (1, 0, 1 << 20));
    }

    #[test]
    fn reorder_beyond_memory_is_an_error_and_leaves_the_cache_unchanged() {
        // A cache whose rows would hold 2^40 values each (its capacity set without allocating:
        // the reorder fails before reading any of it); two such rows exceed any machine.
        let mut cache = KvCache::new(1, 1, 1 << 10, 1 << 10);
        cache.capacity = 1 << 20;
        let err = cache.reorder(&[0, 0]).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
        assert!(err.to_string().contains("KV cache"), "{err}");
        assert_eq!(cache.rows(), 1);
    }
}
