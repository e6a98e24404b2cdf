//! The state machine against QEMU's algorithm ([`crate::reference`]), driven by a simulated
//! host: random child contents and mixed errnos, thresholds, both read patterns, rewrite,
//! multi-block requests whose parent buffer is split into random segments (as an SPDK
//! parent's iovecs are), participant subsets, random completion orders, and a child that
//! corrupts the memory it is given to write. The data returned, the errno, the events, the
//! counters and every child's final bytes must be what QEMU would give.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;

use crate::bytes::{split, ChildBytes};
use crate::counters::{ChildCounters, CounterSnapshot};
use crate::events::{strerror, EventIds, EventKind, EventSink};
use crate::io::{Children, IoKind, QuorumIo, Request, Step};
use crate::options::{Geometry, QuorumOptions, ReadPattern};
use crate::quorum::Quorum;
use crate::reference::{self, Outcome};
use crate::vote::ChildSet;

const BS: u32 = 512;
const DEVICE_BLOCKS: u64 = 64;
const OFFSET_BLOCKS: u64 = 3;
const ERRNOS: [i32; 5] = [
    libc::EIO,
    libc::ENOSPC,
    libc::ECANCELED,
    libc::EROFS,
    libc::ENOMEM,
];

/// An event sink that numbers events and notifies nobody (the model tests' host).
#[derive(Default)]
pub(crate) struct Numbering(EventIds);

impl EventSink for Numbering {
    fn next_id(&self) -> u64 {
        self.0.next()
    }
    fn notify(&self, _: EventKind, _: &str) {}
}

/// One child of the simulated host.
struct SimChild {
    name: String,
    counters: ChildCounters,
    stored: Vec<u8>,
    /// The errno its I/O for the parent request fails with.
    fails_with: Option<i32>,
    /// Flips a byte of the memory it is given to write, as SPDK's error bdev does.
    scribbles: bool,
}

struct Kids(Vec<SimChild>);

impl Children for Kids {
    fn name(&self, child: usize) -> &str {
        &self.0[child].name
    }
    fn counters(&self, child: usize) -> &ChildCounters {
        &self.0[child].counters
    }
}

/// Blocks of data; variants differ from variant 0 in one byte somewhere in the range, so
/// every block is compared.
fn content(variant: u8, len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ ((i / BS as usize) as u8).wrapping_mul(7))
        .collect();
    if variant != 0 {
        out[(variant as usize * 977) % len] ^= variant;
    }
    out
}

#[derive(Debug, Clone)]
struct Case {
    kind: IoKind,
    pattern: ReadPattern,
    rewrite: bool,
    blocks: u64,
    /// Per child: content variant and the errno it fails with.
    children: Vec<(u8, Option<i32>)>,
    participants: ChildSet,
    threshold: usize,
    scribbler: Option<usize>,
    /// Where the parent's buffer is split into segments.
    cuts: Vec<usize>,
    /// Picks which child I/O completes next.
    order: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    let child = (
        0u8..3,
        prop_oneof![3 => Just(None), 1 => proptest::sample::select(&ERRNOS[..]).prop_map(Some)],
    );
    (
        proptest::collection::vec(child, 1..=6),
        prop_oneof![
            4 => Just(IoKind::Read),
            2 => Just(IoKind::Write),
            1 => Just(IoKind::WriteZeroes),
            1 => Just(IoKind::Flush),
        ],
        prop_oneof![3 => Just(ReadPattern::Quorum), 1 => Just(ReadPattern::Fifo)],
        any::<bool>(),
        1u64..=4,
        any::<u64>(),
        any::<proptest::sample::Index>(),
        proptest::option::of(any::<proptest::sample::Index>()),
        proptest::collection::vec(0usize..4 * BS as usize, 0..4),
        proptest::collection::vec(any::<usize>(), 64),
    )
        .prop_flat_map(
            |(children, kind, pattern, rewrite, blocks, mask, first, scribbler, cuts, order)| {
                let n = children.len();
                // A non-empty subset of the children, at least the first one chosen.
                let participants = ChildSet((mask & ((1u64 << n) - 1)) | 1u64 << first.index(n));
                let len = blocks as usize * BS as usize;
                let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= len).collect();
                cuts.sort_unstable();
                let scribbler = scribbler.map(|s| s.index(n));
                (1..=participants.len()).prop_map(move |threshold| Case {
                    kind,
                    pattern,
                    rewrite,
                    blocks,
                    children: children.clone(),
                    participants,
                    threshold,
                    scribbler,
                    cuts: cuts.clone(),
                    order: order.clone(),
                })
            },
        )
}

/// A child I/O the simulated host has in flight.
struct Flight {
    child: usize,
    kind: IoKind,
    into_parent: bool,
    /// For a rewrite: the host's own copy of the winning data, one per child.
    rewrite_source: Option<Vec<u8>>,
}

