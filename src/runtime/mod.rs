//! The poll-mode runtime: one reactor thread per core of the mask, lock-free message rings
//! between them, pollers, per-core I/O channels and DMA-style buffer pools. Nothing here
//! knows about block devices; the bdev layer is built on top of it.

pub mod buf;
pub mod channel;
pub mod clock;
pub mod cpumask;
pub mod epoll;
pub mod meminfo;
mod reactor;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_queue::SegQueue;

pub use reactor::{
    current_reactor, reactor_times, register_poller, unregister_poller, PollerFn, PollerId,
};

/// A message run on a given reactor: the only way state crosses cores.
pub type Msg = Box<dyn FnOnce() + Send>;

/// Messages drained per loop iteration, so a flood of messages cannot starve I/O pollers.
const MAX_MSGS_PER_ITERATION: usize = 64;

/// How the reactors are started; mirrors SPDK's app options.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Core ids, one reactor each (from `-m`).
    pub cores: Vec<usize>,
    /// Sleep when idle instead of spinning (`--interrupt-mode`).
    pub interrupt_mode: bool,
    /// Pin each reactor thread to its core; tests leave it off to share the machine.
    pub pin_threads: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            cores: vec![0],
            interrupt_mode: true,
            pin_threads: false,
        }
    }
}

pub(crate) struct Mailbox {
    queue: SegQueue<Msg>,
    eventfd: i32,
    sleeping: AtomicBool,
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        // SAFETY: the eventfd is owned by this mailbox alone.
        unsafe { libc::close(self.eventfd) };
    }
}

