//! QEMU's QMP quorum events (QUORUM_REPORT_BAD, QUORUM_FAILURE) with their field names and
//! 512-byte sector units, kept in a bounded ring per quorum, so QEMU users' tooling reads
//! them unchanged from either host. Each host mirrors them into its notification service
//! (quorum-tgt's notify log, SPDK's notify library) through an [`EventSink`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

/// Events kept per quorum; the oldest are dropped first.
pub const EVENT_RING_CAPACITY: usize = 4096;

/// QEMU's sector size, the unit of `sector-num` and `sectors-count`.
const SECTOR: u64 = 512;

/// The operation a REPORT_BAD is about (QEMU's QuorumOpType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpType {
    /// A read (or the rewrite after it).
    Read,
    /// A write, write_zeroes or unmap.
    Write,
    /// A flush.
    Flush,
}

impl OpType {
    /// QEMU's spelling, the `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            OpType::Read => "read",
            OpType::Write => "write",
            OpType::Flush => "flush",
        }
    }
}

/// The two QMP events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A child failed or returned data that lost the vote.
    ReportBad,
    /// The quorum itself could not serve a request.
    Failure,
}

impl EventKind {
    /// QMP's event name.
    pub fn qmp_name(self) -> &'static str {
        match self {
            EventKind::ReportBad => "QUORUM_REPORT_BAD",
            EventKind::Failure => "QUORUM_FAILURE",
        }
    }

    /// The notification type it is mirrored as (CONTRACT section 2).
    pub fn notify_type(self) -> &'static str {
        match self {
            EventKind::ReportBad => "quorum_report_bad",
            EventKind::Failure => "quorum_failure",
        }
    }
}

/// What a host provides to number events and mirror them as notifications.
pub trait EventSink: Send + Sync {
    /// The next event id: increasing and unique across every quorum of the host, so
    /// `since` works when several quorums' events are merged.
    fn next_id(&self) -> u64;

    /// Mirrors an event as a notification of `kind.notify_type()`, `ctx` naming the child
    /// (report_bad) or the quorum (failure).
    fn notify(&self, kind: EventKind, ctx: &str);
}

/// A host-wide event counter, for [`EventSink::next_id`].
#[derive(Default)]
pub struct EventIds(AtomicU64);

impl EventIds {
    /// The next id, starting at 0.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// One event record in CONTRACT section 2's shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QuorumEvent {
    /// Increasing id, unique in the host.
    pub id: u64,
    /// QMP's timestamp: seconds and microseconds since the epoch.
    pub timestamp: Value,
    /// `QUORUM_REPORT_BAD` or `QUORUM_FAILURE`.
    pub event: &'static str,
    /// QMP's data object.
    pub data: Value,
}

/// First sector and sector count of a byte range, rounded outwards as QEMU does.
fn sectors(offset_bytes: u64, len_bytes: u64) -> (u64, u64) {
    let start = offset_bytes / SECTOR;
    let end = (offset_bytes + len_bytes).div_ceil(SECTOR);
    (start, end - start)
}

/// strerror(3)'s text for `errno`, QMP's `error` field; std's message without its
/// " (os error N)" suffix.
pub(crate) fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// A quorum's event ring.
pub struct EventLog {
    quorum: String,
    ring: Mutex<VecDeque<QuorumEvent>>,
    sink: Arc<dyn EventSink>,
}

impl EventLog {
    /// An empty log for quorum `quorum`, numbered and mirrored by `sink`.
    pub fn new(quorum: &str, sink: Arc<dyn EventSink>) -> EventLog {
        EventLog {
            quorum: quorum.to_string(),
            ring: Mutex::new(VecDeque::new()),
            sink,
        }
    }

