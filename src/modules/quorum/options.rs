//! Quorum options and their validation, with QEMU's rules and error texts so users coming
//! from `-drive driver=quorum,...` see the same messages.

use serde::{Deserialize, Serialize};

use super::vote::MAX_CHILDREN;

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
    pub fn validate(&self, num_children: usize) -> Result<(), String> {
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

    #[test]
    fn qemu_rules_and_texts() {
        assert!(opts(2, false, false).validate(3).is_ok());
        assert!(opts(0, false, false)
            .validate(3)
            .unwrap_err()
            .contains(">= 1"));
        assert_eq!(
            opts(4, false, false).validate(3).unwrap_err(),
            "threshold may not exceed children count"
        );
        assert!(opts(2, true, false).validate(2).is_ok());
        assert!(opts(2, true, false)
            .validate(3)
            .unwrap_err()
            .starts_with("blkverify=on"));
        assert!(opts(1, true, false)
            .validate(2)
            .unwrap_err()
            .starts_with("blkverify=on"));
        assert_eq!(
            opts(2, true, true).validate(2).unwrap_err(),
            "rewrite-corrupted=on cannot be used with blkverify=on"
        );
    }
}
