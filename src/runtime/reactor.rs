//! The per-core event loop: drains the core's message ring, runs its pollers, and either
//! spins (poll mode) or sleeps on an eventfd plus the pollers' fds (interrupt mode).

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::clock::{duration_to_ticks, tick_rate, ticks};
use super::{Shared, MAX_MSGS_PER_ITERATION};

/// Identifies a poller on its reactor, so the owner can unregister it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollerId(u64);

/// What a poller reports after one call: how much work it did (0 means idle).
pub type PollerFn = Box<dyn FnMut() -> usize>;

struct Poller {
    id: PollerId,
    run: PollerFn,
    period_ticks: u64,
    next_due: u64,
    wake_fd: Option<RawFd>,
}

/// Thread-local state of the reactor running on this thread.
pub(crate) struct Local {
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared>,
    pollers: RefCell<Vec<Poller>>,
    added: RefCell<Vec<Poller>>,
    removed: RefCell<Vec<PollerId>>,
    next_poller_id: Cell<u64>,
    busy_ticks: Cell<u64>,
    idle_ticks: Cell<u64>,
    wait_fds: RefCell<Vec<libc::pollfd>>,
}

thread_local! {
    static LOCAL: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

/// The reactor running on this thread, if this thread is a reactor.
pub(crate) fn try_local() -> Option<Rc<Local>> {
    LOCAL.with(|l| l.borrow().clone())
}

/// The reactor running on this thread; calling it elsewhere is a programming error.
pub(crate) fn local() -> Rc<Local> {
    try_local().expect("called outside a reactor thread")
}

/// Index of the reactor running this code, if any.
pub fn current_reactor() -> Option<usize> {
    LOCAL.with(|l| l.borrow().as_ref().map(|l| l.index))
}

/// Registers a poller on the current reactor. `period` None: run every iteration (active
/// poller); Some: at most once per period (timed poller). `wake_fd`: in interrupt mode the
/// reactor wakes when this fd is readable; active pollers without one only run when the
/// reactor is awake for another reason (local work, a message, a timer).
pub fn register_poller(
    run: PollerFn,
    period: Option<Duration>,
    wake_fd: Option<RawFd>,
) -> PollerId {
    let local = local();
    let id = PollerId(local.next_poller_id.get());
    local.next_poller_id.set(id.0 + 1);
    let period_ticks = period.map_or(0, duration_to_ticks);
    local.added.borrow_mut().push(Poller {
        id,
        run,
        period_ticks,
        next_due: ticks() + period_ticks,
        wake_fd,
    });
    id
}

/// Stops a poller of the current reactor; safe to call from inside that poller.
pub fn unregister_poller(id: PollerId) {
    let local = local();
    local.added.borrow_mut().retain(|p| p.id != id);
    local.removed.borrow_mut().push(id);
}

/// Busy and idle time of the current reactor, in ticks, for `framework_get_reactors`.
pub fn reactor_times() -> (u64, u64) {
    let local = local();
    (local.busy_ticks.get(), local.idle_ticks.get())
}

impl Local {
    fn run_pollers(&self, now: u64) -> usize {
        let mut list = std::mem::take(&mut *self.pollers.borrow_mut());
        let mut work = 0;
        for p in list.iter_mut() {
            if p.period_ticks == 0 {
                work += (p.run)();
            } else if now >= p.next_due {
                p.next_due = now + p.period_ticks;
                work += (p.run)();
            }
        }
        let removed = std::mem::take(&mut *self.removed.borrow_mut());
        if !removed.is_empty() {
            list.retain(|p| !removed.contains(&p.id));
        }
        list.append(&mut self.added.borrow_mut());
        *self.pollers.borrow_mut() = list;
        work
    }

    fn drain_messages(&self) -> usize {
        let mailbox = &self.shared.mailboxes[self.index];
        let mut n = 0;
        while n < MAX_MSGS_PER_ITERATION {
            match mailbox.queue.pop() {
                Some(msg) => {
                    msg();
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// Sleeps until a message, a poller fd, or the next timed poller is due.
    fn sleep(&self, now: u64) {
        let mailbox = &self.shared.mailboxes[self.index];
        mailbox.sleeping.store(true, Ordering::SeqCst);
        if !mailbox.queue.is_empty() || self.shared.stopping.load(Ordering::SeqCst) {
            mailbox.sleeping.store(false, Ordering::SeqCst);
            return;
        }
        let pollers = self.pollers.borrow();
        let mut fds = self.wait_fds.borrow_mut();
        fds.clear();
        fds.push(libc::pollfd {
            fd: mailbox.eventfd,
            events: libc::POLLIN,
            revents: 0,
        });
        let mut timeout_ticks = u64::MAX;
        for p in pollers.iter() {
            if let Some(fd) = p.wake_fd {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            if p.period_ticks != 0 {
                timeout_ticks = timeout_ticks.min(p.next_due.saturating_sub(now));
            }
        }
        drop(pollers);
        let timeout_ms = if timeout_ticks == u64::MAX {
            100
        } else {
            (timeout_ticks * 1000).div_ceil(tick_rate()).min(100) as i32
        };
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        mailbox.sleeping.store(false, Ordering::SeqCst);
        if fds[0].revents & libc::POLLIN != 0 {
            let mut value = 0u64;
            // SAFETY: reading 8 bytes into a u64 from our own non-blocking eventfd.
            unsafe { libc::read(mailbox.eventfd, (&mut value as *mut u64).cast(), 8) };
        }
    }
}

/// Runs reactor `index` on the calling thread until the runtime stops.
pub(crate) fn run(shared: Arc<Shared>, index: usize) {
    let local = Rc::new(Local {
        index,
        shared: shared.clone(),
        pollers: RefCell::new(Vec::new()),
        added: RefCell::new(Vec::new()),
        removed: RefCell::new(Vec::new()),
        next_poller_id: Cell::new(1),
        busy_ticks: Cell::new(0),
        idle_ticks: Cell::new(0),
        wait_fds: RefCell::new(Vec::with_capacity(16)),
    });
    LOCAL.with(|l| *l.borrow_mut() = Some(local.clone()));
    let mut last = ticks();
    loop {
        let mut work = local.drain_messages();
        work += local.run_pollers(last);
        let now = ticks();
        let spent = now.wrapping_sub(last);
        if work > 0 {
            local.busy_ticks.set(local.busy_ticks.get() + spent);
        } else {
            local.idle_ticks.set(local.idle_ticks.get() + spent);
            if shared.stopping.load(Ordering::Acquire) && shared.mailboxes[index].queue.is_empty() {
                break;
            }
            if shared.interrupt_mode {
                local.sleep(now);
                // Time asleep is idle time: account it now, so the wake-up's work is not
                // charged with it.
                let woke = ticks();
                local
                    .idle_ticks
                    .set(local.idle_ticks.get() + woke.wrapping_sub(now));
                last = woke;
                continue;
            }
        }
        last = now;
    }
    // Drop pollers (and whatever they own) while the reactor is still current.
    local.pollers.borrow_mut().clear();
    local.added.borrow_mut().clear();
    LOCAL.with(|l| *l.borrow_mut() = None);
}
