//! The event log: role changes and other things an operator wants to see
//! with timestamps (status page, `/status`, and the lab timeline).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

const KEEP: usize = 200;

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// "role", "vip", "peer", "warn", "reload", "service", "server"...
    pub kind: &'static str,
    pub message: String,
}

/// Shared, bounded event log. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    inner: Arc<Mutex<VecDeque<Event>>>,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl EventLog {
    pub fn push(&self, kind: &'static str, message: impl Into<String>) {
        let e = Event {
            at_ms: unix_ms(),
            kind,
            message: message.into(),
        };
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// The newest `n` events, newest last.
    pub fn last(&self, n: usize) -> Vec<Event> {
        let q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().skip(q.len().saturating_sub(n)).cloned().collect()
    }
}