    fn push(&self, kind: EventKind, data: Value, notify_ctx: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let record = QuorumEvent {
            id: self.sink.next_id(),
            timestamp: json!({"seconds": now.as_secs(), "microseconds": now.subsec_micros()}),
            event: kind.qmp_name(),
            data,
        };
        tracing::debug!(quorum = %self.quorum, event = record.event, data = %record.data, "quorum event");
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            if ring.len() == EVENT_RING_CAPACITY {
                ring.pop_front();
            }
            ring.push_back(record);
        }
        self.sink.notify(kind, notify_ctx);
    }

    /// QUORUM_REPORT_BAD for `child`; `errno` only when the child failed (not when it
    /// returned different data), as QEMU.
    pub fn report_bad(
        &self,
        op: OpType,
        child: &str,
        offset_bytes: u64,
        len_bytes: u64,
        errno: Option<i32>,
    ) {
        let (sector_num, sectors_count) = sectors(offset_bytes, len_bytes);
        let mut data = json!({
            "type": op.as_str(),
            "node-name": child,
            "sector-num": sector_num,
            "sectors-count": sectors_count,
        });
        if let Some(e) = errno {
            data["error"] = json!(strerror(e));
        }
        self.push(EventKind::ReportBad, data, child);
    }

    /// QUORUM_FAILURE: the quorum itself could not serve the request.
    pub fn failure(&self, offset_bytes: u64, len_bytes: u64) {
        let (sector_num, sectors_count) = sectors(offset_bytes, len_bytes);
        let data = json!({
            "reference": self.quorum,
            "sector-num": sector_num,
            "sectors-count": sectors_count,
        });
        self.push(EventKind::Failure, data, &self.quorum);
    }

    /// Events with id >= `since`, at most `max`.
    pub fn since(&self, since: u64, max: usize) -> Vec<QuorumEvent> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter()
            .filter(|e| e.id >= since)
            .take(max)
            .cloned()
            .collect()
    }
}

/// `bdev_quorum_get_events` over several quorums: their events with id >= `since`, merged
/// in id order, at most `max`.
pub fn merged<'a>(
    logs: impl IntoIterator<Item = &'a EventLog>,
    since: u64,
    max: usize,
) -> Vec<QuorumEvent> {
    let mut events: Vec<QuorumEvent> = logs
        .into_iter()
        .flat_map(|log| log.since(since, max))
        .collect();
    events.sort_by_key(|e| e.id);
    events.truncate(max);
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records notifications; numbers events from 100.
    #[derive(Default)]
    struct Recorder {
        ids: EventIds,
        notes: Mutex<Vec<(EventKind, String)>>,
    }

    impl EventSink for Recorder {
        fn next_id(&self) -> u64 {
            100 + self.ids.next()
        }
        fn notify(&self, kind: EventKind, ctx: &str) {
            self.notes.lock().unwrap().push((kind, ctx.to_string()));
        }
    }

    #[test]
    fn sectors_round_like_qemu() {
        assert_eq!(sectors(0, 4096), (0, 8));
        assert_eq!(sectors(512, 512), (1, 1));
        assert_eq!(sectors(1000, 100), (1, 2));
        assert_eq!(sectors(1000, 100_000), (1, 197));
        assert_eq!(strerror(libc::EIO), "Input/output error");
        assert_eq!(strerror(libc::ECANCELED), "Operation canceled");
    }

    #[test]
    fn records_have_qmp_shape_and_are_mirrored() {
        let sink = Arc::new(Recorder::default());
        let a = EventLog::new("QA", sink.clone());
        let b = EventLog::new("QB", sink.clone());
        a.report_bad(OpType::Read, "M2", 4096, 4096, None);
        b.report_bad(OpType::Flush, "M0", 0, 1 << 20, Some(libc::EIO));
        a.failure(512, 1024);
        let all = merged([&a, &b], 0, usize::MAX);
        let ids: Vec<u64> = all.iter().map(|e| e.id).collect();
        assert_eq!(ids, [100, 101, 102]);
        assert_eq!(all[0].event, "QUORUM_REPORT_BAD");
        assert_eq!(
            all[0].data,
            json!({"type": "read", "node-name": "M2", "sector-num": 8, "sectors-count": 8})
        );
        assert_eq!(all[1].data["error"], "Input/output error");
        assert_eq!(
            all[2].data,
            json!({"reference": "QA", "sector-num": 1, "sectors-count": 2})
        );
        assert!(all[2].timestamp["seconds"].as_u64().unwrap() > 0);
        assert_eq!(merged([&a, &b], 101, 1).len(), 1);
        assert_eq!(merged([&a, &b], 101, 1)[0].id, 101);
        let notes = sink.notes.lock().unwrap();
        assert_eq!(
            *notes,
            [
                (EventKind::ReportBad, "M2".to_string()),
                (EventKind::ReportBad, "M0".to_string()),
                (EventKind::Failure, "QA".to_string()),
            ]
        );
        assert_eq!(notes[2].0.notify_type(), "quorum_failure");
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let log = EventLog::new("Q", Arc::new(Recorder::default()));
        for i in 0..EVENT_RING_CAPACITY as u64 + 10 {
            log.failure(i * 512, 512);
        }
        let kept = log.since(0, usize::MAX);
        assert_eq!(kept.len(), EVENT_RING_CAPACITY);
        assert_eq!(kept[0].id, 110);
    }
}
