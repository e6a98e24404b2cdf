//! The quorum RPCs' params and results (CONTRACT section 2), decoded and built the same way
//! by both RPC front ends (quorum-tgt's JSON-RPC server and SPDK's). Decoding follows
//! SPDK's client: unknown fields are refused naming the field, omitted optionals and
//! explicit `false` flags are accepted, and nulls are dropped as if omitted.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::counters::{CounterSnapshot, ScrubCounts};
use crate::options::{QuorumOptions, ReadPattern};
use crate::replica::{ChildState, ReplicaOptions, StateReason, DEFAULT_DIRTY_REGION_KB};

/// Decodes `params` (absent means `{}`) strictly; the error text names the offending field,
/// for a JSON-RPC -32602 answer.
pub fn decode<T: DeserializeOwned>(params: Option<Value>) -> Result<T, String> {
    let mut value = params.unwrap_or(Value::Object(Default::default()));
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    // Read from text: serde_path_to_error tracks field paths through serde_json's streaming
    // deserializer, which is what lets the message name the offending field.
    let text = value.to_string();
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("Invalid parameters: {inner}")
        } else {
            format!("Invalid parameters: {path}: {inner}")
        }
    })
}

/// `bdev_quorum_create`; also the `save_config` entry that brings a quorum back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// The quorum's bdev name.
    pub name: String,
    /// Children, in vote order.
    pub base_bdevs: Vec<String>,
    /// Children that must agree (reads) or succeed (writes).
    pub vote_threshold: usize,
    /// QEMU's read-pattern.
    #[serde(default)]
    pub read_pattern: ReadPattern,
    /// Debug mode: two children that must be identical.
    #[serde(default)]
    pub blkverify: bool,
    /// Write the winning data back to children that lost the vote.
    #[serde(default)]
    pub rewrite_corrupted: bool,
    /// Not in the contract's list but accepted as SPDK's raid does, so `save_config` can
    /// bring a quorum back with the same identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<uuid::Uuid>,
    /// A child that does not answer a write within this time is left behind (out_of_sync)
    /// and the write completes by the threshold rule; 0 or absent waits forever, as QEMU.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub child_io_timeout_ms: u64,
    /// Metadata area at the start of each child (SPDK raid's `-s`); not built yet, so only
    /// `false` is accepted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superblock: bool,
    /// Size of a dirty region (the unit a resync copies); beyond the contract, in README.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_region_kb: Option<u32>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl CreateParams {
    /// The entry recreating quorum `name` over `children` with `options` and `uuid`.
    pub fn recreating(
        name: &str,
        children: Vec<String>,
        options: QuorumOptions,
        replica: ReplicaOptions,
        uuid: uuid::Uuid,
    ) -> CreateParams {
        CreateParams {
            name: name.to_string(),
            base_bdevs: children,
            vote_threshold: options.vote_threshold,
            read_pattern: options.read_pattern,
            blkverify: options.blkverify,
            rewrite_corrupted: options.rewrite_corrupted,
            uuid: Some(uuid),
            child_io_timeout_ms: replica.child_io_timeout_ms,
            superblock: false,
            dirty_region_kb: (replica.dirty_region_kb != DEFAULT_DIRTY_REGION_KB)
                .then_some(replica.dirty_region_kb),
        }
    }

    /// The replica-lifecycle options asked for.
    pub fn replica_options(&self) -> ReplicaOptions {
        ReplicaOptions {
            child_io_timeout_ms: self.child_io_timeout_ms,
            dirty_region_kb: self.dirty_region_kb.unwrap_or(DEFAULT_DIRTY_REGION_KB),
        }
    }

    /// The options asked for (validated at create).
    pub fn options(&self) -> QuorumOptions {
        QuorumOptions {
            vote_threshold: self.vote_threshold,
            read_pattern: self.read_pattern,
            blkverify: self.blkverify,
            rewrite_corrupted: self.rewrite_corrupted,
        }
    }
}

/// `bdev_quorum_delete`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// The quorum.
    pub name: String,
}

/// `bdev_quorum_remove_child`, `bdev_quorum_rebuild_start` and `_stop`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildParams {
    /// The quorum.
    pub name: String,
    /// The child bdev.
    pub base_bdev: String,
}

/// How a child added at run time gets the quorum's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Rebuilt in the background (every region copied) before it serves reads.
    #[default]
    Full,
    /// Trusted to be consistent already and read at once (QEMU's behaviour).
    None,
}

/// `bdev_quorum_add_child`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddChildParams {
    /// The quorum.
    pub name: String,
    /// The child bdev.
    pub base_bdev: String,
    /// Full rebuild (default) or none.
    #[serde(default)]
    pub sync: SyncMode,
}

