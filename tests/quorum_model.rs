//! The quorum bdev against QEMU's algorithm (`quorum_core::reference`), through the real
//! module on a reactor: random child contents over multi-block requests; failing children
//! with mixed errnos (EIO from the error bdev's `failure`, ECANCELED from its `pending`
//! aborted by a reset); thresholds; both read patterns and rewrite_corrupted; over malloc
//! children behind error bdevs, and over bare malloc children, which lend their memory (the
//! zcopy path). The data, the errno, the events, the counters and every child's bytes must
//! be what QEMU would give; each child's replica state follows from the outcome.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{submit_all, Op};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use quorum_bdev::bdev::blocking::{read, write};
use quorum_bdev::bdev::{Bdev, IoType};
use quorum_bdev::control::methods;
use quorum_bdev::control::rpc::{call_blocking, Ctx};
use quorum_bdev::modules::error::{self, ErrorType, Injection, Target};
use quorum_bdev::modules::malloc;
use quorum_bdev::modules::quorum::{self, QuorumOptions, ReadPattern};
use quorum_bdev::runtime::Runtime;
use quorum_core::reference::{self, Outcome};
use serde_json::{json, Value};

const BS: usize = 512;
const DEVICE_BLOCKS: u64 = 16;

/// The errnos a failing child returns, with strerror's text as events carry it.
const ERRNO_TEXTS: [(i32, &str); 2] = [
    (libc::EIO, "Input/output error"),
    (libc::ECANCELED, "Operation canceled"),
];

/// `blocks` blocks of data; variants differ from variant 0 in one byte of one block, so
/// every block of a request is compared.
fn content(variant: u8, blocks: u64) -> Vec<u8> {
    let len = blocks as usize * BS;
    let mut out: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ ((i / BS) as u8).wrapping_mul(97))
        .collect();
    if variant != 0 {
        out[(variant as usize * 1237) % len] ^= variant;
    }
    out
}

/// How a child fails the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// `failure` injection: EIO.
    Eio,
    /// `pending` injection, then a reset of the child: ECANCELED.
    Canceled,
}

