//! Quorum options and every check of the control path (create, add and remove a child),
//! with QEMU's rules and error texts so users coming from `-drive driver=quorum,...` see the
//! same messages, whichever host runs the quorum.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::vote::MAX_CHILDREN;

/// Why a control-path request was refused; each maps to the errno SPDK's RPCs answer with.
/// The texts are the ones quorum-tgt's bdev layer shows for the same refusals, so both hosts
/// print the same words.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Refused {
    /// The request makes no sense for this quorum (EINVAL).
    #[error("{0}")]
    Invalid(String),
    /// Something by that name is there already (EEXIST).
    #[error("bdev '{0}' already exists")]
    Exists(String),
    /// Nothing by that name (ENODEV).
    #[error("bdev '{0}' not found")]
    NotFound(String),
}

impl Refused {
    /// The positive errno SPDK reports for this refusal.
    pub fn errno(&self) -> i32 {
        match self {
            Refused::Invalid(_) => libc::EINVAL,
            Refused::Exists(_) => libc::EEXIST,
            Refused::NotFound(_) => libc::ENODEV,
        }
    }
}

/// A child's shape as the quorum checks it: children must all have the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per block.
    pub block_size: u32,
    /// Number of blocks.
    pub num_blocks: u64,
}

/// The geometry every child of a new quorum shares, or the error listing each child's.
pub fn common_geometry(children: &[(&str, Geometry)]) -> Result<Geometry, Refused> {
    let Some(&(_, first)) = children.first() else {
        return Err(Refused::Invalid("quorum needs at least one child".into()));
    };
    if children.iter().all(|&(_, g)| g == first) {
        return Ok(first);
    }
    let list: Vec<String> = children
        .iter()
        .map(|(name, g)| format!("{name} ({} blocks of {} bytes)", g.num_blocks, g.block_size))
        .collect();
    Err(Refused::Invalid(format!(
        "quorum children must have the same block size and length: {}",
        list.join(", ")
    )))
}

/// Refuses a child list naming a child twice (each child is one vote).
pub fn distinct_children<S: AsRef<str>>(children: &[S]) -> Result<(), Refused> {
    for (i, c) in children.iter().enumerate() {
        if children[..i].iter().any(|o| o.as_ref() == c.as_ref()) {
            return Err(Refused::Invalid(format!(
                "child '{}' is listed twice",
                c.as_ref()
            )));
        }
    }
    Ok(())
}

/// QEMU refuses to change the children of a quorum in blkverify mode; `action` says what
/// was tried ("add a child to", "remove a child from").
pub fn children_changeable(options: &QuorumOptions, action: &str) -> Result<(), Refused> {
    if options.blkverify {
        return Err(Refused::Invalid(format!(
            "Cannot {action} a quorum in blkverify mode"
        )));
    }
    Ok(())
}

/// Checks `child` (of `child_geometry`) may join quorum `quorum`, which has `children` and
/// `geometry`.
pub fn may_add_child<S: AsRef<str>>(
    quorum: &str,
    geometry: Geometry,
    children: &[S],
    child: &str,
    child_geometry: Geometry,
) -> Result<(), Refused> {
    if children.iter().any(|c| c.as_ref() == child) {
        return Err(Refused::Exists(format!(
            "{child} (already a child of {quorum})"
        )));
    }
    if children.len() >= MAX_CHILDREN {
        return Err(Refused::Invalid("Too many children".into()));
    }
    if child_geometry != geometry {
        return Err(Refused::Invalid(format!(
            "child {child} ({} blocks of {} bytes) does not match quorum {quorum} ({} blocks of {} bytes)",
            child_geometry.num_blocks,
            child_geometry.block_size,
            geometry.num_blocks,
            geometry.block_size
        )));
    }
    Ok(())
}

/// Position of `child` among `children` if quorum `quorum` may lose it: QEMU keeps at least
/// `vote_threshold` children.
pub fn may_remove_child<S: AsRef<str>>(
    quorum: &str,
    options: &QuorumOptions,
    children: &[S],
    child: &str,
) -> Result<usize, Refused> {
    let pos = children
        .iter()
        .position(|c| c.as_ref() == child)
        .ok_or_else(|| Refused::NotFound(format!("{child} (not a child of {quorum})")))?;
    if children.len() <= options.vote_threshold {
        return Err(Refused::Invalid(format!(
            "The number of children cannot be lower than the vote threshold {}",
            options.vote_threshold
        )));
    }
    Ok(pos)
}

/// How reads are served (QEMU's `read-pattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadPattern {
    /// Read every child and vote.
    #[default]
    Quorum,
    /// Read the first child; fail over to the next one in order on error; no vote.
    Fifo,
}

impl ReadPattern {
    /// QEMU's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadPattern::Quorum => "quorum",
            ReadPattern::Fifo => "fifo",
        }
    }
}