/// `bdev_quorum_get_bdevs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetBdevsParams {
    /// Only this quorum.
    pub name: Option<String>,
}

/// `bdev_quorum_get_events`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetEventsParams {
    /// Only this quorum's events.
    pub name: Option<String>,
    /// Only events with an id at least this.
    pub since: Option<u64>,
    /// At most this many events.
    pub max: Option<usize>,
}

/// `driver_specific.quorum` of `bdev_get_bdevs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverSpecific {
    /// Children that must agree or succeed.
    pub vote_threshold: usize,
    /// QEMU's read-pattern.
    pub read_pattern: ReadPattern,
    /// Debug mode.
    pub blkverify: bool,
    /// Rewrite of outvoted children.
    pub rewrite_corrupted: bool,
    /// Children, in vote order.
    pub base_bdevs: Vec<String>,
    /// Each child's replica state, in vote order.
    pub children: Vec<ChildStateInfo>,
}

/// A child's replica state as the RPCs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildStateInfo {
    /// The child bdev.
    pub name: String,
    /// synced, out_of_sync, rebuilding or faulted.
    pub state: ChildState,
    /// Why it is in that state.
    pub reason: StateReason,
    /// Regions it missed that are not copied yet.
    pub dirty_regions: u32,
    /// Regions resyncs and rebuilds copied to it since it joined.
    pub copied_regions: u64,
}

impl DriverSpecific {
    /// The object for a quorum with `options` over `children`.
    pub fn new(options: QuorumOptions, children: Vec<ChildStateInfo>) -> DriverSpecific {
        DriverSpecific {
            vote_threshold: options.vote_threshold,
            read_pattern: options.read_pattern,
            blkverify: options.blkverify,
            rewrite_corrupted: options.rewrite_corrupted,
            base_bdevs: children.iter().map(|c| c.name.clone()).collect(),
            children,
        }
    }
}

/// One quorum in `bdev_quorum_get_bdevs`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumInfo {
    /// The quorum's name.
    pub name: String,
    /// Children that must agree or succeed.
    pub vote_threshold: usize,
    /// QEMU's read-pattern.
    pub read_pattern: ReadPattern,
    /// Debug mode.
    pub blkverify: bool,
    /// Rewrite of outvoted children.
    pub rewrite_corrupted: bool,
    /// A child's write timeout (0: none).
    pub child_io_timeout_ms: u64,
    /// How many children.
    pub num_children: usize,
    /// Each child with its counters summed over every thread, in vote order.
    pub children: Vec<ChildInfo>,
    /// The rebuild or scrub running, if one is (SPDK raid's `process` shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    /// What the running or last scrub found.
    pub scrub: ScrubCounts,
}

impl QuorumInfo {
    /// The entry for quorum `name` with `options` and its children's counters.
    pub fn new(
        name: &str,
        options: QuorumOptions,
        replica: ReplicaOptions,
        children: Vec<ChildInfo>,
        process: Option<ProcessInfo>,
        scrub: ScrubCounts,
    ) -> QuorumInfo {
        QuorumInfo {
            name: name.to_string(),
            vote_threshold: options.vote_threshold,
            read_pattern: options.read_pattern,
            blkverify: options.blkverify,
            rewrite_corrupted: options.rewrite_corrupted,
            child_io_timeout_ms: replica.child_io_timeout_ms,
            num_children: children.len(),
            children,
            process,
            scrub,
        }
    }
}

/// `bdev_quorum_scrub_start`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubStartParams {
    /// The quorum.
    pub name: String,
    /// Bandwidth limit in MiB/s; absent or 0: none.
    #[serde(default)]
    pub max_bandwidth_mb_sec: u64,
}

/// `bdev_quorum_scrub_stop`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubStopParams {
    /// The quorum.
    pub name: String,
}

/// `bdev_quorum_set_options` (SPDK raid's `bdev_raid_set_options` names); absent fields
/// keep their value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetOptionsParams {
    /// Bytes a scrub reads per window, in KiB.
    pub process_window_size_kb: Option<u64>,
    /// Rebuild bandwidth limit in MiB/s (0: none).
    pub process_max_bandwidth_mb_sec: Option<u64>,
}

/// A running background job, as SPDK raid's `process` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    /// "rebuild" (a resync of dirty regions or a full rebuild) or "scrub".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The child being copied to.
    pub target: String,
    /// How far it got.
    pub progress: Progress,
}

/// Progress of a [`ProcessInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Blocks copied so far.
    pub blocks: u64,
    /// Percent of the blocks to copy that are copied.
    pub percent: u32,
}

