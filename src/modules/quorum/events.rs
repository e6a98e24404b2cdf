//! QEMU's QMP quorum events (QUORUM_REPORT_BAD, QUORUM_FAILURE) with their field names and
//! 512-byte sector units, kept in a bounded ring per quorum and mirrored as SPDK
//! notifications, so QEMU users' tooling reads them unchanged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

use crate::bdev::notify::Notifier;
use crate::bdev::IoType;
use crate::runtime::Runtime;

/// Events kept per quorum; the oldest are dropped first.
pub const EVENT_RING_CAPACITY: usize = 4096;

/// QEMU's sector size, the unit of `sector-num` and `sectors-count`.
const SECTOR: u64 = 512;

/// Runtime-wide event numbering, so `since` works across quorums.
#[derive(Default)]
pub struct EventIds(AtomicU64);

/// One event record in CONTRACT section 2's shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QuorumEvent {
    /// Increasing id, unique in the runtime.
    pub id: u64,
    /// QMP's timestamp: seconds and microseconds since the epoch.
    pub timestamp: Value,
    /// `QUORUM_REPORT_BAD` or `QUORUM_FAILURE`.
    pub event: &'static str,
    /// QMP's data object.
    pub data: Value,
}

/// The operation a REPORT_BAD is about (QEMU's QuorumOpType).
pub fn op_type(io_type: IoType) -> &'static str {
    match io_type {
        IoType::Read => "read",
        IoType::Flush => "flush",
        _ => "write",
    }
}

fn sectors(offset_bytes: u64, len_bytes: u64) -> (u64, u64) {
    let start = offset_bytes / SECTOR;
    let end = (offset_bytes + len_bytes).div_ceil(SECTOR);
    (start, end - start)
}

fn strerror(errno: i32) -> String {
    // SAFETY: strerror returns a pointer to a static or thread-local NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(libc::strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}

/// A quorum's event ring.
pub struct EventLog {
    quorum: String,
    ring: Mutex<VecDeque<QuorumEvent>>,
}

impl EventLog {
    /// An empty log for quorum `quorum`.
    pub fn new(quorum: &str) -> EventLog {
        EventLog {
            quorum: quorum.to_string(),
            ring: Mutex::new(VecDeque::new()),
        }
    }

    fn push(&self, rt: &Runtime, event: &'static str, data: Value, notify_ctx: &str) {
        let id = rt.context::<EventIds>().0.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let record = QuorumEvent {
            id,
            timestamp: json!({"seconds": now.as_secs(), "microseconds": now.subsec_micros()}),
            event,
            data,
        };
        tracing::debug!(quorum = %self.quorum, event, data = %record.data, "quorum event");
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            if ring.len() == EVENT_RING_CAPACITY {
                ring.pop_front();
            }
            ring.push_back(record);
        }
        let kind = if event == "QUORUM_FAILURE" {
            "quorum_failure"
        } else {
            "quorum_report_bad"
        };
        rt.context::<Notifier>().post(kind, notify_ctx);
    }

    /// QUORUM_REPORT_BAD for `child`; `errno` only when the child failed (not when it
    /// returned different data), as QEMU.
    pub fn report_bad(
        &self,
        rt: &Runtime,
        op: &'static str,
        child: &str,
        offset_bytes: u64,
        len_bytes: u64,
        errno: Option<i32>,
    ) {
        let (sector_num, sectors_count) = sectors(offset_bytes, len_bytes);
        let mut data = json!({
            "type": op,
            "node-name": child,
            "sector-num": sector_num,
            "sectors-count": sectors_count,
        });
        if let Some(e) = errno {
            data["error"] = json!(strerror(e));
        }
        self.push(rt, "QUORUM_REPORT_BAD", data, child);
    }

    /// QUORUM_FAILURE: the quorum itself could not serve the request.
    pub fn failure(&self, rt: &Runtime, offset_bytes: u64, len_bytes: u64) {
        let (sector_num, sectors_count) = sectors(offset_bytes, len_bytes);
        let data = json!({
            "reference": self.quorum,
            "sector-num": sector_num,
            "sectors-count": sectors_count,
        });
        self.push(rt, "QUORUM_FAILURE", data, &self.quorum);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_round_like_qemu() {
        assert_eq!(sectors(0, 4096), (0, 8));
        assert_eq!(sectors(512, 512), (1, 1));
        assert_eq!(sectors(1000, 100), (1, 2));
        assert_eq!(sectors(1000, 100_000), (1, 197));
        assert_eq!(strerror(libc::EIO), "Input/output error");
    }
}