/// A quorum's options (CONTRACT section 2, `bdev_quorum_create`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumOptions {
    /// Children that must agree (reads) or succeed (writes).
    pub vote_threshold: usize,
    /// How reads are served.
    pub read_pattern: ReadPattern,
    /// Debug mode: two children that must be identical, else the process stops.
    pub blkverify: bool,
    /// Write the winning data back to children that returned something else.
    pub rewrite_corrupted: bool,
}

impl QuorumOptions {
    /// Checks the options against a child count, in QEMU's order and words (quorum_open).
    pub fn validate(&self, num_children: usize) -> Result<(), Refused> {
        self.check(num_children).map_err(Refused::Invalid)
    }

    fn check(&self, num_children: usize) -> Result<(), String> {
        if num_children == 0 {
            return Err("quorum needs at least one child".into());
        }
        if num_children > MAX_CHILDREN {
            return Err(format!("Too many children (at most {MAX_CHILDREN})"));
        }
        if self.vote_threshold < 1 {
            return Err("Parameter 'vote-threshold' expects a value >= 1".into());
        }
        if self.vote_threshold > num_children {
            return Err("threshold may not exceed children count".into());
        }
        if self.blkverify && (num_children != 2 || self.vote_threshold != 2) {
            return Err(
                "blkverify=on can only be set if there are exactly two files and vote-threshold is 2"
                    .into(),
            );
        }
        if self.rewrite_corrupted && self.blkverify {
            return Err("rewrite-corrupted=on cannot be used with blkverify=on".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(t: usize, blkverify: bool, rewrite: bool) -> QuorumOptions {
        QuorumOptions {
            vote_threshold: t,
            read_pattern: ReadPattern::Quorum,
            blkverify,
            rewrite_corrupted: rewrite,
        }
    }

    fn message<T: std::fmt::Debug>(r: Result<T, Refused>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn qemu_rules_and_texts() {
        assert!(opts(2, false, false).validate(3).is_ok());
        assert!(message(opts(0, false, false).validate(3)).contains(">= 1"));
        assert_eq!(
            message(opts(4, false, false).validate(3)),
            "threshold may not exceed children count"
        );
        assert!(opts(2, true, false).validate(2).is_ok());
        assert!(message(opts(2, true, false).validate(3)).starts_with("blkverify=on"));
        assert!(message(opts(1, true, false).validate(2)).starts_with("blkverify=on"));
        assert_eq!(
            message(opts(2, true, true).validate(2)),
            "rewrite-corrupted=on cannot be used with blkverify=on"
        );
        assert_eq!(
            opts(1, false, false).validate(0).unwrap_err().errno(),
            libc::EINVAL
        );
    }

    const G: Geometry = Geometry {
        block_size: 512,
        num_blocks: 100,
    };

    #[test]
    fn children_checks_name_what_is_wrong() {
        assert_eq!(common_geometry(&[("A", G), ("B", G)]), Ok(G));
        let big = Geometry {
            block_size: 4096,
            num_blocks: 100,
        };
        assert_eq!(
            message(common_geometry(&[("A", G), ("B", big)])),
            "quorum children must have the same block size and length: \
             A (100 blocks of 512 bytes), B (100 blocks of 4096 bytes)"
        );
        assert_eq!(
            message(distinct_children(&["A", "B", "A"])),
            "child 'A' is listed twice"
        );
        assert!(distinct_children(&["A", "B"]).is_ok());
        assert_eq!(
            message(children_changeable(&opts(2, true, false), "add a child to")),
            "Cannot add a child to a quorum in blkverify mode"
        );
        let add = may_add_child("Q", G, &["A", "B"], "A", G).unwrap_err();
        assert_eq!(add.errno(), libc::EEXIST);
        assert_eq!(
            add.to_string(),
            "bdev 'A (already a child of Q)' already exists"
        );
        assert!(
            message(may_add_child("Q", G, &["A"], "C", big)).contains("does not match quorum Q")
        );
        assert!(may_add_child("Q", G, &["A"], "C", G).is_ok());
        let all: Vec<String> = (0..MAX_CHILDREN).map(|i| i.to_string()).collect();
        assert_eq!(
            message(may_add_child("Q", G, &all, "C", G)),
            "Too many children"
        );
        let o = opts(2, false, false);
        assert_eq!(may_remove_child("Q", &o, &["A", "B", "C"], "B"), Ok(1));
        assert_eq!(
            may_remove_child("Q", &o, &["A", "B"], "X")
                .unwrap_err()
                .errno(),
            libc::ENODEV
        );
        assert_eq!(
            message(may_remove_child("Q", &o, &["A", "B"], "B")),
            "The number of children cannot be lower than the vote threshold 2"
        );
    }
}
