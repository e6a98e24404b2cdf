//! Quorum voting: QEMU `block/quorum.c` semantics as pure functions over buffers.
//!
//! This module decides the outcome of one parent I/O from the completed child
//! I/Os. It knows nothing about reactors, bdevs or events: the caller fans the
//! I/O out, collects one result per child, calls [`vote_read`] or
//! [`vote_write`], and then acts on the returned [`Verdict`] (copy the winner's
//! buffer, emit `QUORUM_REPORT_BAD` / `QUORUM_FAILURE`, rewrite corrupted
//! children, complete the parent I/O).
//!
//! # What QEMU does (block/quorum.c), and therefore what we do
//!
//! * **Version list order** — `quorum_count_vote` looks a value up in
//!   `vote_list`; an unseen value becomes a new version added with
//!   `QLIST_INSERT_HEAD`, and `version->index` is set to the child that created
//!   it. Children are counted in index order, so the list is ordered by *first
//!   appearance, newest first*, and `version->index` is the *lowest* child
//!   index holding that value.
//! * **Tie rule** — `quorum_get_vote_winner` walks the list from the head and
//!   takes a candidate only if `vote_count > max` (strict). Among versions tied
//!   for the maximum count, the one nearest the head wins: **the version whose
//!   first child has the highest index**. Examples: contents `A B` with
//!   threshold 1 → child 1's `B` wins; `A B B A` → `B` wins (winner index 1);
//!   `A A B B` → `B` wins (winner index 2).
//! * **Error vote** — `quorum_vote_error` builds the same list (values compared
//!   with `quorum_64bits_compare`) from every child whose `ret != 0`, in index
//!   order, and uses the same winner rule: the most common errno wins, and on a
//!   tie **the errno whose first failing child has the highest index** wins
//!   (`EIO ENOSPC` → `ENOSPC`; `EIO ENOSPC ENOSPC EIO` → `ENOSPC`). With no
//!   failing child it returns 0. `quorum_co_flush` repeats that logic inline.
//! * **Order of checks on a quorum read** — `quorum_vote` first calls
//!   `quorum_has_too_much_io_failed`: if `success_count < threshold` the result
//!   is the error vote (plus `QUORUM_FAILURE`) and contents are not looked at.
//!   Otherwise it compares the first successful buffer with every later
//!   successful one (`quorum_compare`, memcmp), stopping at the first mismatch;
//!   if all agree it copies the first successful child and is done. Otherwise
//!   it SHA-256-hashes every successful buffer, votes, and if
//!   `winner->vote_count < threshold` fails with `-EIO` (plus
//!   `QUORUM_FAILURE`). Else it copies `qcrs[winner->index]` and
//!   `quorum_report_bad_versions` emits `REPORT_BAD` with **no error** for every
//!   child of every losing version.
//! * **Failed children** — `read_quorum_children_entry` and
//!   `write_quorum_entry` (and `quorum_co_flush`) emit `REPORT_BAD` with the
//!   child's errno as soon as each child fails, **whatever the final outcome**
//!   (quorum reached or not).
//! * **Mismatches when quorum is lost** — when the content vote fails, QEMU
//!   emits no `REPORT_BAD` for successful-but-different children (only
//!   `QUORUM_FAILURE`), so [`Verdict::Failed`] always has an empty
//!   `mismatched`. `quorum_rewrite_bad_versions` likewise only rewrites
//!   children of losing versions, never children that failed.
//! * **Writes / flush / write_zeroes** — `quorum_co_pwritev` and
//!   `quorum_co_flush` succeed iff `success_count >= threshold`, otherwise they
//!   return the error vote.
//! * **blkverify** — `quorum_compare` aborts on the first difference, printing
//!   its offset; [`ChildBytes::first_difference`] provides that offset.
//!
//! # Cost
//!
//! The common case (every successful child returned the same bytes) costs
//! `n - 1` slice comparisons (libc `memcmp`) and no heap allocation. On
//! disagreement, children are grouped by content with fixed-size stack arrays,
//! either by comparing against group representatives or by SHA-256 digests,
//! whichever the private `prefer_hashing` cost model predicts is cheaper (on
//! the measured machine: comparing, for every child count up to
//! [`MAX_CHILDREN`]; see `hash_to_memcmp_cost_ratio` for the numbers). Both
//! give the identical [`Verdict`]; only their cost differs.

use sha2::{Digest, Sha256};

use crate::bytes::ChildBytes;

/// The most children one vote can handle; [`ChildSet`] is a `u64` bit set so
/// that verdicts stay `Copy`-sized and allocation-free.
pub const MAX_CHILDREN: usize = 64;

/// Result of one child's read as seen by the vote: `Ok(data)`, or
/// `Err(positive errno)`.
///
/// Borrowing the child's buffer (contiguous or in segments) lets the vote run
/// without copying data; the caller copies only the winner.
pub type ChildResult<'a> = Result<ChildBytes<'a>, i32>;

