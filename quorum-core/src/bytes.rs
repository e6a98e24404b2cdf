//! A child's read data as the vote sees it: one contiguous run, or the ordered segments of a
//! scattered buffer. quorum-tgt's buffers are all contiguous; an SPDK parent's data is an
//! iovec list split anywhere, and its first child reads straight into it. Comparing,
//! hashing and copying walk the segments in place, so no host flattens data to vote, and
//! two contiguous runs (the common case) compare with one `memcmp`.
//!
//! Segments are [`IoSlice`]s because std guarantees their layout is `struct iovec`'s on
//! Unix: an SPDK host views a bdev_io's iovecs as `&[IoSlice]` without converting them.

use std::io::{IoSlice, IoSliceMut};

/// Data of one successful child read.
#[derive(Clone, Copy, Debug)]
pub enum ChildBytes<'a> {
    /// One contiguous run: pooled or DMA buffers, lent memory, a flat parent buffer.
    Flat(&'a [u8]),
    /// Ordered segments making up the data (an SPDK parent's iovecs).
    Segments(&'a [IoSlice<'a>]),
}

impl<'a> From<&'a [u8]> for ChildBytes<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        ChildBytes::Flat(bytes)
    }
}

impl<'a> ChildBytes<'a> {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        match self {
            ChildBytes::Flat(b) => b.len(),
            ChildBytes::Segments(s) => s.iter().map(|s| s.len()).sum(),
        }
    }

    /// Whether there are no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The runs of bytes in order (one for [`ChildBytes::Flat`]), for hashing.
    pub fn runs(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (flat, segments): (Option<&'a [u8]>, &'a [IoSlice<'a>]) = match *self {
            ChildBytes::Flat(b) => (Some(b), &[]),
            ChildBytes::Segments(s) => (None, s),
        };
        flat.into_iter().chain(segments.iter().map(|s| &**s))
    }

    /// Offset of the first byte where `self` and `other` differ, for blkverify's message
    /// (QEMU's `qemu_iovec_compare`). When one is a strict prefix of the other, the shorter
    /// length; `None` when they are identical.
    pub fn first_difference(&self, other: &ChildBytes<'_>) -> Option<usize> {
        let mut offset = 0;
        let mut found = None;
        zip_runs(self, other, |a, b| {
            if let Some(at) = first_difference(a, b) {
                found = Some(offset + at);
                return false;
            }
            offset += a.len();
            true
        });
        found.or_else(|| {
            let (a, b) = (self.len(), other.len());
            (a != b).then_some(a.min(b))
        })
    }

    /// Copies the bytes into `dst`, which must be exactly as long (the winner's data into a
    /// contiguous parent or rewrite buffer).
    ///
    /// # Panics
    /// If the lengths differ: a host bug, never data dependent.
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(
            self.len(),
            dst.len(),
            "copy of a child's data: lengths differ"
        );
        let mut at = 0;
        for run in self.runs() {
            dst[at..at + run.len()].copy_from_slice(run);
            at += run.len();
        }
    }

    /// Copies the bytes into the segments `dst`, exactly as long in total (the winner's data
    /// into a scattered parent).
    ///
    /// # Panics
    /// If the lengths differ: a host bug, never data dependent.
    pub fn copy_to_segments(&self, dst: &mut [IoSliceMut<'_>]) {
        let total: usize = dst.iter().map(|d| d.len()).sum();
        assert_eq!(self.len(), total, "copy of a child's data: lengths differ");
        let mut targets = dst.iter_mut().map(|d| &mut **d);
        let mut target: &mut [u8] = &mut [];
        for mut run in self.runs() {
            while !run.is_empty() {
                if target.is_empty() {
                    target = targets.next().expect("lengths checked");
                    continue;
                }
                let n = run.len().min(target.len());
                let (head, tail) = std::mem::take(&mut target).split_at_mut(n);
                head.copy_from_slice(&run[..n]);
                target = tail;
                run = &run[n..];
            }
        }
    }
}

impl PartialEq for ChildBytes<'_> {
    /// Same bytes, however each side is split.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        if let (ChildBytes::Flat(a), ChildBytes::Flat(b)) = (self, other) {
            return a == b;
        }
        if self.len() != other.len() {
            return false;
        }
        let mut equal = true;
        zip_runs(self, other, |a, b| {
            equal = a == b;
            equal
        });
        equal
    }
}

/// Walks `a` and `b` side by side in pieces of equal length that never cross a segment
/// boundary of either, calling `f` on each pair until it returns false or the shorter ends.
fn zip_runs(a: &ChildBytes<'_>, b: &ChildBytes<'_>, mut f: impl FnMut(&[u8], &[u8]) -> bool) {
    let (mut runs_a, mut runs_b) = (a.runs(), b.runs());
    let (mut ra, mut rb): (&[u8], &[u8]) = (&[], &[]);
    loop {
        if ra.is_empty() {
            match runs_a.next() {
                Some(r) => ra = r,
                None => return,
            }
            continue;
        }
        if rb.is_empty() {
            match runs_b.next() {
                Some(r) => rb = r,
                None => return,
            }
            continue;
        }
        let n = ra.len().min(rb.len());
        if !f(&ra[..n], &rb[..n]) {
            return;
        }
        ra = &ra[n..];
        rb = &rb[n..];
    }
}

