//! The RPC target: the input is what a client writes on the JSON-RPC socket. The real server
//! (framing, request checks, batches, dispatch) and every method's handler with its params
//! run as in the daemon, on the daemon's own listener; what one input built is torn down
//! before the next. The seeds in `fuzz/corpus/rpc/` are streams captured from `spdk-rpc`.

use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use serde_json::Value;

use super::{converse, watchdog, Fixture};
use crate::control::server::{RpcListener, RpcServer, SocketAccess};

struct RpcFixture {
    fixture: Fixture,
    socket: std::path::PathBuf,
    _server: RpcServer,
}

fn fixture() -> &'static RpcFixture {
    static FIXTURE: OnceLock<RpcFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let fixture = Fixture::start("rpc");
        let socket = fixture.scratch().join("rpc.sock");
        let listener = RpcListener::bind(&socket, SocketAccess::Owner)
            .expect("RPC socket for the fuzz target");
        let server = listener
            .serve(fixture.ctx.clone())
            .expect("RPC server for the fuzz target");
        RpcFixture {
            fixture,
            socket,
            _server: server,
        }
    })
}

/// One client connection sending `data`; the server must answer with JSON-RPC 2.0 responses
/// only, and close its side once the client half-closed and every request was answered.
pub fn fuzz_rpc_stream(data: &[u8]) {
    let f = fixture();
    let _watch = watchdog("rpc");
    let stream = UnixStream::connect(&f.socket).expect("the RPC server accepts");
    let answer = converse(stream, data);
    if answer.total == answer.head.len() {
        check_responses(&answer.head);
    }
    f.fixture.reset();
}

/// Every value the server sent is a response object, or a batch of them.
fn check_responses(bytes: &[u8]) {
    for value in serde_json::Deserializer::from_slice(bytes).into_iter::<Value>() {
        let value = value.expect("the RPC server sent something that is not JSON");
        let responses = match &value {
            Value::Array(items) => items.as_slice(),
            single => std::slice::from_ref(single),
        };
        for r in responses {
            assert!(
                r["jsonrpc"] == "2.0" && (r.get("result").is_some() != r.get("error").is_some()),
                "not a JSON-RPC 2.0 response: {r}"
            );
        }
    }
}
