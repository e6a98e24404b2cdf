//! SPDK's notification service: a numbered, bounded log of typed events (`bdev_register`,
//! `quorum_report_bad`, ...) that clients poll with `notify_get_notifications`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Notification types this target emits, as listed by `notify_get_types`.
pub const NOTIFY_TYPES: [&str; 4] = [
    "bdev_register",
    "bdev_unregister",
    "quorum_report_bad",
    "quorum_failure",
];

/// How many notifications are kept; older ones are dropped first.
const CAPACITY: usize = 65536;

/// One notification in SPDK's JSON shape.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Notification {
    /// The notification type.
    #[serde(rename = "type")]
    pub kind: String,
    /// What it is about (a bdev name).
    pub ctx: String,
    /// Increasing id; clients ask for those after one they saw.
    pub id: u64,
}

/// The runtime-wide notification log (a [`crate::runtime::Runtime::context`]).
#[derive(Default)]
pub struct Notifier {
    log: Mutex<(u64, VecDeque<Notification>)>,
}

impl Notifier {
    /// Appends a notification and returns its id.
    pub fn post(&self, kind: &str, ctx: &str) -> u64 {
        let mut guard = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let id = guard.0;
        guard.0 += 1;
        if guard.1.len() == CAPACITY {
            guard.1.pop_front();
        }
        guard.1.push_back(Notification {
            kind: kind.to_string(),
            ctx: ctx.to_string(),
            id,
        });
        id
    }

    /// Notifications with id >= `first` (ids start at 0), at most `max` of them: SPDK's `id`
    /// and `max` params.
    pub fn since(&self, first: u64, max: usize) -> Vec<Notification> {
        let guard = self.log.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .1
            .iter()
            .filter(|n| n.id >= first)
            .take(max)
            .cloned()
            .collect()
    }
}