/// First differing byte of two contiguous runs of the same length, comparing 256-byte
/// chunks with `memcmp` first so long equal prefixes stay fast.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    const CHUNK: usize = 256;
    let mut offset = 0;
    for (ca, cb) in a.chunks(CHUNK).zip(b.chunks(CHUNK)) {
        if ca != cb {
            return ca
                .iter()
                .zip(cb)
                .position(|(x, y)| x != y)
                .map(|p| offset + p);
        }
        offset += ca.len();
    }
    None
}

/// `data` as segments cut at `cuts` (sorted offsets inside it), as a scattered parent
/// would hold it: for tests.
#[cfg(test)]
pub(crate) fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<IoSlice<'a>> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        out.push(IoSlice::new(&data[at..c]));
        at = c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::btree_set(0..=len, 0..6).prop_map(|s| s.into_iter().collect())
    }

    #[test]
    fn first_difference_offsets() {
        let a = vec![7u8; 10_000];
        let mut b = a.clone();
        let fa = ChildBytes::Flat(&a);
        assert_eq!(fa.first_difference(&ChildBytes::Flat(&b)), None);
        b[9_999] = 0;
        assert_eq!(fa.first_difference(&ChildBytes::Flat(&b)), Some(9_999));
        b[300] = 0;
        assert_eq!(fa.first_difference(&ChildBytes::Flat(&b)), Some(300));
        b[0] = 0;
        assert_eq!(fa.first_difference(&ChildBytes::Flat(&b)), Some(0));
        let short = ChildBytes::Flat(&a[..5]);
        assert_eq!(short.first_difference(&ChildBytes::Flat(&a[..9])), Some(5));
        let empty = ChildBytes::Flat(&[]);
        assert_eq!(empty.first_difference(&empty), None);
        assert_eq!(empty.first_difference(&ChildBytes::Flat(&[1])), Some(0));
    }

    proptest! {
        /// Comparing, locating the first difference and copying give the same answers
        /// whatever the split of either side.
        #[test]
        fn segments_behave_as_their_concatenation(
            a in proptest::collection::vec(0u8..3, 0..64),
            flip in proptest::option::of((0usize..64, 1u8..=255)),
            cuts_a in cuts(64),
            cuts_b in cuts(64),
        ) {
            let mut b = a.clone();
            if let Some((at, x)) = flip {
                if at < b.len() {
                    b[at] ^= x;
                }
            }
            let cuts_a: Vec<usize> = cuts_a.into_iter().filter(|&c| c <= a.len()).collect();
            let cuts_b: Vec<usize> = cuts_b.into_iter().filter(|&c| c <= b.len()).collect();
            let (sa, sb) = (split(&a, &cuts_a), split(&b, &cuts_b));
            let (fa, fb) = (ChildBytes::Flat(&a), ChildBytes::Flat(&b));
            let (ga, gb) = (ChildBytes::Segments(&sa), ChildBytes::Segments(&sb));
            prop_assert_eq!(ga.len(), a.len());
            prop_assert_eq!(ga == gb, a == b);
            prop_assert_eq!(ga == fb, a == b);
            prop_assert_eq!(fa == gb, a == b);
            let want = fa.first_difference(&fb);
            prop_assert_eq!(ga.first_difference(&gb), want);
            prop_assert_eq!(fa.first_difference(&gb), want);
            let mut flat = vec![0u8; a.len()];
            ga.copy_to(&mut flat);
            prop_assert_eq!(&flat, &a);
            let mut out = vec![0u8; b.len()];
            {
                let mut pieces: Vec<IoSliceMut<'_>> = Vec::new();
                let mut rest: &mut [u8] = &mut out;
                let mut at = 0;
                for &c in &cuts_b {
                    let (head, tail) = std::mem::take(&mut rest).split_at_mut(c - at);
                    pieces.push(IoSliceMut::new(head));
                    rest = tail;
                    at = c;
                }
                pieces.push(IoSliceMut::new(rest));
                ChildBytes::Segments(&sb).copy_to_segments(&mut pieces);
            }
            prop_assert_eq!(&out, &b);
            // A prefix is told apart by its length.
            if !a.is_empty() {
                let shorter = ChildBytes::Flat(&a[..a.len() - 1]);
                prop_assert!(shorter != ga);
                prop_assert_eq!(shorter.first_difference(&ga), Some(a.len() - 1));
            }
        }
    }
}