/// One child in [`QuorumInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildInfo {
    /// The child bdev, its state and reason.
    #[serde(flatten)]
    pub state: ChildStateInfo,
    /// Its counters.
    #[serde(flatten)]
    pub counters: CounterSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spdk_client_quirks_are_accepted_and_unknown_fields_refused() {
        let p: CreateParams = decode(Some(json!({
            "name": "Q", "base_bdevs": ["A", "B"], "vote_threshold": 1,
            "blkverify": false, "rewrite_corrupted": false, "uuid": null
        })))
        .unwrap();
        assert_eq!(p.options().read_pattern, ReadPattern::Quorum);
        assert!(!p.options().rewrite_corrupted);
        let e = decode::<CreateParams>(Some(json!({
            "name": "Q", "base_bdevs": ["A"], "vote_threshold": 1, "extra": 1
        })))
        .unwrap_err();
        assert!(e.contains("extra"), "{e}");
        let e = decode::<CreateParams>(Some(json!({
            "name": "Q", "base_bdevs": ["A"], "vote_threshold": 1, "read_pattern": "random"
        })))
        .unwrap_err();
        assert!(e.starts_with("Invalid parameters: read_pattern"), "{e}");
        let e = decode::<ChildParams>(Some(json!({"name": "Q"}))).unwrap_err();
        assert!(e.contains("base_bdev"), "{e}");
        let e = decode::<GetBdevsParams>(Some(json!({"names": "Q"}))).unwrap_err();
        assert!(e.contains("names"), "{e}");
        let p: GetEventsParams = decode(None).unwrap();
        assert_eq!(p.since, None);
    }

    #[test]
    fn save_config_entry_and_answers_have_the_contracts_shape() {
        let o = QuorumOptions {
            vote_threshold: 2,
            read_pattern: ReadPattern::Fifo,
            blkverify: false,
            rewrite_corrupted: true,
        };
        let uuid = uuid::Uuid::nil();
        let r = ReplicaOptions {
            child_io_timeout_ms: 50,
            dirty_region_kb: 64,
        };
        let entry = CreateParams::recreating("Q", vec!["A".into(), "B".into()], o, r, uuid);
        let value = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            value,
            json!({"name": "Q", "base_bdevs": ["A", "B"], "vote_threshold": 2,
                   "read_pattern": "fifo", "blkverify": false, "rewrite_corrupted": true,
                   "uuid": "00000000-0000-0000-0000-000000000000",
                   "child_io_timeout_ms": 50, "dirty_region_kb": 64})
        );
        assert_eq!(decode::<CreateParams>(Some(value)).unwrap(), entry);
        assert_eq!(entry.replica_options(), r);
        let state = ChildStateInfo {
            name: "A".into(),
            state: ChildState::OutOfSync,
            reason: StateReason::WriteTimedOut,
            dirty_regions: 2,
            copied_regions: 0,
        };
        let info = QuorumInfo::new(
            "Q",
            o,
            r,
            vec![ChildInfo {
                state: state.clone(),
                counters: CounterSnapshot {
                    reads: 3,
                    ..Default::default()
                },
            }],
            Some(ProcessInfo {
                kind: "rebuild",
                target: "A".into(),
                progress: Progress {
                    blocks: 8,
                    percent: 50,
                },
            }),
            ScrubCounts::default(),
        );
        assert_eq!(
            serde_json::to_value(info).unwrap(),
            json!({"name": "Q", "vote_threshold": 2, "read_pattern": "fifo",
                   "blkverify": false, "rewrite_corrupted": true, "num_children": 1,
                   "child_io_timeout_ms": 50,
                   "children": [{"name": "A", "state": "out_of_sync",
                                 "reason": "write_timed_out", "dirty_regions": 2,
                                 "copied_regions": 0,
                                 "reads": 3, "writes": 0, "flushes": 0,
                                 "io_errors": 0, "bad_versions": 0, "rewrites": 0}],
                   "process": {"type": "rebuild", "target": "A",
                               "progress": {"blocks": 8, "percent": 50}},
                   "scrub": {"checked": 0, "mismatched": 0, "repaired": 0,
                             "unrecoverable": 0}})
        );
        assert_eq!(
            serde_json::to_value(DriverSpecific::new(o, vec![state])).unwrap(),
            json!({"vote_threshold": 2, "read_pattern": "fifo", "blkverify": false,
                   "rewrite_corrupted": true, "base_bdevs": ["A"],
                   "children": [{"name": "A", "state": "out_of_sync",
                                 "reason": "write_timed_out", "dirty_regions": 2,
                                 "copied_regions": 0}]})
        );
        let add: AddChildParams =
            decode(Some(json!({"name": "Q", "base_bdev": "C", "sync": "none"}))).unwrap();
        assert_eq!(add.sync, SyncMode::None);
        let add: AddChildParams = decode(Some(json!({"name": "Q", "base_bdev": "C"}))).unwrap();
        assert_eq!(add.sync, SyncMode::Full);
    }
}