/// State every reactor of one runtime shares.
pub(crate) struct Shared {
    cores: Vec<usize>,
    mailboxes: Vec<Mailbox>,
    stopping: AtomicBool,
    interrupt_mode: bool,
    contexts: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Shared {
    fn send(&self, reactor: usize, msg: Msg) {
        let mailbox = &self.mailboxes[reactor];
        mailbox.queue.push(msg);
        if mailbox.sleeping.load(Ordering::SeqCst) {
            let one = 1u64;
            // SAFETY: writing 8 bytes from a u64 to our own eventfd.
            unsafe { libc::write(mailbox.eventfd, (&one as *const u64).cast(), 8) };
        }
    }
}

/// A handle to a running set of reactors. Cheap to clone; several runtimes may live in one
/// process (each test has its own), and everything registered lives in its runtime.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Runtime {
    /// Starts one reactor thread per core of `opts.cores`.
    pub fn start(opts: RuntimeOptions) -> std::io::Result<Runtime> {
        let mut mailboxes = Vec::with_capacity(opts.cores.len());
        for _ in &opts.cores {
            // SAFETY: plain syscall; the fd is owned by the mailbox.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            mailboxes.push(Mailbox {
                queue: SegQueue::new(),
                eventfd: fd,
                sleeping: AtomicBool::new(false),
            });
        }
        let shared = Arc::new(Shared {
            cores: opts.cores.clone(),
            mailboxes,
            stopping: AtomicBool::new(false),
            interrupt_mode: opts.interrupt_mode,
            contexts: Mutex::new(HashMap::new()),
        });
        let mut threads = Vec::new();
        for (index, &core) in opts.cores.iter().enumerate() {
            let shared = shared.clone();
            let pin = opts.pin_threads;
            let handle = std::thread::Builder::new()
                .name(format!("reactor_{core}"))
                .spawn(move || {
                    if pin {
                        pin_to_core(core);
                    }
                    reactor::run(shared, index)
                })?;
            threads.push(handle);
        }
        tracing::info!(
            cores = ?opts.cores,
            interrupt_mode = opts.interrupt_mode,
            "reactors started"
        );
        Ok(Runtime {
            shared,
            threads: Arc::new(Mutex::new(threads)),
        })
    }

    /// The runtime the calling reactor belongs to.
    pub fn current() -> Option<Runtime> {
        reactor::try_local().map(|l| Runtime {
            shared: l.shared.clone(),
            threads: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Number of reactors.
    pub fn num_reactors(&self) -> usize {
        self.shared.cores.len()
    }

    /// The core id reactor `index` runs on.
    pub fn core_of(&self, index: usize) -> usize {
        self.shared.cores[index]
    }

    /// Whether idle reactors sleep.
    pub fn interrupt_mode(&self) -> bool {
        self.shared.interrupt_mode
    }

    /// Whether reactor `index` sleeps waiting for work (interrupt mode): lets a caller wait
    /// for that state (to exercise a wake-up) instead of sleeping and hoping it was reached.
    pub fn reactor_asleep(&self, index: usize) -> bool {
        self.shared.mailboxes[index].sleeping.load(Ordering::SeqCst)
    }

    /// Runs `msg` on reactor `index`, after the messages already queued for it (FIFO per
    /// sender).
    pub fn send_msg(&self, index: usize, msg: impl FnOnce() + Send + 'static) {
        self.shared.send(index, Box::new(msg));
    }

    /// Runs `f` on reactor `index` and waits for its result: for control code and tests that
    /// live outside the reactors. Never call it from a reactor thread (it would wait on itself).
    pub fn run_on<R: Send + 'static>(
        &self,
        index: usize,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        debug_assert!(current_reactor().is_none(), "run_on called from a reactor");
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send_msg(index, move || {
            let _ = tx.send(f());
        });
        rx.recv().expect("reactor stopped before answering")
    }

    /// The runtime-wide instance of `T`, created on first use: how layers above keep their
    /// registries per runtime rather than per process.
    pub fn context<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut map = self
            .shared
            .contexts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone()
            .downcast::<T>()
            .expect("context type mismatch")
    }

    /// Asks every reactor to finish its queued messages and exit, and waits for the threads.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for index in 0..self.num_reactors() {
            self.shared.send(index, Box::new(|| {}));
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn pin_to_core(core: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(core, "could not pin reactor thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn runtime(n: usize) -> Runtime {
        Runtime::start(RuntimeOptions {
            cores: (0..n).map(|i| i % 2).collect(),
            interrupt_mode: true,
            pin_threads: false,
        })
        .unwrap()
    }

    #[test]
    fn messages_from_one_sender_run_in_order() {
        let rt = runtime(1);
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..1000 {
            let tx = tx.clone();
            rt.send_msg(0, move || tx.send(i).unwrap());
        }
        let got: Vec<i32> = (0..1000).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        rt.stop();
    }

    #[test]
    fn cross_core_messages_reach_the_named_reactor() {
        let rt = runtime(2);
        let rt2 = rt.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        rt.send_msg(0, move || {
            assert_eq!(current_reactor(), Some(0));
            rt2.send_msg(1, move || tx.send(current_reactor()).unwrap());
        });
        assert_eq!(rx.recv().unwrap(), Some(1));
        rt.stop();
    }

    #[test]
    fn timed_poller_runs_and_unregisters_itself() {
        let rt = runtime(1);
        let count = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let c = count.clone();
        rt.send_msg(0, move || {
            let id = std::rc::Rc::new(std::cell::Cell::new(None));
            let id2 = id.clone();
            let pid = register_poller(
                Box::new(move || {
                    if c.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                        unregister_poller(id2.get().unwrap());
                        tx.send(()).unwrap();
                    }
                    1
                }),
                Some(std::time::Duration::from_millis(2)),
                None,
            );
            id.set(Some(pid));
        });
        rx.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(count.load(Ordering::SeqCst), 3);
        rt.stop();
    }

    #[test]
    fn contexts_are_per_runtime() {
        #[derive(Default)]
        struct Counter(AtomicUsize);
        let a = runtime(1);
        let b = runtime(1);
        a.context::<Counter>().0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(a.context::<Counter>().0.load(Ordering::SeqCst), 1);
        assert_eq!(b.context::<Counter>().0.load(Ordering::SeqCst), 0);
        a.stop();
        b.stop();
    }
}
