//! The per-I/O state machine: what the quorum does for one parent I/O, from fan-out to
//! completion, whichever host moves the bytes. The host starts it with the children the I/O
//! may use, and then only does what each [`Step`] says: submit child I/Os, hand over the
//! children's data for the vote, copy the winner, write it back, complete the parent.
//! Events, counters and the rewrite guard are handled inside, so both hosts show them alike.
//!
//! A [`QuorumIo`] is a fixed-size value without heap memory: quorum-tgt keeps them in a
//! per-reactor slab, the SPDK module in each bdev_io's `driver_ctx` (see [`QUORUM_IO_SIZE`]).
//! Children are named by their index in the host's view of the quorum's children, and an
//! I/O works on a participant set given at start (today every child; with replica states,
//! the synced ones for reads), never on "all children".

use arrayvec::ArrayVec;

use crate::bytes::ChildBytes;
use crate::counters::ChildCounters;
use crate::events::OpType;
use crate::guard::ReadTicket;
use crate::options::ReadPattern;
use crate::quorum::Quorum;
use crate::vote::{vote_read, write_outcome, ChildResult, ChildSet, Verdict, MAX_CHILDREN};

/// Bytes a [`QuorumIo`] takes; a host placing it in foreign memory (SPDK's `driver_ctx`)
/// sizes that memory from this and checks it at compile time.
pub const QUORUM_IO_SIZE: usize = std::mem::size_of::<QuorumIo>();

/// The parent operations a quorum serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// Read blocks (voted on, or fifo).
    Read,
    /// Write blocks.
    Write,
    /// Write zeroes.
    WriteZeroes,
    /// Discard blocks.
    Unmap,
    /// Make completed writes durable.
    Flush,
    /// Abort what the children have in flight.
    Reset,
}

impl IoKind {
    /// The operation QUORUM_REPORT_BAD names for a failed child; none for a reset, which
    /// QEMU has no event for.
    fn reported_as(self) -> Option<OpType> {
        match self {
            IoKind::Read => Some(OpType::Read),
            IoKind::Write | IoKind::WriteZeroes | IoKind::Unmap => Some(OpType::Write),
            IoKind::Flush => Some(OpType::Flush),
            IoKind::Reset => None,
        }
    }

    /// Whether it changes data, and so goes through the rewrite guard and, on failure,
    /// gets QUORUM_FAILURE (QEMU emits none for flushes).
    fn writes_data(self) -> bool {
        matches!(self, IoKind::Write | IoKind::WriteZeroes | IoKind::Unmap)
    }
}

/// The parent I/O, as the state machine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub kind: IoKind,
    /// First block.
    pub offset_blocks: u64,
    /// Number of blocks.
    pub num_blocks: u64,
}

/// The host's view of the children one I/O works on, indexed as in [`ChildSet`]s.
pub trait Children {
    /// The child's bdev name, for events.
    fn name(&self, child: usize) -> &str;
    /// This thread's counters of the child.
    fn counters(&self, child: usize) -> &ChildCounters;
}

/// What the host does next for a parent I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Nothing until another child I/O completes.
    Wait,
    /// Send child I/Os; report each completion to [`QuorumIo::on_child_done`].
    Submit(Submit),
    /// Every child read finished: call [`QuorumIo::vote`] with their data.
    Vote,
    /// Write the winning data back to children that lost the vote; report each completion
    /// to [`QuorumIo::on_child_done`] (outcomes are ignored, as QEMU does).
    Rewrite(Rewrite),
    /// The parent I/O is done; the [`QuorumIo`] is idle again.
    Complete(Completion),
    /// A rewrite holds this write's blocks: keep the parent and [`QuorumIo::start`] it
    /// again a little later. The [`QuorumIo`] is idle.
    Retry,
    /// blkverify found the two children different: print the message (its `Display`) and
    /// stop the process, as QEMU does. It is a debugging mode.
    Stop(BlkverifyMismatch),
}

/// Child I/Os to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submit {
    /// The operation, on the parent's blocks.
    pub kind: IoKind,
    /// The children to send it to.
    pub children: ChildSet,
    /// For reads, the child reading straight into the parent's buffer (the data is
    /// returned without a copy when it wins); the others read into memory of the host's
    /// own (pooled or DMA buffers, or memory a child lends). `None` for other kinds: writes
    /// go out from the parent's buffer.
    pub into_parent: Option<usize>,
}

/// A rewrite of the winning data (`rewrite_corrupted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// The child whose data won.
    pub winner: usize,
    /// Whether the winner's data must first be copied into the parent's buffer (it did not
    /// read into it).
    pub copy_to_parent: bool,
    /// The children to write it to. The host writes to each from memory it owns holding a
    /// copy of the winner, one copy per child, never from the parent's buffer: a child may
    /// change the memory it is given (SPDK's error bdev corrupts writes in place), and the
    /// parent must return exactly the winning version, and every other child get it.
    pub children: ChildSet,
}

