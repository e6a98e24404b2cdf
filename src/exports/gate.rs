//! A counting gate for graceful teardown: every live user (a client connection, an attached
//! session) holds a [`Ticket`]; closing the gate refuses new tickets and runs the waiters
//! once the last ticket is dropped, wherever that happens. This is how deleting an export or
//! stopping a server waits for in-flight I/O without polling.

use std::sync::{Arc, Mutex};

type Waiter = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    count: usize,
    closed: bool,
    waiters: Vec<Waiter>,
}

/// Counts live users and tells waiters when the last one left after the gate closed.
#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
}

/// One live user of a [`Gate`]; dropping it leaves.
pub struct Ticket(Arc<Gate>);

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ticket, unless the gate is closed.
    pub fn enter(self: &Arc<Self>) -> Option<Ticket> {
        let mut s = self.lock();
        if s.closed {
            return None;
        }
        s.count += 1;
        Some(Ticket(self.clone()))
    }

    /// Users holding a ticket now.
    pub fn count(&self) -> usize {
        self.lock().count
    }

    /// Closes the gate; `done` runs once no ticket is left (at once if none is).
    pub fn close(&self, done: impl FnOnce() + Send + 'static) {
        let mut s = self.lock();
        s.closed = true;
        if s.count == 0 {
            drop(s);
            done();
        } else {
            s.waiters.push(Box::new(done));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let waiters = {
            let mut s = self.0.lock();
            s.count -= 1;
            if s.count == 0 && s.closed {
                std::mem::take(&mut s.waiters)
            } else {
                Vec::new()
            }
        };
        for w in waiters {
            w();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn waiters_run_when_the_last_ticket_goes_after_close() {
        let gate = Arc::new(Gate::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let (a, b) = (gate.enter().unwrap(), gate.enter().unwrap());
        let r = ran.clone();
        gate.close(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert!(gate.enter().is_none(), "closed gates hand out no tickets");
        drop(a);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        let r = ran.clone();
        gate.close(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 2, "empty gate: at once");
    }
}
