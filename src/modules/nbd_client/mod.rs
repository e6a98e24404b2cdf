//! The NBD client bdev: a remote export as a bdev, so a quorum can put its children on other
//! hosts (QEMU's replicated set-ups do the same through its `nbd` driver). Files: `uri`
//! (libnbd/QEMU URIs), `handshake` (connect and negotiate, blocking, off the reactors),
//! `conn` (one connection's data path on its reactor), `reactor` (a reactor's connections,
//! I/O timeout, reconnects), `relay` (I/O of reactors without a connection), this file (the
//! bdev, its options, state and configuration).
//!
//! Connections: one when the server does not allow more (`NBD_FLAG_CAN_MULTI_CONN` absent:
//! flushes on one connection would not cover writes on another), on one reactor, which the
//! other reactors reach through the relay; with MULTI_CONN, `num_connections` of them (default
//! one per reactor), spread over the reactors, each reactor using its own.

mod conn;
mod handshake;
mod reactor;
mod relay;
pub mod uri;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use self::conn::Conn;
use self::handshake::Negotiated;
use self::reactor::{ClientReactor, Connected};
use self::uri::NbdUri;
use crate::bdev::{
    Bdev, BdevBackend, BdevChannel, BdevError, BdevRegistry, BdevSpec, IoHandle, IoType,
};
use crate::nbd::proto;
use crate::runtime::channel::on_every_reactor;
use crate::runtime::{current_reactor, Runtime};

/// Product name of NBD client bdevs.
pub const PRODUCT_NAME: &str = "NBD client disk";
/// Default bound of a request without reply before the connection is declared dead.
pub const DEFAULT_IO_TIMEOUT_MS: u64 = 30_000;
/// Default bound of connecting and negotiating (QEMU's `open-timeout` is 0 or seconds).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Most connections one bdev opens.
pub const MAX_CONNECTIONS: u32 = 16;
/// Longest timeout accepted (an hour): beyond it a timeout no longer bounds anything.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Limits on what `bdev_nbd_client_create` may reach and wait for, per runtime (a
/// [`Runtime::context`]). The daemon sets none; the fuzz fixtures do, so that a mutated URI
/// never leaves this machine and a silent peer cannot hold an input past the fuzzer's hang
/// limit.
#[derive(Default)]
pub struct ConnectLimits {
    local_only: AtomicBool,
    max_connect_timeout_ms: AtomicU64,
}

impl ConnectLimits {
    /// Allows only Unix sockets and loopback hosts, each connect bounded by `max_ms`.
    pub fn restrict(&self, max_ms: u64) {
        self.local_only.store(true, Ordering::Relaxed);
        self.max_connect_timeout_ms.store(max_ms, Ordering::Relaxed);
    }

    fn apply(&self, uri: &NbdUri, options: &mut NbdClientOptions) -> Result<(), BdevError> {
        if !self.local_only.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let uri::Endpoint::Tcp { host, .. } = &uri.endpoint {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
            if !loopback {
                return Err(refuse(format!("uri: host {host} is not allowed here")));
            }
        }
        let max = self.max_connect_timeout_ms.load(Ordering::Relaxed);
        options.connect_timeout_ms = options.connect_timeout_ms.min(max);
        Ok(())
    }
}

/// What `bdev_nbd_client_create` takes.
#[derive(Debug, Clone)]
pub struct NbdClientOptions {
    /// The bdev's name.
    pub name: String,
    /// The NBD URI, as given (kept for `save_config`).
    pub uri: String,
    /// Block size; None: 512, or the server's minimum when larger.
    pub block_size: Option<u32>,
    /// Connections when the server allows several; None: one per reactor.
    pub num_connections: Option<u32>,
    /// Request without reply for this long: the connection is dead. 0: no limit.
    pub io_timeout_ms: u64,
    /// Bound of one connect + handshake.
    pub connect_timeout_ms: u64,
    /// Identity; random when None.
    pub uuid: Option<Uuid>,
}

/// The options in the form the data path uses.
pub(crate) struct Timeouts {
    io_timeout: Option<Duration>,
    connect_timeout: Duration,
}

/// What one connection reports in `driver_specific`; changed only when its state does.
#[derive(Default)]
struct ConnStatus {
    reactor: usize,
    up: bool,
    since: Option<Instant>,
    reconnects: u64,
    failed_attempts: u64,
    protocol_errors: u64,
    last_error: Option<String>,
}

impl ConnStatus {
    fn connected(&mut self) {
        if self.since.is_some() {
            self.reconnects += 1;
        }
        self.up = true;
        self.since = Some(Instant::now());
    }

