//! The quorum RPCs' params and results (CONTRACT section 2), decoded and built the same way
//! by both RPC front ends (quorum-tgt's JSON-RPC server and SPDK's). Decoding follows
//! SPDK's client: unknown fields are refused naming the field, omitted optionals and
//! explicit `false` flags are accepted, and nulls are dropped as if omitted.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::counters::CounterSnapshot;
use crate::options::{QuorumOptions, ReadPattern};

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
}

impl CreateParams {
    /// The entry recreating quorum `name` over `children` with `options` and `uuid`.
    pub fn recreating(
        name: &str,
        children: Vec<String>,
        options: QuorumOptions,
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

/// `bdev_quorum_add_child` and `bdev_quorum_remove_child`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildParams {
    /// The quorum.
    pub name: String,
    /// The child bdev.
    pub base_bdev: String,
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
}

impl DriverSpecific {
    /// The object for a quorum with `options` over `children`.
    pub fn new(options: QuorumOptions, children: Vec<String>) -> DriverSpecific {
        DriverSpecific {
            vote_threshold: options.vote_threshold,
            read_pattern: options.read_pattern,
            blkverify: options.blkverify,
            rewrite_corrupted: options.rewrite_corrupted,
            base_bdevs: children,
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
    /// How many children.
    pub num_children: usize,
    /// Each child with its counters summed over every thread, in vote order.
    pub children: Vec<ChildInfo>,
}

impl QuorumInfo {
    /// The entry for quorum `name` with `options` and its children's counters.
    pub fn new(name: &str, options: QuorumOptions, children: Vec<ChildInfo>) -> QuorumInfo {
        QuorumInfo {
            name: name.to_string(),
            vote_threshold: options.vote_threshold,
            read_pattern: options.read_pattern,
            blkverify: options.blkverify,
            rewrite_corrupted: options.rewrite_corrupted,
            num_children: children.len(),
            children,
        }
    }
}

/// One child in [`QuorumInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildInfo {
    /// The child bdev.
    pub name: String,
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
        let entry = CreateParams::recreating("Q", vec!["A".into(), "B".into()], o, uuid);
        let value = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            value,
            json!({"name": "Q", "base_bdevs": ["A", "B"], "vote_threshold": 2,
                   "read_pattern": "fifo", "blkverify": false, "rewrite_corrupted": true,
                   "uuid": "00000000-0000-0000-0000-000000000000"})
        );
        assert_eq!(decode::<CreateParams>(Some(value)).unwrap(), entry);
        let info = QuorumInfo::new(
            "Q",
            o,
            vec![ChildInfo {
                name: "A".into(),
                counters: CounterSnapshot {
                    reads: 3,
                    ..Default::default()
                },
            }],
        );
        assert_eq!(
            serde_json::to_value(info).unwrap(),
            json!({"name": "Q", "vote_threshold": 2, "read_pattern": "fifo",
                   "blkverify": false, "rewrite_corrupted": true, "num_children": 1,
                   "children": [{"name": "A", "reads": 3, "writes": 0, "flushes": 0,
                                 "io_errors": 0, "bad_versions": 0, "rewrites": 0}]})
        );
        assert_eq!(
            serde_json::to_value(DriverSpecific::new(o, vec!["A".into()])).unwrap(),
            json!({"vote_threshold": 2, "read_pattern": "fifo", "blkverify": false,
                   "rewrite_corrupted": true, "base_bdevs": ["A"]})
        );
    }
}
