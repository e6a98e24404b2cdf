//! A vhost-user-blk load generator on libblkio (the `blkio` crate), for `bench/vhost_blk.sh`:
//! one poll queue, a fixed queue depth of random 4 KiB-aligned reads or writes, for a given
//! time; prints `IOPS <n>`. The same client drives `quorum-tgt` and qemu-storage-daemon, so
//! the two daemons are compared through the same libblkio code path.
//!
//! Usage: vhost_load SOCKET randread|randwrite [SECONDS] [QD] [BS]

use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use blkio::{Blkio, Completion, ReqFlags};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: vhost_load SOCKET randread|randwrite [SECONDS] [QD] [BS]");
        std::process::exit(2);
    }
    let write = match args[2].as_str() {
        "randread" => false,
        "randwrite" => true,
        other => {
            eprintln!("unknown workload {other}");
            std::process::exit(2);
        }
    };
    let number = |i: usize, default: u64| args.get(i).map_or(default, |a| a.parse().unwrap());
    let seconds = number(3, 10);
    let qd = number(4, 32) as usize;
    let bs = number(5, 4096) as usize;

    let mut b = Blkio::new("virtio-blk-vhost-user").expect("libblkio driver");
    b.set_str("path", &args[1]).expect("path");
    b.connect().expect("connect");
    b.set_i32("num-queues", 0).unwrap();
    b.set_i32("num-poll-queues", 1).unwrap();
    let mut started = b.start().expect("start");
    let capacity = b.get_u64("capacity").unwrap();
    let region = b.alloc_mem_region(qd * bs).expect("buffer memory");
    b.map_mem_region(&region).expect("map buffers");
    let q = &mut started.poll_queues[0];
    let blocks = capacity / bs as u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_offset = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % blocks) * bs as u64
    };
    let submit = |q: &mut blkio::Blkioq, slot: usize, offset: u64| {
        let buf = (region.addr + slot * bs) as *mut u8;
        if write {
            q.write(offset, buf, bs, slot, ReqFlags::empty());
        } else {
            q.read(offset, buf, bs, slot, ReqFlags::empty());
        }
    };
    for slot in 0..qd {
        submit(q, slot, next_offset());
    }
    let mut completions: Vec<MaybeUninit<Completion>> =
        (0..qd).map(|_| MaybeUninit::uninit()).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut done = 0u64;
    while Instant::now() < deadline {
        let n = q.do_io(&mut completions, 1, None, None).expect("do_io");
        for c in &completions[..n] {
            // SAFETY: do_io initialised the first n completions.
            let c = unsafe { c.assume_init_ref() };
            assert_eq!(c.ret, 0, "I/O failed");
            submit(q, c.user_data, next_offset());
        }
        done += n as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Drain what is still in flight before disconnecting.
    let mut left = qd;
    while left > 0 {
        left -= q.do_io(&mut completions, 1, None, None).expect("do_io");
    }
    println!("IOPS {}", (done as f64 / elapsed) as u64);
}