    fn lost(&mut self, why: &str) {
        self.up = false;
        self.since = Some(Instant::now());
        self.last_error = Some(why.to_string());
    }

    fn failed_attempt(&mut self, why: &str) {
        self.failed_attempts += 1;
        self.last_error = Some(why.to_string());
    }

    fn protocol_error(&mut self) {
        self.protocol_errors += 1;
    }

    fn json(&self) -> Value {
        json!({
            "reactor": self.reactor,
            "state": if self.up { "connected" } else { "reconnecting" },
            "seconds_in_state": self.since.map_or(0, |t| t.elapsed().as_secs()),
            "reconnects": self.reconnects,
            "failed_attempts": self.failed_attempts,
            "protocol_errors": self.protocol_errors,
            "last_error": self.last_error,
        })
    }
}

/// State every reactor's part of one NBD client bdev shares.
pub(crate) struct ClientShared {
    /// Process-unique, to find this bdev's connections on a reactor.
    id: u64,
    name: String,
    uri: NbdUri,
    options: NbdClientOptions,
    opts: Timeouts,
    /// What the first connection negotiated; later ones must match it.
    first: Negotiated,
    block_size: u32,
    num_blocks: u64,
    rt: Runtime,
    /// The reactor of each connection.
    placement: Vec<usize>,
    statuses: Vec<Mutex<ConnStatus>>,
}

impl ClientShared {
    fn status(&self, index: usize) -> MutexGuard<'_, ConnStatus> {
        self.statuses[index]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The reactor that serves reactors without a connection of their own.
    fn home(&self) -> usize {
        self.placement[0]
    }
}

/// One NBD client bdev.
pub struct NbdClientBdev {
    shared: Arc<ClientShared>,
}

impl BdevBackend for NbdClientBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    /// Read, write, flush always (a server without flush has no cache to flush); trim and
    /// write_zeroes as the server announced them.
    fn io_type_supported(&self, io_type: IoType) -> bool {
        let n = &self.shared.first;
        match io_type {
            IoType::Read | IoType::Write | IoType::Flush => true,
            IoType::Unmap => n.has(proto::FLAG_SEND_TRIM),
            IoType::WriteZeroes => n.has(proto::FLAG_SEND_WRITE_ZEROES),
            IoType::Reset | IoType::Zcopy => false,
        }
    }

    fn create_channel(&self) -> Result<Rc<dyn BdevChannel>, BdevError> {
        let reactor = ClientReactor::get().map_err(BdevError::Invalid)?;
        let conns = reactor.conns_of(self.shared.id);
        if conns.is_empty() {
            return Ok(relay::RelayChannel::new(&self.shared)?);
        }
        Ok(Rc::new(NbdChannel { reactor, conns }))
    }

    fn driver_specific(&self) -> Value {
        let s = &self.shared;
        let n = &s.first;
        let conns: Vec<Value> = (0..s.statuses.len()).map(|i| s.status(i).json()).collect();
        let up = (0..s.statuses.len()).filter(|&i| s.status(i).up).count();
        let state = match up {
            0 => "disconnected",
            u if u == conns.len() => "connected",
            _ => "degraded",
        };
        json!({ "nbd_client": {
            "uri": s.options.uri,
            "export": s.uri.export,
            "state": state,
            "size": n.size,
            "read_only": n.has(proto::FLAG_READ_ONLY),
            "flush": n.has(proto::FLAG_SEND_FLUSH),
            "fua": n.has(proto::FLAG_SEND_FUA),
            "trim": n.has(proto::FLAG_SEND_TRIM),
            "write_zeroes": n.has(proto::FLAG_SEND_WRITE_ZEROES),
            "multi_conn": n.has(proto::FLAG_CAN_MULTI_CONN),
            "structured_replies": n.structured,
            "server_min_block": n.min_block,
            "max_request_bytes": n.max_payload,
            "io_timeout_ms": s.options.io_timeout_ms,
            "connect_timeout_ms": s.options.connect_timeout_ms,
            "connections": conns,
        }})
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<(&'static str, Value)> {
        let o = &self.shared.options;
        let mut params = json!({
            "name": bdev.name(),
            "uri": o.uri,
            "uuid": bdev.uuid().to_string(),
            "io_timeout_ms": o.io_timeout_ms,
            "connect_timeout_ms": o.connect_timeout_ms,
        });
        if let Some(b) = o.block_size {
            params["block_size"] = b.into();
        }
        if let Some(n) = o.num_connections {
            params["num_connections"] = n.into();
        }
        Some(("bdev_nbd_client_create", params))
    }

    /// Closes every connection on its reactor; I/O still held fails with ENODEV.
    fn destruct(&self) {
        let id = self.shared.id;
        on_every_reactor(
            &self.shared.rt,
            move || {
                if let Some(r) = ClientReactor::existing() {
                    r.remove(id);
                }
            },
            || {},
        );
    }
}