/// How the parent I/O ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Copy this child's data into the parent's buffer first (a read whose winner did not
    /// read into it).
    pub copy_from: Option<usize>,
    /// The parent's status: `Err(positive errno)` on failure.
    pub result: Result<(), i32>,
}

/// blkverify's report, as QEMU's quorum_compare prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkverifyMismatch {
    /// The request's byte offset.
    pub offset: u64,
    /// The request's length in bytes.
    pub bytes: u64,
    /// Absolute byte offset of the first differing byte.
    pub at: u64,
}

impl std::fmt::Display for BlkverifyMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "quorum: offset={} bytes={} contents mismatch at offset {}",
            self.offset, self.bytes, self.at
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    FanOut,
    Fifo,
    Rewrite,
}

/// One parent I/O in flight.
#[derive(Debug, Clone)]
pub struct QuorumIo {
    kind: IoKind,
    phase: Phase,
    guarded_write: bool,
    offset_blocks: u64,
    num_blocks: u64,
    participants: ChildSet,
    pending: ChildSet,
    failed: ChildSet,
    ticket: ReadTicket,
    /// Each failed child's errno; only entries of `failed` are meaningful, so nothing is
    /// cleared per I/O. Linux errnos fit 16 bits.
    errnos: [u16; MAX_CHILDREN],
}

impl Default for QuorumIo {
    fn default() -> Self {
        QuorumIo::new()
    }
}

impl QuorumIo {
    /// An idle I/O.
    pub const fn new() -> QuorumIo {
        QuorumIo {
            kind: IoKind::Read,
            phase: Phase::Idle,
            guarded_write: false,
            offset_blocks: 0,
            num_blocks: 0,
            participants: ChildSet::EMPTY,
            pending: ChildSet::EMPTY,
            failed: ChildSet::EMPTY,
            ticket: None,
            errnos: [0; MAX_CHILDREN],
        }
    }

    /// The parent's operation.
    pub fn kind(&self) -> IoKind {
        self.kind
    }

    /// The parent's first block.
    pub fn offset_blocks(&self) -> u64 {
        self.offset_blocks
    }

    /// The parent's block count.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    /// Whether no parent I/O is in progress.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Starts a parent I/O over `participants` (indices into `kids`). Reads fan out to
    /// every participant (pattern quorum) or go to the first (fifo); writes, write_zeroes
    /// and unmaps wait while a rewrite holds their blocks ([`Step::Retry`]); with no
    /// participant the I/O fails with ENODEV.
    #[inline]
    pub fn start<K: Children + ?Sized>(
        &mut self,
        q: &Quorum,
        kids: &K,
        req: Request,
        participants: ChildSet,
    ) -> Step {
        self.kind = req.kind;
        self.offset_blocks = req.offset_blocks;
        self.num_blocks = req.num_blocks;
        self.participants = participants;
        self.failed = ChildSet::EMPTY;
        self.guarded_write = false;
        self.ticket = None;
        let Some(first) = participants.iter().next() else {
            return self.complete(None, Err(libc::ENODEV));
        };
        match req.kind {
            IoKind::Read if q.options().read_pattern == ReadPattern::Fifo => {
                self.phase = Phase::Fifo;
                self.submit_one(kids, first)
            }
            IoKind::Read => {
                self.ticket = q
                    .guard()
                    .and_then(|g| g.read_ticket(req.offset_blocks, req.num_blocks));
                self.fan_out(kids, Some(first))
            }
            kind if kind.writes_data() => {
                if let Some(guard) = q.guard() {
                    if !guard.begin_write(req.offset_blocks, req.num_blocks) {
                        self.phase = Phase::Idle;
                        return Step::Retry;
                    }
                    self.guarded_write = true;
                }
                self.fan_out(kids, None)
            }
            _ => self.fan_out(kids, None),
        }
    }

    fn fan_out<K: Children + ?Sized>(&mut self, kids: &K, into_parent: Option<usize>) -> Step {
        self.phase = Phase::FanOut;
        self.pending = self.participants;
        for c in self.participants {
            kids.counters(c).count_submit(self.kind);
        }
        Step::Submit(Submit {
            kind: self.kind,
            children: self.participants,
            into_parent,
        })
    }

    /// A fifo read of `child`, into the parent's buffer.
    fn submit_one<K: Children + ?Sized>(&mut self, kids: &K, child: usize) -> Step {
        let only = ChildSet(1 << child);
        self.pending = only;
        kids.counters(child).count_submit(IoKind::Read);
        Step::Submit(Submit {
            kind: IoKind::Read,
            children: only,
            into_parent: Some(child),
        })
    }

