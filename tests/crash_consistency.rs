//! Crash consistency: a quorum of file children (two aio, one uring, vote_threshold 2)
//! exported over NBD takes a pipelined workload of 4 KiB writes, some with FUA, and flushes;
//! the daemon is killed with SIGKILL at a random moment (after a random number of replies,
//! with I/O in flight), several rounds, each restarted from the config `save_config` wrote
//! in the first. After every kill the backing files are read directly:
//! - every write made durable (acknowledged with FUA, or acknowledged before a FLUSH that was
//!   acknowledged) is on every child, byte for byte;
//! - every other acknowledged write is on at least vote_threshold children;
//!
//! and after each restart the durable blocks read back the same through the quorum over NBD.
//! A SIGKILL keeps the page cache, so this proves the daemon acknowledges nothing before the
//! children's writes completed and comes back from its saved config after a crash; it does
//! not simulate power loss. The rounds are seeded: a failure prints the seed, and
//! `QUORUM_CRASH_SEED=<seed>` replays the same workloads and kill points.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};

use common::target::{Target, PATIENCE};
use quorum_bdev::exports::nbd::proto::{self, Command, Request};
use quorum_bdev::fuzzing::nbd::opening;

const BLOCK: usize = 4096;
const BLOCKS: u64 = 1024;
const CHILDREN: [&str; 3] = ["a.img", "u.img", "c.img"];
const VOTE_THRESHOLD: usize = 2;
const ROUNDS: u64 = 6;
const QUEUE_DEPTH: usize = 16;
const EXPORT: &str = "crash";

/// What the client knows about one block.
#[derive(Clone, Default)]
struct BlockState {
    /// Bytes every child must hold: the last write to the block, made durable.
    durable: Option<Vec<u8>>,
    /// The last write to the block was acknowledged (not necessarily flushed): these bytes
    /// must be on at least vote_threshold children.
    acknowledged: Option<Vec<u8>>,
}

/// A request the client is waiting for.
enum Pending {
    Write {
        block: u64,
        fua: bool,
        data: Vec<u8>,
    },
    /// Covers the writes acknowledged before it was sent.
    Flush { covers: Vec<(u64, Vec<u8>)> },
}

/// The client side of one round: a minimal pipelined NBD client with the durability model.
struct Workload {
    stream: UnixStream,
    blocks: Vec<BlockState>,
    pending: HashMap<u64, Pending>,
    /// Acknowledged writes no acknowledged flush has covered yet.
    unflushed: Vec<(u64, Vec<u8>)>,
    next_handle: u64,
    replies: usize,
    /// Unparsed reply bytes.
    input: Vec<u8>,
}