/// The calling reactor's way to the server: its own connections.
struct NbdChannel {
    reactor: Rc<ClientReactor>,
    conns: Vec<Rc<Conn>>,
}

impl NbdChannel {
    /// The connection for the next I/O: the least busy one that is up (the first when none
    /// is, which fails the I/O at once).
    fn pick(&self) -> &Rc<Conn> {
        if self.conns.len() == 1 {
            return &self.conns[0];
        }
        self.conns
            .iter()
            .filter(|c| c.is_up())
            .min_by_key(|c| c.busy())
            .unwrap_or(&self.conns[0])
    }
}

impl BdevChannel for NbdChannel {
    fn submit(&self, io: IoHandle) {
        let conn = self.pick();
        if conn.submit(io) {
            self.reactor.mark(conn);
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Serves relayed I/O on the home reactor: the first connection of bdev `id` there.
pub(super) fn submit_local(id: u64, io: IoHandle) {
    let Ok(reactor) = ClientReactor::get() else {
        return io.complete(Err(libc::ENODEV));
    };
    match reactor.first_conn_of(id) {
        Some(conn) => {
            if conn.submit(io) {
                reactor.mark(&conn);
            }
        }
        None => io.complete(Err(libc::ENODEV)),
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Where connection `i` of `n` lives, starting from a reactor chosen round-robin per bdev so
/// that single-connection bdevs spread over the reactors.
fn placement(reactors: usize, n: usize) -> Vec<usize> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let first = NEXT.fetch_add(1, Ordering::Relaxed) as usize % reactors;
    (0..n).map(|i| (first + i) % reactors).collect()
}

fn refuse(e: impl std::fmt::Display) -> BdevError {
    BdevError::Invalid(e.to_string())
}

/// The block size of the bdev: what the user asked (checked against the server), else 512
/// or the server's minimum when larger.
fn block_size(opts: &NbdClientOptions, n: &Negotiated) -> Result<u32, BdevError> {
    let chosen = opts.block_size.unwrap_or(512.max(n.min_block));
    if !chosen.is_multiple_of(n.min_block) || chosen > n.max_payload {
        return Err(refuse(format!(
            "block_size {chosen} does not suit the server (minimum {}, maximum request {})",
            n.min_block, n.max_payload
        )));
    }
    Ok(chosen)
}

/// `bdev_nbd_client_create`: connects (off the reactors), then registers the bdev; `done`
/// runs on reactor 0 with the bdev or why it could not be made. Refused without connecting:
/// a taken name, a bad URI or option.
pub fn create(
    rt: &Runtime,
    mut options: NbdClientOptions,
    done: impl FnOnce(Result<Arc<Bdev>, BdevError>) + Send + 'static,
) {
    if let Err(e) = check(rt, &options) {
        return done(Err(e));
    }
    let uri = match NbdUri::parse(&options.uri) {
        Ok(uri) => uri,
        Err(why) => return done(Err(refuse(format!("uri: {why}")))),
    };
    if let Err(e) = rt.context::<ConnectLimits>().apply(&uri, &mut options) {
        return done(Err(e));
    }
    let rt2 = rt.clone();
    let spawned = std::thread::Builder::new()
        .name("nbd-connect".into())
        .spawn(move || {
            let made = connect_all(&rt2, uri, options);
            let rt3 = rt2.clone();
            rt2.send_msg(0, move || match made {
                Ok((shared, sockets)) => install(&rt3, shared, sockets, done),
                Err(e) => done(Err(e)),
            });
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the NBD connect thread");
    }
}

fn check(rt: &Runtime, o: &NbdClientOptions) -> Result<(), BdevError> {
    crate::modules::file_common::check_name_free(rt, &o.name)?;
    if o.num_connections
        .is_some_and(|n| n == 0 || n > MAX_CONNECTIONS)
    {
        return Err(refuse(format!(
            "num_connections must be 1 to {MAX_CONNECTIONS}"
        )));
    }
    if o.connect_timeout_ms == 0 || o.connect_timeout_ms > MAX_TIMEOUT_MS {
        return Err(refuse(format!(
            "connect_timeout_ms must be 1 to {MAX_TIMEOUT_MS}"
        )));
    }
    if o.io_timeout_ms > MAX_TIMEOUT_MS {
        return Err(refuse(format!(
            "io_timeout_ms must be 0 (no limit) to {MAX_TIMEOUT_MS}"
        )));
    }
    Ok(())
}

/// The connect thread's work: the first connection (its failure fails the create), then the
/// others MULTI_CONN allows (their failures only start them down, to be retried).
fn connect_all(
    rt: &Runtime,
    uri: NbdUri,
    options: NbdClientOptions,
) -> Result<(Arc<ClientShared>, Vec<Connected>), BdevError> {
    let connect_timeout = Duration::from_millis(options.connect_timeout_ms);
    let (fd, first) = handshake::connect(&uri, connect_timeout)
        .map_err(|e| refuse(format!("cannot connect to {}: {e}", options.uri)))?;
    let block_size = block_size(&options, &first)?;
    let reactors = rt.num_reactors();
    let n = if first.has(proto::FLAG_CAN_MULTI_CONN) {
        options.num_connections.unwrap_or(reactors as u32) as usize
    } else {
        if options.num_connections.is_some_and(|n| n > 1) {
            tracing::warn!(
                bdev = options.name,
                "server does not allow multiple connections (no NBD_FLAG_CAN_MULTI_CONN); using one"
            );
        }
        1
    };
    let placement = placement(reactors, n);
    let statuses = placement
        .iter()
        .map(|&reactor| {
            Mutex::new(ConnStatus {
                reactor,
                ..Default::default()
            })
        })
        .collect();
    let shared = Arc::new(ClientShared {
        id: next_id(),
        name: options.name.clone(),
        num_blocks: first.size / block_size as u64,
        opts: Timeouts {
            io_timeout: (options.io_timeout_ms > 0)
                .then(|| Duration::from_millis(options.io_timeout_ms)),
            connect_timeout,
        },
        uri,
        options,
        first,
        block_size,
        rt: rt.clone(),
        placement,
        statuses,
    });
    let mut sockets = vec![Ok((fd, first))];
    sockets.extend((1..n).map(|_| reactor::reconnect(&shared)));
    Ok((shared, sockets))
}

/// On reactor 0: hands each connection to its reactor, then registers the bdev (so no I/O
/// can arrive before the connections are in place); `done` gets the result.
fn install(
    rt: &Runtime,
    shared: Arc<ClientShared>,
    sockets: Vec<Connected>,
    done: impl FnOnce(Result<Arc<Bdev>, BdevError>) + Send + 'static,
) {
    if !shared.first.size.is_multiple_of(shared.block_size as u64) {
        tracing::warn!(
            bdev = shared.name,
            size = shared.first.size,
            block_size = shared.block_size,
            "export size is not a multiple of the block size; the tail is not exposed"
        );
    }
    let spec = BdevSpec {
        name: shared.name.clone(),
        block_size: shared.block_size,
        num_blocks: shared.num_blocks,
        uuid: shared.options.uuid,
    };
    let bdev = match Bdev::new(
        spec,
        Box::new(NbdClientBdev {
            shared: shared.clone(),
        }),
    ) {
        Ok(b) => b,
        Err(e) => return done(Err(e)),
    };
    let pending = Arc::new(Mutex::new(
        sockets
            .into_iter()
            .map(Some)
            .collect::<Vec<Option<Connected>>>(),
    ));
    let s2 = shared.clone();
    let rt2 = rt.clone();
    on_every_reactor(
        rt,
        move || {
            let me = current_reactor().unwrap_or(0);
            let Ok(reactor) = ClientReactor::get() else {
                return;
            };
            for index in (0..s2.placement.len()).filter(|&i| s2.placement[i] == me) {
                let taken = pending.lock().unwrap_or_else(|e| e.into_inner())[index].take();
                if let Some(initial) = taken {
                    reactor.install(&s2, index, initial);
                }
            }
        },
        move || match BdevRegistry::of(&rt2).register(&rt2, bdev) {
            Ok(bdev) => {
                tracing::info!(
                    bdev = shared.name,
                    uri = shared.options.uri,
                    connections = shared.placement.len(),
                    "NBD client bdev created"
                );
                done(Ok(bdev))
            }
            Err(e) => {
                let id = shared.id;
                on_every_reactor(
                    &rt2,
                    move || {
                        if let Some(r) = ClientReactor::existing() {
                            r.remove(id);
                        }
                    },
                    move || done(Err(e)),
                );
            }
        },
    );
}