/// Bit set of child indices (up to [`MAX_CHILDREN`] children).
///
/// Exists so a verdict can name the children to report or rewrite without a
/// heap-allocated list on the I/O completion path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChildSet(pub u64);

impl ChildSet {
    /// The empty set, usable in `const` contexts (e.g. static initialisers).
    pub const EMPTY: ChildSet = ChildSet(0);

    /// Creates an empty set; provided alongside [`Default`] for `const` use.
    pub const fn new() -> Self {
        ChildSet(0)
    }

    /// Children `0..n`: every child of a quorum, the participants of most I/Os.
    ///
    /// # Panics
    /// If `n > MAX_CHILDREN` (a configuration error, never data dependent).
    pub const fn first(n: usize) -> Self {
        assert!(n <= MAX_CHILDREN, "more children than MAX_CHILDREN");
        if n == MAX_CHILDREN {
            ChildSet(u64::MAX)
        } else {
            ChildSet((1u64 << n) - 1)
        }
    }

    /// Adds child `i`; how the vote accumulates failed and mismatched children.
    ///
    /// # Panics
    /// If `i >= MAX_CHILDREN` (a configuration error, never data dependent).
    pub fn insert(&mut self, i: usize) {
        assert!(i < MAX_CHILDREN, "child index {i} >= {MAX_CHILDREN}");
        self.0 |= 1u64 << i;
    }

    /// Removes child `i`; lets callers consume a set incrementally (e.g. as
    /// rewrites of corrupted children complete).
    pub fn remove(&mut self, i: usize) {
        if i < MAX_CHILDREN {
            self.0 &= !(1u64 << i);
        }
    }

    /// Whether child `i` is a member; the caller's per-child test when
    /// emitting events. Out-of-range indices are never members.
    pub const fn contains(self, i: usize) -> bool {
        i < MAX_CHILDREN && (self.0 >> i) & 1 == 1
    }

    /// Number of members; vote counts are set sizes.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty; lets callers skip event emission cheaply.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Members in increasing index order, the order QEMU visits children in.
    pub fn iter(self) -> ChildSetIter {
        ChildSetIter(self.0)
    }
}

impl IntoIterator for ChildSet {
    type Item = usize;
    type IntoIter = ChildSetIter;
    fn into_iter(self) -> ChildSetIter {
        self.iter()
    }
}

impl FromIterator<usize> for ChildSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut s = ChildSet::EMPTY;
        for i in iter {
            s.insert(i);
        }
        s
    }
}

/// Iterator over a [`ChildSet`]; a named type so callers can store it in
/// state machines without boxing.
#[derive(Clone, Debug)]
pub struct ChildSetIter(u64);

impl Iterator for ChildSetIter {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(i)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.count_ones() as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for ChildSetIter {}

/// Outcome of one vote; tells the caller everything it must do to behave like
/// QEMU (which data to return, which `REPORT_BAD` events to emit, whether to
/// emit `QUORUM_FAILURE` and with which errno to fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Quorum reached: the parent I/O succeeds.
    ///
    /// `winner`: index of a child whose buffer holds the winning data (for
    /// reads: QEMU's `winner->index`, the lowest-index child of the winning
    /// version; for writes: the first successful child). `mismatched`:
    /// successful children whose data differs from the winner (reads only);
    /// each gets `REPORT_BAD` without error and, with `rewrite-corrupted`, a
    /// rewrite. `failed`: children that returned an error; each gets
    /// `REPORT_BAD` with its errno.
    Ok {
        /// Child whose buffer is returned to the parent.
        winner: usize,
        /// Successful children outvoted by the winner.
        mismatched: ChildSet,
        /// Children whose I/O returned an error.
        failed: ChildSet,
    },
    /// Quorum not reached: the parent I/O fails with `errno` (positive, e.g.
    /// `libc::EIO`) and the caller emits `QUORUM_FAILURE`.
    ///
    /// `failed` children still get `REPORT_BAD` with their errno (QEMU emits
    /// it as each child completes). `mismatched` is always empty: QEMU emits
    /// no `REPORT_BAD` for content mismatches when the content vote fails.
    Failed {
        /// Positive errno the parent I/O completes with.
        errno: i32,
        /// Always empty; kept so both variants carry the same sets.
        mismatched: ChildSet,
        /// Children whose I/O returned an error.
        failed: ChildSet,
    },
}

impl Verdict {
    /// Children to report as failed, whatever the outcome; saves the caller
    /// matching on both variants.
    pub fn failed(&self) -> ChildSet {
        match *self {
            Verdict::Ok { failed, .. } | Verdict::Failed { failed, .. } => failed,
        }
    }

    /// Children to report (and possibly rewrite) as corrupted, whatever the
    /// outcome; saves the caller matching on both variants.
    pub fn mismatched(&self) -> ChildSet {
        match *self {
            Verdict::Ok { mismatched, .. } | Verdict::Failed { mismatched, .. } => mismatched,
        }
    }
}

