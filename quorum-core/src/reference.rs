//! QEMU's quorum algorithm transcribed literally, as a test oracle for the fast vote and for
//! each host's model tests: written without looking at the fast implementation, linked lists
//! become `Vec`s with `insert(0, ..)`, return codes are QEMU's `0 / -errno`, and every
//! successful read is SHA-256 hashed. Built for tests, and for other crates with the
//! `reference` feature.

use sha2::{Digest, Sha256};

struct Version<V> {
    value: V,
    index: usize,
    vote_count: usize,
    items: Vec<usize>,
}

fn count_vote<V: PartialEq + Copy>(list: &mut Vec<Version<V>>, value: V, index: usize) {
    let pos = match list.iter().position(|v| v.value == value) {
        Some(p) => p,
        None => {
            // QLIST_INSERT_HEAD
            list.insert(
                0,
                Version {
                    value,
                    index,
                    vote_count: 0,
                    items: Vec::new(),
                },
            );
            0
        }
    };
    list[pos].vote_count += 1;
    list[pos].items.insert(0, index);
}

fn get_vote_winner<V>(list: &[Version<V>]) -> Option<&Version<V>> {
    let mut max = 0;
    let mut winner = None;
    for c in list {
        if c.vote_count > max {
            max = c.vote_count;
            winner = Some(c);
        }
    }
    winner
}

/// `quorum_vote_error`; `rets` are QEMU return codes (0 or -errno).
pub fn vote_error(rets: &[i32]) -> i32 {
    let mut list = Vec::new();
    let mut error = false;
    let mut ret = 0;
    for (i, &r) in rets.iter().enumerate() {
        if r != 0 {
            error = true;
            count_vote(&mut list, r as i64, i);
        }
    }
    if error {
        ret = get_vote_winner(&list).unwrap().value as i32;
    }
    ret
}

/// What QEMU does for one parent I/O, as seen from outside.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// 0 or -errno, what the parent I/O returns.
    pub ret: i32,
    /// Child copied into the parent's buffer (reads only).
    pub copied_from: Option<usize>,
    /// (child, errno) of every REPORT_BAD event; errno 0 = no error.
    pub report_bad: Vec<(usize, i32)>,
}

/// Each child's completion as QEMU's `*_entry` callbacks count it: the successes, and a
/// REPORT_BAD with its errno for each failure.
fn completions(rets: &[i32]) -> (usize, Vec<(usize, i32)>) {
    let mut report_bad = Vec::new();
    let mut success_count = 0;
    for (i, &r) in rets.iter().enumerate() {
        if r == 0 {
            success_count += 1;
        } else {
            report_bad.push((i, -r));
        }
    }
    (success_count, report_bad)
}

/// `read_quorum_children` + `read_quorum_children_entry` +
/// `quorum_vote`. `children[i]` is `Ok(data)` or `Err(-errno)`.
// Index loops kept on purpose: they mirror quorum.c line by line.
#[allow(clippy::needless_range_loop)]
pub fn read(children: &[Result<Vec<u8>, i32>], threshold: usize) -> Outcome {
    let n = children.len();
    let rets: Vec<i32> = children
        .iter()
        .map(|c| match c {
            Ok(_) => 0,
            Err(r) => *r,
        })
        .collect();
    let (success_count, mut report_bad) = completions(&rets);
    let buf = |i: usize| children[i].as_ref().unwrap();
    // quorum_has_too_much_io_failed
    if success_count < threshold {
        return Outcome {
            ret: vote_error(&rets),
            copied_from: None,
            report_bad,
        };
    }
    let mut i = 0;
    while i < n && rets[i] != 0 {
        i += 1;
    }
    assert!(i < n);
    let mut quorum = true;
    for j in i + 1..n {
        if rets[j] != 0 {
            continue;
        }
        quorum = buf(i) == buf(j);
        if !quorum {
            break;
        }
    }
    if quorum {
        return Outcome {
            ret: 0,
            copied_from: Some(i),
            report_bad,
        };
    }
    let mut votes: Vec<Version<[u8; 32]>> = Vec::new();
    for i in 0..n {
        if rets[i] != 0 {
            continue;
        }
        let hash: [u8; 32] = Sha256::digest(buf(i)).into();
        count_vote(&mut votes, hash, i);
    }
    let winner = get_vote_winner(&votes).unwrap();
    if winner.vote_count < threshold {
        return Outcome {
            ret: -libc::EIO,
            copied_from: None,
            report_bad,
        };
    }
    // quorum_report_bad_versions
    for version in &votes {
        if version.value == winner.value {
            continue;
        }
        for &item in &version.items {
            report_bad.push((item, 0));
        }
    }
    Outcome {
        ret: 0,
        copied_from: Some(winner.index),
        report_bad,
    }
}

/// `quorum_co_pwritev` + `write_quorum_entry`.
pub fn write(rets: &[i32], threshold: usize) -> Outcome {
    let (success_count, report_bad) = completions(rets);
    let ret = if success_count < threshold {
        vote_error(rets)
    } else {
        0
    };
    Outcome {
        ret,
        copied_from: None,
        report_bad,
    }
}

/// `read_fifo_child`: child 0 first, the next on failure, each failure reported; the first
/// success is returned, else the last child's error. `children[i]` is `Ok(data)` or
/// `Err(-errno)`.
pub fn read_fifo(children: &[Result<Vec<u8>, i32>]) -> Outcome {
    let mut report_bad = Vec::new();
    let mut ret = 0;
    for (n, child) in children.iter().enumerate() {
        match child {
            Ok(_) => {
                return Outcome {
                    ret: 0,
                    copied_from: Some(n),
                    report_bad,
                }
            }
            Err(r) => {
                report_bad.push((n, -r));
                ret = *r;
            }
        }
    }
    Outcome {
        ret,
        copied_from: None,
        report_bad,
    }
}