    /// Records that `child`'s I/O ended with `result` (`Err(positive errno)`).
    // Inline: it runs once per child I/O and mostly only says "wait"; the rare ends it
    // leads to (fifo retries, write votes, rewrites) stay calls.
    #[inline]
    pub fn on_child_done<K: Children + ?Sized>(
        &mut self,
        q: &Quorum,
        kids: &K,
        child: usize,
        result: Result<(), i32>,
    ) -> Step {
        debug_assert!(self.pending.contains(child), "unexpected child {child}");
        self.pending.remove(child);
        match self.phase {
            Phase::Rewrite if self.pending.is_empty() => self.finish_rewrite(q),
            Phase::Fifo => self.fifo_step(q, kids, child, result),
            Phase::FanOut => {
                if let Err(errno) = result {
                    self.record_failure(kids, child, errno);
                }
                match (self.pending.is_empty(), self.kind) {
                    (false, _) => Step::Wait,
                    (true, IoKind::Read) => Step::Vote,
                    (true, _) => self.finish_write_like(q, kids),
                }
            }
            Phase::Rewrite | Phase::Idle => Step::Wait,
        }
    }

    fn record_failure<K: Children + ?Sized>(&mut self, kids: &K, child: usize, errno: i32) {
        self.failed.insert(child);
        self.errnos[child] = errno.clamp(1, u16::MAX as i32) as u16;
        kids.counters(child).count_error();
    }

    fn errno(&self, child: usize) -> i32 {
        i32::from(self.errnos[child])
    }

    /// The parent's byte range, for events.
    fn byte_range(&self, q: &Quorum) -> (u64, u64) {
        let bs = u64::from(q.geometry().block_size);
        (self.offset_blocks * bs, self.num_blocks * bs)
    }

    fn complete(&mut self, copy_from: Option<usize>, result: Result<(), i32>) -> Step {
        self.phase = Phase::Idle;
        Step::Complete(Completion { copy_from, result })
    }

    /// Fifo: the first success is returned; each failure is reported and the next
    /// participant tried; when none is left, the last error.
    fn fifo_step<K: Children + ?Sized>(
        &mut self,
        q: &Quorum,
        kids: &K,
        child: usize,
        result: Result<(), i32>,
    ) -> Step {
        let Err(errno) = result else {
            return self.complete(None, Ok(()));
        };
        self.record_failure(kids, child, errno);
        let (offset, len) = self.byte_range(q);
        q.events()
            .report_bad(OpType::Read, kids.name(child), offset, len, Some(errno));
        match self.participants.iter().find(|&c| c > child) {
            Some(next) => self.submit_one(kids, next),
            None => self.complete(None, Err(errno)),
        }
    }