/// The errno most failing children returned (QEMU's `quorum_vote_error` tie
/// rule: on a tie, the errno whose first occurrence comes *last* wins).
///
/// Exists separately from [`vote_write`] for callers that collect errnos in
/// other shapes (e.g. flush of a subset). Returns 0 when the iterator is empty,
/// as QEMU does. `Clone` is required so the vote can rescan the input instead
/// of allocating a table; cost is O(n²) in the number of errnos, trivial for
/// ≤ 64 children.
pub fn vote_errno(errnos: impl Iterator<Item = i32> + Clone) -> i32 {
    let mut best = 0;
    let mut max = 0usize;
    for (pos, e) in errnos.clone().enumerate() {
        // Only count each distinct value once, at its first appearance.
        if errnos.clone().take(pos).any(|x| x == e) {
            continue;
        }
        let count = errnos.clone().skip(pos).filter(|&x| x == e).count();
        // QEMU: list is newest-first and the winner needs a strict `>`, so a
        // later first appearance beats an earlier one with equal count. We
        // walk oldest-first, hence `>=`.
        if count >= max {
            max = count;
            best = e;
        }
    }
    best
}

/// Vote on a completed write / flush / unmap / write_zeroes.
///
/// Exists because every non-read operation shares QEMU's rule: success iff at
/// least `threshold` children succeeded, otherwise the error vote (see
/// [`write_outcome`]). A `threshold` of 0 is treated as 1 (QEMU rejects it at
/// open time).
///
/// # Panics
/// If `results.len() > MAX_CHILDREN`.
pub fn vote_write(results: &[Result<(), i32>], threshold: usize) -> Verdict {
    assert!(results.len() <= MAX_CHILDREN, "too many children");
    let failed: ChildSet = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.is_err().then_some(i))
        .collect();
    let successes = results.len() - failed.len();
    let errnos = results.iter().filter_map(|r| r.err());
    match (
        write_outcome(successes, errnos, threshold),
        results.iter().position(Result::is_ok),
    ) {
        (Ok(()), Some(winner)) => Verdict::Ok {
            winner,
            mismatched: ChildSet::EMPTY,
            failed,
        },
        (outcome, _) => Verdict::Failed {
            errno: outcome.err().unwrap_or(libc::EIO),
            mismatched: ChildSet::EMPTY,
            failed,
        },
    }
}

/// QEMU's rule for a write-like operation from counts alone: `Ok` iff at least
/// `threshold` (0 counts as 1) children succeeded, else the errno most failing
/// children returned (`errnos`, in child order; EIO when there is none).
///
/// Exists for the state machine, which knows the count and the failed children
/// and so needs no per-child table on the common path.
pub fn write_outcome(
    successes: usize,
    errnos: impl Iterator<Item = i32> + Clone,
    threshold: usize,
) -> Result<(), i32> {
    if successes >= threshold.max(1) {
        Ok(())
    } else {
        Err(positive_or_eio(vote_errno(errnos)))
    }
}

/// Vote on a completed read fanned out to every child (read-pattern
/// `quorum`).
///
/// Exists so the bdev's completion path can apply QEMU's exact read vote
/// (see the module documentation) without allocating. A `threshold` of 0 is
/// treated as 1 (QEMU rejects it at open time).
///
/// # Panics
/// If `results.len() > MAX_CHILDREN`.
pub fn vote_read(results: &[ChildResult<'_>], threshold: usize) -> Verdict {
    vote_read_with(results, threshold, Grouping::Auto)
}

/// Cost of one SHA-256 digest of a buffer divided by the cost of one
/// full-length `memcmp` of two equal buffers of that size, as measured on the
/// development machine by the `measure_memcmp_vs_sha256` ignored test
/// (`cargo test --release -- --ignored --nocapture measure`; AMD EPYC, 2
/// vCPUs, SHA-NI + AVX-512, 2 MiB L2, 32 MiB L3; sha2 0.10 picks SHA-NI at
/// run time; best of 5).
///
/// Micro-benchmark, two hot buffers:
///
/// | buffer | memcmp (equal)     | SHA-256              | ratio |
/// |--------|--------------------|----------------------|-------|
/// | 512 B  | 5.9 ns (87 GB/s)   | 325 ns (1.58 GB/s)   | 55    |
/// | 4 KiB  | 44 ns (92 GB/s)    | 2.29 µs (1.79 GB/s)  | 52    |
/// | 64 KiB | 750 ns (87 GB/s)   | 36.0 µs (1.82 GB/s)  | 48    |
/// | 1 MiB  | 20.7 µs (51 GB/s)  | 575 µs (1.82 GB/s)   | 28    |
///
/// End to end, worst case for comparing (64 children, all different, each
/// differing only in its last byte, so 2016 full-length compares vs 64
/// digests; the 1 MiB case has a 64 MiB working set, larger than L3):
///
/// | buffer | compare path | hash path | effective ratio |
/// |--------|--------------|-----------|-----------------|
/// | 4 KiB  | 93 µs        | 158 µs    | 53              |
/// | 64 KiB | 1.76 ms      | 2.66 ms   | 47              |
/// | 1 MiB  | 36 ms        | 48 ms     | 42              |
///
/// The effective ratios (digest vs. one compare inside the real grouping
/// loop, where the representative stays cached) are what the rule uses,
/// rounded down. Without SHA-NI, SHA-256 is several times slower, which only
/// moves the crossover further towards comparing.
const fn hash_to_memcmp_cost_ratio(len: usize) -> usize {
    if len <= 64 * 1024 {
        46
    } else {
        40
    }
}

/// Whether to group `m` not-yet-grouped successful buffers of `len` bytes by
/// SHA-256 rather than by comparison against group representatives.
///
/// Worst case for comparing (every buffer distinct, differences at the end):
/// buffer `k` is compared with up to `k` representatives, about `m²/2`
/// full-length `memcmp`s. Hashing costs `m + 1` digests (the remaining
/// buffers plus the first group's representative) plus 32-byte compares.
/// Hashing wins iff `m²/2 · t_cmp > (m+1) · t_hash`, i.e. roughly
/// `m > 2 · ratio(len)`: more than 92 (≤ 64 KiB) or 80 (larger) buffers.
/// Since `m ≤ 63`, **on the measured machine the compare path is always
/// chosen**; the end-to-end numbers above confirm comparing is faster even in
/// its worst case at 64 children. The hash path is kept (and tested to give
/// identical verdicts) for hosts where the ratio is much smaller, e.g. slow
/// memcmp or very large, cache-cold buffers; only the constants need changing.
fn prefer_hashing(m: usize, len: usize) -> bool {
    m > 2 * hash_to_memcmp_cost_ratio(len)
}

/// How the disagreement path groups buffers; `Auto` in production, forced in
/// tests to check both paths give the same verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grouping {
    Auto,
    Compare,
    Hash,
}