impl Workload {
    fn connect(socket: &Path, blocks: Vec<BlockState>) -> Workload {
        let mut stream = UnixStream::connect(socket).expect("NBD socket");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(&opening(EXPORT, false)).unwrap();
        let mut w = Workload {
            stream,
            blocks,
            pending: HashMap::new(),
            unflushed: Vec::new(),
            next_handle: 1,
            replies: 0,
            input: Vec::new(),
        };
        w.read_exact_input(18);
        assert_eq!(w.take(18), proto::greeting(), "greeting");
        // Option replies until the final ACK of NBD_OPT_GO.
        loop {
            w.read_exact_input(20);
            let head = w.take(20);
            let reply_type = u32::from_be_bytes(head[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(head[16..20].try_into().unwrap()) as usize;
            w.read_exact_input(len);
            w.take(len);
            assert!(reply_type < 1 << 31, "NBD_OPT_GO refused: {reply_type:#x}");
            if reply_type == proto::REP_ACK {
                return w;
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        self.input.drain(..n).collect()
    }

    /// Reads until `n` bytes are buffered; false if the server closed first.
    fn fill(&mut self, n: usize) -> bool {
        let mut chunk = [0u8; 65536];
        while self.input.len() < n {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(k) => self.input.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return false,
                Err(e) => panic!("NBD reply: {e}"),
            }
        }
        true
    }

    fn read_exact_input(&mut self, n: usize) {
        assert!(self.fill(n), "the server closed during the handshake");
    }

    fn send(&mut self, command: Command, flags: u16, offset: u64, len: u32, payload: &[u8]) -> u64 {
        let handle = self.next_handle;
        self.next_handle += 1;
        let req = Request {
            flags,
            command,
            handle,
            offset,
            len,
        };
        self.stream.write_all(&req.encode()).unwrap();
        self.stream.write_all(payload).unwrap();
        handle
    }

    fn write(&mut self, block: u64, fua: bool, data: Vec<u8>) {
        let flags = if fua { proto::CMD_FLAG_FUA } else { 0 };
        let handle = self.send(
            Command::Write,
            flags,
            block * BLOCK as u64,
            BLOCK as u32,
            &data,
        );
        // From now on the block holds the old or the new bytes: nothing is certain.
        self.blocks[block as usize] = BlockState::default();
        self.pending
            .insert(handle, Pending::Write { block, fua, data });
    }

    fn flush(&mut self) {
        let handle = self.send(Command::Flush, 0, 0, 0, &[]);
        let covers = std::mem::take(&mut self.unflushed);
        self.pending.insert(handle, Pending::Flush { covers });
    }

    /// Takes one simple reply and applies it to the model; false once the server is gone.
    fn reply(&mut self) -> bool {
        if !self.fill(16) {
            return false;
        }
        let head = self.take(16);
        let magic = u32::from_be_bytes(head[..4].try_into().unwrap());
        let error = u32::from_be_bytes(head[4..8].try_into().unwrap());
        let handle = u64::from_be_bytes(head[8..16].try_into().unwrap());
        assert_eq!(magic, proto::SIMPLE_REPLY_MAGIC, "reply magic");
        assert_eq!(error, 0, "request {handle} failed");
        self.replies += 1;
        match self
            .pending
            .remove(&handle)
            .expect("a reply to a request sent")
        {
            Pending::Write { block, fua, data } => {
                let state = &mut self.blocks[block as usize];
                state.acknowledged = Some(data.clone());
                if fua {
                    state.durable = Some(data);
                } else {
                    self.unflushed.push((block, data));
                }
            }
            Pending::Flush { covers } => {
                for (block, data) in covers {
                    let state = &mut self.blocks[block as usize];
                    // Only if no later write to the block was sent since.
                    if state.acknowledged.as_ref() == Some(&data) {
                        state.durable = Some(data);
                    }
                }
            }
        }
        true
    }

    fn read_block(&mut self, block: u64) -> Vec<u8> {
        let handle = self.send(Command::Read, 0, block * BLOCK as u64, BLOCK as u32, &[]);
        assert!(self.fill(16 + BLOCK), "the server closed during a read");
        let head = self.take(16);
        assert_eq!(
            u32::from_be_bytes(head[4..8].try_into().unwrap()),
            0,
            "read"
        );
        assert_eq!(u64::from_be_bytes(head[8..16].try_into().unwrap()), handle);
        self.take(BLOCK)
    }
}

fn child_block(dir: &Path, child: &str, block: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(dir.join(child)).unwrap();
    let mut buf = vec![0u8; BLOCK];
    file.read_exact_at(&mut buf, block * BLOCK as u64).unwrap();
    buf
}

/// The first target: children created, the stack set up with spdk-rpc, the config saved.
fn first_start() -> (Target, PathBuf) {
    let target = Target::start();
    let dir = target.dir.path().to_path_buf();
    for child in CHILDREN {
        let file = std::fs::File::create(dir.join(child)).unwrap();
        file.set_len(BLOCKS * BLOCK as u64).unwrap();
    }
    let d = |f: &str| dir.join(f).display().to_string();
    target.rpc_script(&format!(
        "bdev_aio_create {} A0\n\
         bdev_uring_create {} U0\n\
         bdev_aio_create {} C0\n\
         bdev_quorum_create -b Q0 -t {VOTE_THRESHOLD} A0 U0 C0\n\
         nbd_server_start {}\n\
         nbd_export_create Q0 -n {EXPORT}\n",
        d(CHILDREN[0]),
        d(CHILDREN[1]),
        d(CHILDREN[2]),
        d("nbd.sock"),
    ));
    let config = dir.join("config.json");
    std::fs::write(&config, target.rpc_ok(&["save_config"])).unwrap();
    (target, config)
}

#[test]
fn flushed_and_fua_writes_survive_kill_9_on_every_file_child() {
    let seed = std::env::var("QUORUM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen::<u64>());
    eprintln!("crash consistency seed {seed} (replay: QUORUM_CRASH_SEED={seed})");
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut target, config) = first_start();
    let mut blocks = vec![BlockState::default(); BLOCKS as usize];
    for round in 0..ROUNDS {
        let nbd_socket = target.dir.path().join("nbd.sock");
        let mut w = Workload::connect(&nbd_socket, blocks);
        // After a restart, the durable blocks read back through the quorum.
        for block in 0..BLOCKS {
            if let Some(expected) = w.blocks[block as usize].durable.clone() {
                let got = w.read_block(block);
                assert!(
                    got == expected,
                    "seed {seed} round {round}: block {block} reads back different after restart"
                );
            }
        }
        let mut order: Vec<u64> = (0..BLOCKS).collect();
        order.shuffle(&mut rng);
        let mut order = order.into_iter();
        let kill_after = rng.gen_range(10..400);
        while w.replies < kill_after {
            while w.pending.len() < QUEUE_DEPTH {
                if rng.gen_ratio(1, 8) {
                    w.flush();
                } else {
                    let block = order.next().expect("fewer writes than blocks per round");
                    let mut data = vec![0u8; BLOCK];
                    rng.fill_bytes(&mut data);
                    w.write(block, rng.gen_ratio(1, 4), data);
                }
            }
            assert!(w.reply(), "seed {seed} round {round}: the server closed");
        }
        let (status, dir) = target.signal(libc::SIGKILL);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "seed {seed}: {status}"
        );
        // Replies the daemon sent before it died are acknowledgements too.
        while !w.pending.is_empty() && w.reply() {}
        let (mut durable, mut acknowledged) = (0, 0);
        for (block, state) in w.blocks.iter().enumerate() {
            let on_children: Vec<Vec<u8>> = CHILDREN
                .iter()
                .map(|c| child_block(dir.path(), c, block as u64))
                .collect();
            if let Some(expected) = &state.durable {
                durable += 1;
                for (child, got) in CHILDREN.iter().zip(&on_children) {
                    assert!(
                        got == expected,
                        "seed {seed} round {round}: durable block {block} lost on {child}"
                    );
                }
            }
            if let Some(expected) = &state.acknowledged {
                acknowledged += 1;
                let holding = on_children.iter().filter(|got| *got == expected).count();
                assert!(
                    holding >= VOTE_THRESHOLD,
                    "seed {seed} round {round}: acknowledged block {block} on {holding} children"
                );
            }
        }
        eprintln!(
            "round {round}: killed after {} replies; {durable} durable and {acknowledged} \
             acknowledged blocks checked on the files",
            w.replies
        );
        blocks = w.blocks;
        target = Target::start_in(dir, &["-c", config.to_str().unwrap()]);
    }
}