/// What the run ended with.
struct Run {
    result: Result<(), i32>,
    parent: Vec<u8>,
    kids: Kids,
    events: Vec<(usize, Option<String>, String)>,
    failure: bool,
    rewrote: bool,
}

fn run(case: &Case) -> Run {
    let len = case.blocks as usize * BS as usize;
    let options = QuorumOptions {
        vote_threshold: case.threshold,
        read_pattern: case.pattern,
        blkverify: false,
        rewrite_corrupted: case.rewrite,
    };
    let geometry = Geometry {
        block_size: BS,
        num_blocks: DEVICE_BLOCKS,
    };
    let q = Quorum::new("Q", options, geometry, Arc::new(Numbering::default()));
    let mut kids = Kids(
        case.children
            .iter()
            .enumerate()
            .map(|(i, &(variant, fails_with))| SimChild {
                name: format!("C{i}"),
                counters: ChildCounters::default(),
                stored: content(variant, len),
                fails_with,
                scribbles: case.scribbler == Some(i),
            })
            .collect(),
    );
    let mut parent = match case.kind {
        IoKind::Read => vec![0xee; len],
        _ => content(9, len),
    };
    let mut own: Vec<Vec<u8>> = vec![Vec::new(); case.children.len()];
    let mut flights: Vec<Flight> = Vec::new();
    let mut order = case.order.iter().cycle();
    let mut rewrote = false;
    let mut io = QuorumIo::new();
    let request = Request {
        kind: case.kind,
        offset_blocks: OFFSET_BLOCKS,
        num_blocks: case.blocks,
    };
    let mut step = io.start(&q, &kids, request, case.participants);
    let result = loop {
        step = match step {
            Step::Submit(s) => {
                for child in s.children {
                    flights.push(Flight {
                        child,
                        kind: s.kind,
                        into_parent: s.into_parent == Some(child),
                        rewrite_source: None,
                    });
                }
                Step::Wait
            }
            Step::Wait => {
                assert!(!flights.is_empty(), "waiting with nothing in flight");
                let f = flights.swap_remove(order.next().unwrap() % flights.len());
                let child = &mut kids.0[f.child];
                let result = match (f.rewrite_source, child.fails_with) {
                    (Some(mut source), _) => {
                        if child.scribbles {
                            source[len / 2] ^= 0x40;
                        }
                        child.stored = source;
                        Ok(())
                    }
                    (None, Some(errno)) => {
                        // A failing read may leave garbage where it was reading.
                        if f.kind == IoKind::Read && f.into_parent {
                            parent.fill(0xab);
                        }
                        Err(errno)
                    }
                    (None, None) => {
                        match f.kind {
                            IoKind::Read if f.into_parent => parent.copy_from_slice(&child.stored),
                            IoKind::Read => own[f.child] = child.stored.clone(),
                            IoKind::Write => child.stored.copy_from_slice(&parent),
                            IoKind::WriteZeroes => child.stored.fill(0),
                            _ => {}
                        }
                        Ok(())
                    }
                };
                io.on_child_done(&q, &kids, f.child, result)
            }
            Step::Vote => {
                let first = case.participants.iter().next().unwrap();
                let pieces = split(&parent, &case.cuts);
                let own = &own;
                io.vote(&q, &kids, |c| {
                    if c == first {
                        ChildBytes::Segments(&pieces)
                    } else {
                        ChildBytes::Flat(&own[c])
                    }
                })
            }
            Step::Rewrite(r) => {
                rewrote = true;
                if r.copy_to_parent {
                    parent.copy_from_slice(&own[r.winner]);
                }
                for child in r.children {
                    flights.push(Flight {
                        child,
                        kind: IoKind::Write,
                        into_parent: false,
                        rewrite_source: Some(parent.clone()),
                    });
                }
                Step::Wait
            }
            Step::Complete(c) => {
                if let Some(w) = c.copy_from {
                    parent.copy_from_slice(&own[w]);
                }
                break c.result;
            }
            Step::Retry | Step::Stop(_) => panic!("{step:?} in a model run"),
        };
    };
    assert!(io.is_idle() && flights.is_empty());
    let mut events = Vec::new();
    let mut failure = false;
    for e in q.events().since(0, usize::MAX) {
        if e.event == "QUORUM_FAILURE" {
            assert_eq!(e.data["reference"], "Q");
            failure = true;
            continue;
        }
        let name = e.data["node-name"].as_str().unwrap();
        let child = kids.0.iter().position(|k| k.name == name).unwrap();
        let error = e
            .data
            .get("error")
            .and_then(Value::as_str)
            .map(String::from);
        let place = format!(
            "{} {}+{}",
            e.data["type"], e.data["sector-num"], e.data["sectors-count"]
        );
        events.push((child, error, place));
    }
    events.sort();
    Run {
        result,
        parent,
        kids,
        events,
        failure,
        rewrote,
    }
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let len = case.blocks as usize * BS as usize;
    let dense: Vec<usize> = case.participants.iter().collect();
    let inputs: Vec<Result<Vec<u8>, i32>> = dense
        .iter()
        .map(|&c| match case.children[c] {
            (_, Some(errno)) => Err(-errno),
            (variant, None) => Ok(content(variant, len)),
        })
        .collect();
    let rets: Vec<i32> = inputs
        .iter()
        .map(|i| i.as_ref().err().map_or(0, |&r| r))
        .collect();
    let want: Outcome = match (case.kind, case.pattern) {
        (IoKind::Read, ReadPattern::Quorum) => reference::read(&inputs, case.threshold),
        (IoKind::Read, ReadPattern::Fifo) => reference::read_fifo(&inputs),
        _ => reference::write(&rets, case.threshold),
    };
    let got = run(case);
    let want_result = if want.ret == 0 {
        Ok(())
    } else {
        Err(-want.ret)
    };
    prop_assert_eq!(got.result, want_result);

    // Events: who, with which error text, about which operation and sectors.
    let (op, place) = match case.kind {
        IoKind::Read => ("read", (OFFSET_BLOCKS, case.blocks)),
        IoKind::Flush => ("flush", (0, DEVICE_BLOCKS)),
        _ => ("write", (OFFSET_BLOCKS, case.blocks)),
    };
    let sectors = BS as u64 / 512;
    let place = format!("\"{op}\" {}+{}", place.0 * sectors, place.1 * sectors);
    let mut want_events: Vec<(usize, Option<String>, String)> = want
        .report_bad
        .iter()
        .map(|&(k, errno)| {
            (
                dense[k],
                (errno != 0).then(|| strerror(errno)),
                place.clone(),
            )
        })
        .collect();
    want_events.sort();
    prop_assert_eq!(&got.events, &want_events);
    let voted_or_written = match case.kind {
        IoKind::Read => case.pattern == ReadPattern::Quorum,
        kind => kind != IoKind::Flush,
    };
    prop_assert_eq!(got.failure, voted_or_written && want.ret != 0);

    // Data: the read returns the winner exactly; writes land on the children that took them.
    let mismatched: Vec<usize> = want
        .report_bad
        .iter()
        .filter(|&&(_, errno)| errno == 0)
        .map(|&(k, _)| dense[k])
        .collect();
    let rewritten = case.rewrite && want.ret == 0 && !mismatched.is_empty();
    prop_assert_eq!(got.rewrote, rewritten);
    if case.kind == IoKind::Read && want.ret == 0 {
        let winner = inputs[want.copied_from.unwrap()].as_ref().unwrap();
        prop_assert!(&got.parent == winner, "the read did not return the winner");
    }
    for (c, kid) in got.kids.0.iter().enumerate() {
        let (variant, fails_with) = case.children[c];
        let mut expect = content(variant, len);
        let took_part = case.participants.contains(c) && fails_with.is_none();
        match case.kind {
            IoKind::Write if took_part => expect = content(9, len),
            IoKind::WriteZeroes if took_part => expect = vec![0; len],
            IoKind::Read if rewritten && mismatched.contains(&c) => {
                expect = got.parent.clone();
                if kid.scribbles {
                    expect[len / 2] ^= 0x40;
                }
            }
            _ => {}
        }
        prop_assert!(kid.stored == expect, "child {} holds the wrong bytes", c);

        // Counters: what was sent, what failed, what lost and was rewritten.
        let tried = match (case.kind, case.pattern) {
            (IoKind::Read, ReadPattern::Fifo) => {
                let upto = want.copied_from.map_or(dense.len(), |k| k + 1);
                dense[..upto].contains(&c)
            }
            _ => case.participants.contains(c),
        };
        let sent = u64::from(tried);
        let lost = u64::from(mismatched.contains(&c));
        let want_counters = CounterSnapshot {
            reads: if case.kind == IoKind::Read { sent } else { 0 },
            writes: if matches!(case.kind, IoKind::Write | IoKind::WriteZeroes) {
                sent
            } else {
                0
            },
            flushes: if case.kind == IoKind::Flush { sent } else { 0 },
            io_errors: u64::from(tried && fails_with.is_some()),
            bad_versions: lost,
            rewrites: if rewritten { lost } else { 0 },
        };
        prop_assert_eq!(kid.counters.snapshot(), want_counters, "child {}", c);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn state_machine_matches_qemu_reference(case in case()) {
        check(&case)?;
    }
}