/// Versions in creation order (= QEMU's insertion order; QEMU's list is the
/// reverse of this). Fixed-size, lives on the stack.
struct Versions {
    reps: [usize; MAX_CHILDREN],
    members: [ChildSet; MAX_CHILDREN],
    n: usize,
}

impl Versions {
    fn new() -> Self {
        Versions {
            reps: [0; MAX_CHILDREN],
            members: [ChildSet::EMPTY; MAX_CHILDREN],
            n: 0,
        }
    }

    fn push(&mut self, rep: usize, members: ChildSet) {
        self.reps[self.n] = rep;
        self.members[self.n] = members;
        self.n += 1;
    }

    /// `quorum_get_vote_winner`: walk QEMU's list (newest version first) with
    /// a strict `>`.
    fn winner(&self) -> usize {
        let mut max = 0;
        let mut win = 0;
        for g in (0..self.n).rev() {
            let c = self.members[g].len();
            if c > max {
                max = c;
                win = g;
            }
        }
        win
    }
}

fn positive_or_eio(errno: i32) -> i32 {
    if errno > 0 {
        errno
    } else {
        libc::EIO
    }
}

fn data<'a>(results: &[ChildResult<'a>], i: usize) -> ChildBytes<'a> {
    match results[i] {
        Ok(d) => d,
        Err(_) => unreachable!("child {i} is not a successful read"),
    }
}

fn vote_read_with(results: &[ChildResult<'_>], threshold: usize, grouping: Grouping) -> Verdict {
    assert!(results.len() <= MAX_CHILDREN, "too many children");
    let threshold = threshold.max(1);
    let mut failed = ChildSet::EMPTY;
    let mut ok = ChildSet::EMPTY;
    // Bits set directly: `i` < MAX_CHILDREN, checked above once for all.
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(_) => ok.0 |= 1 << i,
            Err(_) => failed.0 |= 1 << i,
        }
    }

    // quorum_has_too_much_io_failed
    if ok.len() < threshold {
        return Verdict::Failed {
            errno: positive_or_eio(vote_errno(results.iter().filter_map(|r| r.err()))),
            mismatched: ChildSet::EMPTY,
            failed,
        };
    }

    // quorum_vote: compare the first successful read with every later one,
    // stopping at the first mismatch.
    let mut it = ok.iter();
    let first = it.next().expect("threshold >= 1 successful children");
    let rep = data(results, first);
    let mut agree = ChildSet(1 << first);
    let mut diverged = None;
    for j in it {
        if data(results, j) == rep {
            agree.0 |= 1 << j;
        } else {
            diverged = Some(j);
            break;
        }
    }
    let Some(j0) = diverged else {
        return Verdict::Ok {
            winner: first,
            mismatched: ChildSet::EMPTY,
            failed,
        };
    };

    // Successful children from j0 on are not grouped yet; everything before
    // j0 is known to equal `rep`, and j0 is known to differ from it.
    let rest = ChildSet(ok.0 & !((1u64 << j0) - 1));
    let grouping = match grouping {
        Grouping::Auto if prefer_hashing(rest.len(), rep.len()) => Grouping::Hash,
        Grouping::Auto => Grouping::Compare,
        forced => forced,
    };
    let versions = if grouping == Grouping::Hash {
        group_by_hash(results, first, agree, rest)
    } else {
        group_by_compare(results, first, agree, j0, rest)
    };

    let win = versions.winner();
    if versions.members[win].len() < threshold {
        return Verdict::Failed {
            errno: libc::EIO,
            mismatched: ChildSet::EMPTY,
            failed,
        };
    }
    Verdict::Ok {
        winner: versions.reps[win],
        mismatched: ChildSet(ok.0 & !versions.members[win].0),
        failed,
    }
}