impl Failure {
    fn errno(self) -> i32 {
        match self {
            Failure::Eio => libc::EIO,
            Failure::Canceled => libc::ECANCELED,
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    threshold: usize,
    pattern: ReadPattern,
    rewrite: bool,
    is_read: bool,
    offset: u64,
    blocks: u64,
    variants: Vec<u8>,
    failures: Vec<Option<Failure>>,
    /// Bare malloc children (lending memory) instead of error bdevs over them.
    bare: bool,
}

fn strategy() -> impl Strategy<Value = Case> {
    (
        1usize..=5,
        prop_oneof![3 => Just(ReadPattern::Quorum), 1 => Just(ReadPattern::Fifo)],
        any::<bool>(),
        prop_oneof![3 => Just(true), 1 => Just(false)],
        0u64..4,
        1u64..=4,
        proptest::bool::weighted(0.25),
    )
        .prop_flat_map(|(n, pattern, rewrite, is_read, offset, blocks, bare)| {
            // A pending child is aborted by a reset sent right after the request: only a
            // fan-out has reached every child by then, so fifo reads fail with EIO only.
            let failure = if pattern == ReadPattern::Fifo && is_read {
                prop_oneof![3 => Just(None), 1 => Just(Some(Failure::Eio))].boxed()
            } else {
                prop_oneof![
                    4 => Just(None),
                    1 => Just(Some(Failure::Eio)),
                    1 => Just(Some(Failure::Canceled)),
                ]
                .boxed()
            };
            let failures = if bare {
                Just(vec![None; n]).boxed()
            } else {
                proptest::collection::vec(failure, n).boxed()
            };
            (1..=n, proptest::collection::vec(0u8..3, n), failures).prop_map(
                move |(threshold, variants, failures)| Case {
                    threshold,
                    pattern,
                    rewrite,
                    is_read,
                    offset,
                    blocks,
                    variants,
                    failures,
                    bare,
                },
            )
        })
}

struct Built {
    quorum: Arc<Bdev>,
    name: String,
    bases: Vec<Arc<Bdev>>,
    children: Vec<Arc<Bdev>>,
}

fn build(rt: &Runtime, id: usize, case: &Case) -> Built {
    let mut bases = Vec::new();
    let mut children = Vec::new();
    for i in 0..case.variants.len() {
        let base = malloc::create(
            rt,
            Some(format!("m{id}_{i}")),
            DEVICE_BLOCKS,
            BS as u32,
            None,
        )
        .unwrap();
        let child = if case.bare {
            base.clone()
        } else {
            error::create(rt, base.name(), None).unwrap()
        };
        bases.push(base);
        children.push(child);
    }
    let name = format!("q{id}");
    let opts = QuorumOptions {
        vote_threshold: case.threshold,
        read_pattern: case.pattern,
        blkverify: false,
        rewrite_corrupted: case.rewrite,
    };
    let names: Vec<String> = children.iter().map(|c| c.name().to_string()).collect();
    let quorum = quorum::create(rt, &name, &names, opts, None).unwrap();
    assert_eq!(
        quorum.info_json()["supported_io_types"]["zcopy"],
        false,
        "a quorum never lends"
    );
    Built {
        quorum,
        name,
        bases,
        children,
    }
}

fn inject(rt: &Runtime, child: &Bdev, io: IoType, failure: Failure) {
    let error_type = match failure {
        Failure::Eio => ErrorType::Failure,
        Failure::Canceled => ErrorType::Pending,
    };
    let inj = Injection {
        target: Target::Only(io),
        error_type,
        num: 1,
        queue_depth: 0,
        corrupt_offset: 0,
        corrupt_value: 0,
    };
    error::inject(rt, child.name(), &inj).unwrap();
}

/// (child index, errno or 0, place) of each REPORT_BAD, and whether QUORUM_FAILURE came.
fn observed_events(rt: &Runtime, built: &Built) -> (Vec<(usize, i32, String)>, bool) {
    let (_, shared) = quorum::find(rt, &built.name).unwrap();
    let mut bad = Vec::new();
    let mut failure = false;
    for e in shared.events().since(0, usize::MAX) {
        if e.event == "QUORUM_FAILURE" {
            failure = true;
            continue;
        }
        let node = e.data["node-name"].as_str().unwrap();
        let index = built
            .children
            .iter()
            .position(|c| c.name() == node)
            .unwrap();
        let errno = match e.data.get("error").and_then(Value::as_str) {
            Some(text) => {
                ERRNO_TEXTS
                    .iter()
                    .find(|(_, t)| *t == text)
                    .unwrap_or_else(|| panic!("unexpected error text {text}"))
                    .0
            }
            None => 0,
        };
        let place = format!(
            "{} {}+{}",
            e.data["type"], e.data["sector-num"], e.data["sectors-count"]
        );
        bad.push((index, errno, place));
    }
    bad.sort();
    (bad, failure)
}

fn counters(rt: &Runtime, name: &str) -> Vec<Value> {
    let ctx = Ctx { rt: rt.clone() };
    let method = methods::find("bdev_quorum_get_bdevs").unwrap();
    let answer = call_blocking(&ctx, &method, Some(json!({ "name": name }))).unwrap();
    answer[0]["children"].as_array().unwrap().clone()
}

fn check(rt: &Runtime, id: usize, case: &Case) -> Result<(), TestCaseError> {
    let n = case.variants.len();
    let built = build(rt, id, case);
    for (base, &v) in built.bases.iter().zip(&case.variants) {
        write(rt, base, case.offset, &content(v, case.blocks)).unwrap();
    }
    let io_type = if case.is_read {
        IoType::Read
    } else {
        IoType::Write
    };
    for (child, failure) in built.children.iter().zip(&case.failures) {
        if let Some(f) = failure {
            inject(rt, child, io_type, *f);
        }
    }
    let payload = content(7, case.blocks);
    let request = Op {
        bdev: built.quorum.clone(),
        io_type,
        offset_blocks: case.offset,
        num_blocks: case.blocks,
        data: if case.is_read {
            vec![0xee; payload.len()]
        } else {
            payload.clone()
        },
    };
    let resets = built
        .children
        .iter()
        .zip(&case.failures)
        .filter(|(_, f)| **f == Some(Failure::Canceled))
        .map(|(child, _)| Op {
            bdev: child.clone(),
            io_type: IoType::Reset,
            offset_blocks: 0,
            num_blocks: 0,
            data: Vec::new(),
        });
    let deliveries = submit_all(rt, std::iter::once(request).chain(resets).collect());
    let got = deliveries.into_iter().find(|d| d.tag == 0).unwrap();

    let inputs: Vec<Result<Vec<u8>, i32>> = (0..n)
        .map(|i| match case.failures[i] {
            Some(f) => Err(-f.errno()),
            None => Ok(content(case.variants[i], case.blocks)),
        })
        .collect();
    let want: Outcome = match (case.is_read, case.pattern) {
        (true, ReadPattern::Quorum) => reference::read(&inputs, case.threshold),
        (true, ReadPattern::Fifo) => reference::read_fifo(&inputs),
        (false, _) => {
            let rets: Vec<i32> = inputs
                .iter()
                .map(|i| i.as_ref().err().map_or(0, |&r| r))
                .collect();
            reference::write(&rets, case.threshold)
        }
    };
    prop_assert_eq!(
        got.status,
        if want.ret == 0 {
            Ok(())
        } else {
            Err(-want.ret)
        }
    );
    if let (true, Some(winner)) = (case.is_read, want.copied_from) {
        let expected = inputs[winner].as_ref().unwrap();
        prop_assert!(&got.data == expected, "the read did not return the winner");
    }

    let op = if case.is_read { "read" } else { "write" };
    let place = format!("\"{op}\" {}+{}", case.offset, case.blocks);
    let mut want_bad: Vec<(usize, i32, String)> = want
        .report_bad
        .iter()
        .map(|&(i, errno)| (i, errno, place.clone()))
        .collect();
    want_bad.sort();
    let (bad, failure) = observed_events(rt, &built);
    prop_assert_eq!(&bad, &want_bad);
    let votes = !case.is_read || case.pattern == ReadPattern::Quorum;
    prop_assert_eq!(
        failure,
        votes && want.ret != 0,
        "QUORUM_FAILURE iff the vote failed"
    );
    let unique: BTreeSet<_> = bad.iter().map(|e| e.0).collect();
    prop_assert_eq!(unique.len(), bad.len(), "one report per child");

    // Every child's bytes: the write where it succeeded, the winner where it was rewritten.
    let mismatched: Vec<usize> = want
        .report_bad
        .iter()
        .filter(|&&(_, errno)| errno == 0)
        .map(|&(i, _)| i)
        .collect();
    let rewritten = case.rewrite && case.is_read && want.ret == 0 && !mismatched.is_empty();
    for (i, base) in built.bases.iter().enumerate() {
        let mut expect = content(case.variants[i], case.blocks);
        if !case.is_read && case.failures[i].is_none() {
            expect = payload.clone();
        }
        if rewritten && mismatched.contains(&i) {
            expect = got.data.clone();
        }
        let held = read(rt, base, case.offset, case.blocks).unwrap();
        prop_assert!(held == expect, "child {} holds the wrong bytes", i);
    }

    // Counters: what was sent, what failed, what lost and was rewritten.
    let tried = |i: usize| match (case.is_read, case.pattern) {
        (true, ReadPattern::Fifo) => want.copied_from.is_none_or(|w| i <= w),
        _ => true,
    };
    // And each child's replica state: a child that failed a write the quorum acknowledged
    // missed it (out_of_sync, its one region dirty: the device is smaller than a region);
    // a failed read or a failed write changes no state.
    for (i, c) in counters(rt, &built.name).iter().enumerate() {
        let sent = u64::from(tried(i));
        let lost = u64::from(mismatched.contains(&i));
        let missed = !case.is_read && want.ret == 0 && case.failures[i].is_some();
        let want_child = json!({
            "name": built.children[i].name(),
            "state": if missed { "out_of_sync" } else { "synced" },
            "reason": if missed { "write_failed" } else { "created" },
            "dirty_regions": u32::from(missed),
            "copied_regions": 0,
            "reads": if case.is_read { sent } else { 0 },
            "writes": if case.is_read { 0 } else { sent },
            "flushes": 0,
            "io_errors": u64::from(tried(i) && case.failures[i].is_some()),
            "bad_versions": lost,
            "rewrites": if rewritten { lost } else { 0 },
        });
        prop_assert_eq!(c, &want_child);
    }
    Ok(())
}

#[test]
fn module_matches_qemu_reference_model() {
    let rt = common::runtime(1);
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    let next_id = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&strategy(), |case| {
            let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            check(&rt, id, &case)
        })
        .unwrap();
    rt.stop();
}