    /// The vote of a read fanned out to every participant (after [`Step::Vote`]). `data`
    /// gives a successful child's bytes, as they are in the host's buffers; it is asked
    /// only for children whose read succeeded.
    pub fn vote<'a, K: Children + ?Sized>(
        &mut self,
        q: &Quorum,
        kids: &K,
        data: impl Fn(usize) -> ChildBytes<'a>,
    ) -> Step {
        debug_assert!(self.phase == Phase::FanOut && self.pending.is_empty());
        let options = q.options();
        let (offset, len) = self.byte_range(q);
        // Only as many entries as participants, pushed in place: a full MAX_CHILDREN array
        // cost a 1 KiB memset per read (a tenth of a quorum read over null).
        let mut results = ArrayVec::<ChildResult<'a>, MAX_CHILDREN>::new();
        if self.failed.is_empty() && is_every_child(self.participants) {
            // The path almost every read takes: every child, all read.
            for c in 0..self.participants.len() {
                results.push(Ok(data(c)));
            }
        } else {
            for c in self.participants {
                results.push(if self.failed.contains(c) {
                    Err(self.errno(c))
                } else {
                    Ok(data(c))
                });
            }
        }
        if options.blkverify {
            if let (Some(Ok(a)), Some(Ok(b))) = (results.first(), results.get(1)) {
                if let Some(at) = a.first_difference(b) {
                    return Step::Stop(BlkverifyMismatch {
                        offset,
                        bytes: len,
                        at: offset + at as u64,
                    });
                }
            }
        }
        let verdict = vote_read(&results, options.vote_threshold);
        drop(results);
        for c in self.failed {
            q.events()
                .report_bad(OpType::Read, kids.name(c), offset, len, Some(self.errno(c)));
        }
        let (winner, mismatched) = match verdict {
            Verdict::Ok {
                winner, mismatched, ..
            } => (
                self.nth_participant(winner),
                spread(mismatched, self.participants),
            ),
            Verdict::Failed { errno, .. } => {
                q.events().failure(offset, len);
                return self.complete(None, Err(errno));
            }
        };
        for c in mismatched {
            kids.counters(c).count_bad_version();
            q.events()
                .report_bad(OpType::Read, kids.name(c), offset, len, None);
        }
        let into_parent = self.participants.iter().next();
        let copy_to_parent = Some(winner) != into_parent;
        if options.rewrite_corrupted && !mismatched.is_empty() {
            let guard = q.guard().expect("rewrite_corrupted has a guard");
            if guard.begin_rewrite(self.offset_blocks, self.num_blocks, self.ticket) {
                self.phase = Phase::Rewrite;
                self.pending = mismatched;
                for c in mismatched {
                    kids.counters(c).count_rewrite();
                }
                return Step::Rewrite(Rewrite {
                    winner,
                    copy_to_parent,
                    children: mismatched,
                });
            }
            tracing::debug!(quorum = %q.name(), offset, "rewrite skipped: newer write");
        }
        self.complete(copy_to_parent.then_some(winner), Ok(()))
    }

    /// The child at position `k` among the participants.
    fn nth_participant(&self, k: usize) -> usize {
        if is_every_child(self.participants) {
            return k;
        }
        self.participants
            .iter()
            .nth(k)
            .expect("vote index in range")
    }

    fn finish_rewrite(&mut self, q: &Quorum) -> Step {
        if let Some(guard) = q.guard() {
            guard.end_rewrite(self.offset_blocks, self.num_blocks);
        }
        self.complete(None, Ok(()))
    }

    /// Writes, write_zeroes, unmaps, flushes and resets: QEMU's threshold rule.
    fn finish_write_like<K: Children + ?Sized>(&mut self, q: &Quorum, kids: &K) -> Step {
        let successes = self.participants.len() - self.failed.len();
        let errnos = self.failed.iter().map(|c| self.errno(c));
        let outcome = write_outcome(successes, errnos, q.options().vote_threshold);
        // QEMU reports a failed flush over the whole child (quorum_co_flush).
        let (offset, len) = if self.kind == IoKind::Flush {
            let g = q.geometry();
            (0, g.num_blocks * u64::from(g.block_size))
        } else {
            self.byte_range(q)
        };
        if let Some(op) = self.kind.reported_as() {
            for c in self.failed {
                q.events()
                    .report_bad(op, kids.name(c), offset, len, Some(self.errno(c)));
            }
        }
        if self.guarded_write {
            if let Some(guard) = q.guard() {
                guard.end_write(self.offset_blocks, self.num_blocks);
            }
        }
        if outcome.is_err() && self.kind.writes_data() {
            q.events().failure(offset, len);
        }
        self.complete(None, outcome)
    }
}

/// Whether `participants` are children 0..n (every child, the common case), so that a
/// position among them is the child's index.
fn is_every_child(participants: ChildSet) -> bool {
    participants.0 & participants.0.wrapping_add(1) == 0
}

/// Maps a set of positions among `participants` to the children at those positions.
fn spread(positions: ChildSet, participants: ChildSet) -> ChildSet {
    if is_every_child(participants) {
        return positions;
    }
    participants
        .iter()
        .enumerate()
        .filter(|&(k, _)| positions.contains(k))
        .map(|(_, c)| c)
        .collect()
}

/// Child I/O tags of hosts that identify a child I/O by one integer: the parent's slot in
/// the high bits, the child's index in the low byte.
pub mod tag {
    /// The tag of `child`'s I/O for the parent in `slot`.
    pub fn encode(slot: usize, child: usize) -> u64 {
        ((slot as u64) << 8) | child as u64
    }

    /// The slot and child of a tag.
    pub fn decode(tag: u64) -> (usize, usize) {
        ((tag >> 8) as usize, (tag & 0xff) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_maps_positions_to_children() {
        let all = ChildSet(0b111);
        assert_eq!(spread(ChildSet(0b101), all), ChildSet(0b101));
        let some = ChildSet(0b1011_0100);
        assert_eq!(spread(ChildSet(0b1010), some), ChildSet(0b1001_0000));
        assert_eq!(spread(ChildSet(1), ChildSet(u64::MAX)), ChildSet(1));
        assert_eq!(tag::decode(tag::encode(12345, 63)), (12345, 63));
    }

    #[test]
    fn blkverify_message_is_qemus() {
        let m = BlkverifyMismatch {
            offset: 8192,
            bytes: 4096,
            at: 9426,
        };
        assert_eq!(
            m.to_string(),
            "quorum: offset=8192 bytes=4096 contents mismatch at offset 9426"
        );
    }
}