fn group_by_compare(
    results: &[ChildResult<'_>],
    first: usize,
    agree: ChildSet,
    j0: usize,
    rest: ChildSet,
) -> Versions {
    let mut v = Versions::new();
    v.push(first, agree);
    v.push(j0, ChildSet(1u64 << j0));
    for j in rest.iter().skip(1) {
        let d = data(results, j);
        match (0..v.n).find(|&g| data(results, v.reps[g]) == d) {
            Some(g) => v.members[g].insert(j),
            None => v.push(j, ChildSet(1u64 << j)),
        }
    }
    v
}

fn group_by_hash(
    results: &[ChildResult<'_>],
    first: usize,
    agree: ChildSet,
    rest: ChildSet,
) -> Versions {
    let mut digests = [[0u8; 32]; MAX_CHILDREN];
    let mut v = Versions::new();
    digests[0] = digest(data(results, first));
    v.push(first, agree);
    for j in rest.iter() {
        let h = digest(data(results, j));
        match (0..v.n).find(|&g| digests[g] == h) {
            Some(g) => v.members[g].insert(j),
            None => {
                digests[v.n] = h;
                v.push(j, ChildSet(1u64 << j));
            }
        }
    }
    v
}

/// SHA-256 of a child's data, fed run by run.
fn digest(data: ChildBytes<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for run in data.runs() {
        hasher.update(run);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::{EINVAL, EIO, ENOMEM, ENOSPC, EROFS};
    use proptest::prelude::*;

    use crate::reference;

    /// Converts a fast verdict into the reference's observable outcome.
    fn observe(v: &Verdict, errnos: &[Option<i32>], is_read: bool) -> reference::Outcome {
        let mut report_bad: Vec<(usize, i32)> = v
            .failed()
            .iter()
            .map(|i| (i, errnos[i].expect("failed child has an errno")))
            .chain(v.mismatched().iter().map(|i| (i, 0)))
            .collect();
        report_bad.sort_unstable();
        match *v {
            Verdict::Ok { winner, .. } => reference::Outcome {
                ret: 0,
                copied_from: is_read.then_some(winner),
                report_bad,
            },
            Verdict::Failed { errno, .. } => reference::Outcome {
                ret: -errno,
                copied_from: None,
                report_bad,
            },
        }
    }

    fn sorted(mut o: reference::Outcome) -> reference::Outcome {
        o.report_bad.sort_unstable();
        o
    }

    /// Runs all three grouping strategies and checks they agree.
    fn read_all_paths(results: &[ChildResult<'_>], threshold: usize) -> Verdict {
        let auto = vote_read(results, threshold);
        let cmp = vote_read_with(results, threshold, Grouping::Compare);
        let hash = vote_read_with(results, threshold, Grouping::Hash);
        assert_eq!(auto, cmp, "auto vs compare");
        assert_eq!(cmp, hash, "compare vs hash");
        auto
    }

    fn set(ix: &[usize]) -> ChildSet {
        ix.iter().copied().collect()
    }

    const A: ChildBytes<'static> = ChildBytes::Flat(b"aaaaaaaa");
    const B: ChildBytes<'static> = ChildBytes::Flat(b"aaaaaaab");
    const C: ChildBytes<'static> = ChildBytes::Flat(b"caaaaaaa");

    #[test]
    fn all_agree_winner_is_first_successful() {
        let v = read_all_paths(&[Ok(A), Ok(A), Ok(A)], 2);
        assert_eq!(
            v,
            Verdict::Ok {
                winner: 0,
                mismatched: ChildSet::EMPTY,
                failed: ChildSet::EMPTY
            }
        );
        let v = read_all_paths(&[Err(EIO), Ok(A), Ok(A)], 2);
        assert_eq!(
            v,
            Verdict::Ok {
                winner: 1,
                mismatched: ChildSet::EMPTY,
                failed: set(&[0])
            }
        );
    }

    #[test]
    fn one_corrupted_child_of_three() {
        for bad in 0..3 {
            let mut r: [ChildResult<'_>; 3] = [Ok(A), Ok(A), Ok(A)];
            r[bad] = Ok(B);
            let v = read_all_paths(&r, 2);
            let winner = if bad == 0 { 1 } else { 0 };
            assert_eq!(
                v,
                Verdict::Ok {
                    winner,
                    mismatched: set(&[bad]),
                    failed: ChildSet::EMPTY
                }
            );
        }
    }

    #[test]
    fn two_corrupted_differently_fails_with_eio() {
        let v = read_all_paths(&[Ok(A), Ok(B), Ok(C)], 2);
        assert_eq!(
            v,
            Verdict::Failed {
                errno: EIO,
                mismatched: ChildSet::EMPTY,
                failed: ChildSet::EMPTY
            }
        );
    }

    #[test]
    fn identically_corrupted_pair_outvotes_good_child() {
        let v = read_all_paths(&[Ok(A), Ok(B), Ok(B)], 2);
        assert_eq!(
            v,
            Verdict::Ok {
                winner: 1,
                mismatched: set(&[0]),
                failed: ChildSet::EMPTY
            }
        );
    }

    #[test]
    fn too_many_io_errors_uses_errno_vote() {
        let v = read_all_paths(&[Err(EIO), Err(ENOSPC), Err(ENOSPC), Ok(A)], 2);
        assert_eq!(
            v,
            Verdict::Failed {
                errno: ENOSPC,
                mismatched: ChildSet::EMPTY,
                failed: set(&[0, 1, 2])
            }
        );
        // Contents are not looked at once too many children failed.
        let v = read_all_paths(&[Ok(A), Ok(B), Err(EINVAL)], 3);
        assert_eq!(
            v,
            Verdict::Failed {
                errno: EINVAL,
                mismatched: ChildSet::EMPTY,
                failed: set(&[2])
            }
        );
    }

    #[test]
    fn errno_ties_go_to_latest_first_appearance() {
        assert_eq!(vote_errno([EIO, ENOSPC].into_iter()), ENOSPC);
        assert_eq!(vote_errno([EIO, ENOSPC, ENOSPC, EIO].into_iter()), ENOSPC);
        assert_eq!(vote_errno([EIO, EIO, ENOSPC, ENOSPC].into_iter()), ENOSPC);
        assert_eq!(vote_errno([EIO, ENOSPC, EIO].into_iter()), EIO);
        assert_eq!(vote_errno([EROFS, EIO, ENOSPC].into_iter()), ENOSPC);
        assert_eq!(vote_errno(std::iter::empty()), 0);
    }

    #[test]
    fn read_ties_go_to_version_first_seen_last() {
        // Threshold 1, two different versions: child 1's data wins.
        let v = read_all_paths(&[Ok(A), Ok(B)], 1);
        assert_eq!(
            v,
            Verdict::Ok {
                winner: 1,
                mismatched: set(&[0]),
                failed: ChildSet::EMPTY
            }
        );
        // A B B A: B first appears later, wins with index 1.
        let v = read_all_paths(&[Ok(A), Ok(B), Ok(B), Ok(A)], 2);
        assert_eq!(
            v,
            Verdict::Ok {
                winner: 1,
                mismatched: set(&[0, 3]),
                failed: ChildSet::EMPTY
            }
        );
        // A A B B: B wins, winner index 2.
        let v = read_all_paths(&[Ok(A), Ok(A), Ok(B), Ok(B)], 2);
        assert_eq!(
            v,
            Verdict::Ok {
                winner: 2,
                mismatched: set(&[0, 1]),
                failed: ChildSet::EMPTY
            }
        );
        // A B C threshold 1: C.
        let v = read_all_paths(&[Ok(A), Ok(B), Ok(C)], 1);
        assert_eq!(v.mismatched(), set(&[0, 1]));
        assert!(matches!(v, Verdict::Ok { winner: 2, .. }));
    }

    #[test]
    fn threshold_one() {
        let v = read_all_paths(&[Ok(A)], 1);
        assert!(matches!(v, Verdict::Ok { winner: 0, .. }));
        let v = read_all_paths(&[Err(EIO), Ok(B), Err(ENOMEM)], 1);
        assert_eq!(
            v,
            Verdict::Ok {
                winner: 1,
                mismatched: ChildSet::EMPTY,
                failed: set(&[0, 2])
            }
        );
        let v = read_all_paths(&[Err(EIO)], 1);
        assert!(matches!(v, Verdict::Failed { errno: EIO, .. }));
    }

    #[test]
    fn failed_children_reported_when_quorum_reached_with_mismatch() {
        let v = read_all_paths(&[Err(EROFS), Ok(A), Ok(B), Ok(A)], 2);
        assert_eq!(
            v,
            Verdict::Ok {
                winner: 1,
                mismatched: set(&[2]),
                failed: set(&[0])
            }
        );
    }

    #[test]
    fn degenerate_thresholds() {
        // 0 behaves as 1.
        assert_eq!(vote_read(&[Ok(A), Ok(B)], 0), vote_read(&[Ok(A), Ok(B)], 1));
        assert_eq!(
            vote_write(&[Err(EIO), Ok(())], 0),
            vote_write(&[Err(EIO), Ok(())], 1)
        );
        // Above the child count: fail with EIO even though nobody failed.
        assert_eq!(
            vote_read(&[Ok(A)], 2),
            Verdict::Failed {
                errno: EIO,
                mismatched: ChildSet::EMPTY,
                failed: ChildSet::EMPTY
            }
        );
        assert!(matches!(
            vote_write(&[], 1),
            Verdict::Failed { errno: EIO, .. }
        ));
        assert!(matches!(
            vote_read(&[], 1),
            Verdict::Failed { errno: EIO, .. }
        ));
    }

    #[test]
    fn empty_buffers_agree() {
        let v = read_all_paths(
            &[
                Ok(ChildBytes::Flat(&[])),
                Ok(ChildBytes::Flat(&[])),
                Err(EIO),
            ],
            2,
        );
        assert!(matches!(v, Verdict::Ok { winner: 0, .. }));
    }

    #[test]
    fn writes() {
        assert_eq!(
            vote_write(&[Ok(()), Err(ENOSPC), Ok(())], 2),
            Verdict::Ok {
                winner: 0,
                mismatched: ChildSet::EMPTY,
                failed: set(&[1])
            }
        );
        assert_eq!(
            vote_write(&[Err(EIO), Ok(()), Err(ENOSPC)], 2),
            Verdict::Failed {
                errno: ENOSPC,
                mismatched: ChildSet::EMPTY,
                failed: set(&[0, 2])
            }
        );
        assert_eq!(
            vote_write(&[Err(EIO), Err(ENOSPC), Err(EIO)], 1),
            Verdict::Failed {
                errno: EIO,
                mismatched: ChildSet::EMPTY,
                failed: set(&[0, 1, 2])
            }
        );
        assert!(matches!(
            vote_write(&[Err(EIO), Ok(())], 1),
            Verdict::Ok { winner: 1, .. }
        ));
    }

    #[test]
    fn sixty_four_children() {
        let bufs: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i % 3; 4096]).collect();
        let mut r: Vec<ChildResult<'_>> = bufs.iter().map(|b| Ok(b[..].into())).collect();
        // Versions by i % 3 have 22, 21, 21 children; child 63 (version 0)
        // fails, making it a three-way tie at 21: version 2 (first seen last)
        // wins.
        r[63] = Err(EIO);
        let v = read_all_paths(&r, 21);
        assert_eq!(v.failed(), set(&[63]));
        assert!(matches!(v, Verdict::Ok { winner: 2, .. }));
        assert_eq!(v.mismatched().len(), 42);
        assert!(!v.mismatched().contains(62) && v.mismatched().contains(60));
        // Child 62 (version 2) fails instead: 22, 21, 20 -> version 0.
        r[63] = Ok(bufs[63][..].into());
        r[62] = Err(ENOSPC);
        let v = read_all_paths(&r, 22);
        assert!(matches!(v, Verdict::Ok { winner: 0, .. }));
        assert_eq!(v.mismatched().len(), 41);
        let v = read_all_paths(&r, 23);
        assert!(matches!(v, Verdict::Failed { errno: EIO, .. }));
    }

    #[test]
    fn child_set_basics() {
        let mut s = ChildSet::new();
        assert!(s.is_empty());
        s.insert(0);
        s.insert(63);
        s.insert(5);
        assert_eq!(s.len(), 3);
        assert!(s.contains(63) && s.contains(5) && !s.contains(6) && !s.contains(64));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 5, 63]);
        assert_eq!(s.iter().len(), 3);
        s.remove(5);
        s.remove(100);
        assert_eq!(s.into_iter().collect::<Vec<_>>(), vec![0, 63]);
        assert_eq!(ChildSet::first(0), ChildSet::EMPTY);
        assert_eq!(ChildSet::first(3).iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(ChildSet::first(64).len(), 64);
    }

    #[test]
    #[should_panic]
    fn too_many_children_panics() {
        let r: Vec<ChildResult<'_>> = vec![Ok(A); 65];
        vote_read(&r, 1);
    }

    #[test]
    fn auto_never_hashes_within_max_children() {
        for m in 0..MAX_CHILDREN {
            assert!(!prefer_hashing(m, 4096));
            assert!(!prefer_hashing(m, 1 << 20));
        }
        assert!(prefer_hashing(93, 4096));
        assert!(prefer_hashing(81, 1 << 20));
    }

    const ERRNOS: [i32; 5] = [EIO, ENOSPC, EINVAL, ENOMEM, EROFS];

    /// A child: `Err(errno)` or `Ok(variant index)`.
    fn child() -> impl Strategy<Value = Result<usize, i32>> {
        prop_oneof![
            1 => proptest::sample::select(&ERRNOS[..]).prop_map(Err),
            3 => (0usize..4).prop_map(Ok),
        ]
    }

    /// Small set of buffer variants differing at the end, start and middle,
    /// so collisions and ties are frequent and memcmp cannot exit early.
    fn variants(base: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![base.to_vec(); 4];
        if let Some(l) = base.len().checked_sub(1) {
            out[1][l] ^= 1;
            out[2][0] ^= 2;
            out[3][l / 2] ^= 0x55;
        }
        out
    }

    fn check_case(base: &[u8], kids: &[Result<usize, i32>], threshold: usize) {
        let vars = variants(base);
        let results: Vec<ChildResult<'_>> =
            kids.iter().map(|k| k.map(|v| vars[v][..].into())).collect();
        let errnos: Vec<Option<i32>> = kids.iter().map(|k| k.err()).collect();

        // Reads.
        let fast = read_all_paths(&results, threshold);
        // The same data split into segments (each child at its own place, as an SPDK
        // parent's iovecs may be) gets the same verdict.
        let pieces: Vec<[std::io::IoSlice<'_>; 2]> = kids
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let bytes = &vars[k.unwrap_or(0)][..];
                let (head, tail) = bytes.split_at((i * 37) % (bytes.len() + 1));
                [std::io::IoSlice::new(head), std::io::IoSlice::new(tail)]
            })
            .collect();
        let segmented: Vec<ChildResult<'_>> = kids
            .iter()
            .zip(&pieces)
            .map(|(k, p)| k.map(|_| ChildBytes::Segments(p)))
            .collect();
        assert_eq!(
            read_all_paths(&segmented, threshold),
            fast,
            "segmented {kids:?}"
        );
        let ref_in: Vec<Result<Vec<u8>, i32>> = kids
            .iter()
            .map(|k| k.map(|v| vars[v].clone()).map_err(|e| -e))
            .collect();
        let want = sorted(reference::read(&ref_in, threshold));
        let got = observe(&fast, &errnos, true);
        assert_eq!(got, want, "read {kids:?} threshold {threshold}");
        // Same returned bytes (implied by same index, checked explicitly).
        if let (Some(g), Some(w)) = (got.copied_from, want.copied_from) {
            assert_eq!(data(&results, g), ref_in[w].as_ref().unwrap()[..].into());
        }

        // Writes with the same success/failure pattern.
        let wres: Vec<Result<(), i32>> = kids.iter().map(|k| k.map(|_| ())).collect();
        let rets: Vec<i32> = kids.iter().map(|k| k.err().map_or(0, |e| -e)).collect();
        let fast = vote_write(&wres, threshold);
        let want = sorted(reference::write(&rets, threshold));
        assert_eq!(observe(&fast, &errnos, false), want, "write {kids:?}");
        if let Verdict::Ok { winner, .. } = fast {
            assert_eq!(Some(winner), kids.iter().position(|k| k.is_ok()));
        }

        // Error vote alone.
        let errs = kids.iter().filter_map(|k| k.err());
        assert_eq!(-vote_errno(errs), reference::vote_error(&rets));
    }

    fn case(
        max_children: usize,
    ) -> impl Strategy<Value = (Vec<u8>, Vec<Result<usize, i32>>, usize)> {
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(child(), 1..=max_children),
        )
            .prop_flat_map(|(base, kids)| {
                let n = kids.len();
                (Just(base), Just(kids), 1..=n)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn matches_qemu_reference((base, kids, threshold) in case(8)) {
            check_case(&base, &kids, threshold);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn matches_qemu_reference_many_children((base, kids, threshold) in case(64)) {
            check_case(&base, &kids, threshold);
        }
    }

    /// Crossover measurement behind `hash_to_memcmp_cost_ratio`. Run with
    /// `cargo test --release -- --ignored --nocapture measure`.
    #[test]
    #[ignore]
    fn measure_memcmp_vs_sha256() {
        use std::hint::black_box;
        use std::time::Instant;
        for len in [512usize, 4096, 65536, 1 << 20] {
            let a: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let b = a.clone();
            let cmp_iters = (1usize << 31) / len;
            let sha_iters = (1usize << 28) / len;
            let (mut t_cmp, mut t_sha) = (f64::MAX, f64::MAX);
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..cmp_iters {
                    black_box(black_box(&a[..]) == black_box(&b[..]));
                }
                t_cmp = t_cmp.min(t.elapsed().as_secs_f64() / cmp_iters as f64);
                let t = Instant::now();
                for _ in 0..sha_iters {
                    black_box(Sha256::digest(black_box(&a[..])));
                }
                t_sha = t_sha.min(t.elapsed().as_secs_f64() / sha_iters as f64);
            }
            println!(
                "len {len:8}: memcmp {:9.1} ns ({:6.1} GB/s)  sha256 {:10.1} ns ({:5.2} GB/s)  ratio {:5.1}",
                t_cmp * 1e9,
                len as f64 / t_cmp / 1e9,
                t_sha * 1e9,
                len as f64 / t_sha / 1e9,
                t_sha / t_cmp
            );
        }
        // End to end: 64 children, all distinct, differing in the last byte
        // (worst case for the compare path).
        for len in [4096usize, 65536, 1 << 20] {
            let bufs: Vec<Vec<u8>> = (0..64u8)
                .map(|i| {
                    let mut v = vec![0u8; len];
                    v[len - 1] = i;
                    v
                })
                .collect();
            let r: Vec<ChildResult<'_>> = bufs.iter().map(|b| Ok(b[..].into())).collect();
            for g in [Grouping::Compare, Grouping::Hash] {
                let iters = (1usize << 27) / len;
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(vote_read_with(black_box(&r), 2, g));
                }
                let us = t.elapsed().as_secs_f64() / iters as f64 * 1e6;
                println!("64 distinct x {len}: {g:?} {us:.1} us per vote");
            }
        }
    }
}
