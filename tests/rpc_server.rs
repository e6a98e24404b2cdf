//! The target daemon and its JSON-RPC server, driven from outside as users drive it: the real
//! `quorum-tgt` binary on a temporary socket, SPDK's own `spdk-rpc` client (installed by
//! scripts/test-all with `pip install spdk`), and raw Unix-socket clients for what a
//! well-behaved client never sends.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::target::{request, spawn, spdk_rpc, wait_exit, Raw, Target, TGT};

#[test]
fn generic_methods_answer_in_spdk_shapes() {
    let t = Target::start();
    let version = t.rpc_json(&["spdk_get_version"]);
    assert!(version["version"]
        .as_str()
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));
    assert_eq!(version["fields"]["minor"], 1);
    assert!(version["fields"]["commit"].is_string());

    let methods = t.rpc_json(&["rpc_get_methods"]);
    let with_flags = t.rpc_json(&["rpc_get_methods", "--current", "--include-aliases"]);
    assert_eq!(methods, with_flags);
    for name in [
        "spdk_get_version",
        "rpc_get_methods",
        "framework_wait_init",
        "framework_get_reactors",
        "framework_get_subsystems",
        "framework_get_config",
        "bdev_wait_for_examine",
        "notify_get_types",
        "notify_get_notifications",
        "bdev_get_bdevs",
        "bdev_get_iostat",
        "bdev_malloc_create",
        "bdev_malloc_delete",
        "bdev_null_create",
        "bdev_null_delete",
    ] {
        assert!(methods.as_array().unwrap().contains(&json!(name)), "{name}");
    }

    t.rpc_ok(&["framework_wait_init"]);
    t.rpc_ok(&["bdev_wait_for_examine"]);

    let reactors = t.rpc_json(&["framework_get_reactors"]);
    assert!(reactors["tick_rate"].as_u64().unwrap() > 0);
    let list = reactors["reactors"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["lcore"], 0);
    assert_eq!(list[0]["in_interrupt"], true);
    assert!(list[0]["busy"].is_u64() && list[0]["idle"].is_u64());
    assert_eq!(list[0]["lw_threads"][0]["name"], "app_thread");
    assert_eq!(list[0]["lw_threads"][0]["cpumask"], "0x1");

    let subsystems = t.rpc_json(&["framework_get_subsystems"]);
    assert_eq!(
        subsystems,
        json!([
            {"subsystem": "bdev", "depends_on": []},
            {"subsystem": "nbd", "depends_on": ["bdev"]},
            {"subsystem": "vhost_blk", "depends_on": ["bdev"]}
        ])
    );
    let nbd = t.rpc_json(&["save_subsystem_config", "-n", "nbd"]);
    assert_eq!(nbd, json!({"subsystem": "nbd", "config": []}));
    let err = t.rpc_err(&["save_subsystem_config", "-n", "iscsi"]);
    assert_eq!(err["code"], -32602);
    assert!(err["message"].as_str().unwrap().contains("iscsi"));

    let types = t.rpc_json(&["notify_get_types"]);
    assert_eq!(
        types,
        json!([
            "bdev_register",
            "bdev_unregister",
            "quorum_report_bad",
            "quorum_failure"
        ])
    );
}

#[test]
fn bdevs_are_created_listed_and_deleted_with_spdk_rpc() {
    let t = Target::start();
    let uuid = "5b4c3f6e-1f0a-4d7e-9d51-6a2b8f0e7c11";
    assert_eq!(
        t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "-u", uuid, "2", "512"])
            .trim(),
        "M0"
    );
    assert_eq!(
        t.rpc_ok(&["bdev_malloc_create", "1", "4096"]).trim(),
        "Malloc0"
    );
    assert_eq!(
        t.rpc_ok(&["bdev_null_create", "N0", "1", "512"]).trim(),
        "N0"
    );

    let all = t.rpc_json(&["bdev_get_bdevs"]);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["M0", "Malloc0", "N0"]);
    let m0 = t.rpc_json(&["bdev_get_bdevs", "-b", "M0"]);
    assert_eq!(m0.as_array().unwrap().len(), 1);
    let m0 = &m0[0];
    assert_eq!(m0["uuid"], uuid);
    assert_eq!(m0["block_size"], 512);
    assert_eq!(m0["num_blocks"], 4096);
    assert_eq!(m0["product_name"], "Malloc disk");
    assert_eq!(m0["claimed"], false);
    assert_eq!(m0["aliases"], json!([]));
    assert_eq!(m0["supported_io_types"]["read"], true);
    assert!(m0["driver_specific"].is_object());
    // A bdev can also be found by its UUID, as in SPDK.
    assert_eq!(t.rpc_json(&["bdev_get_bdevs", "-b", uuid])[0]["name"], "M0");

    assert_eq!(t.rpc_err(&["bdev_get_bdevs", "-b", "nope"])["code"], -19);
    assert_eq!(
        t.rpc_err(&["bdev_malloc_create", "-b", "M0", "1", "512"])["code"],
        -17
    );
    assert_eq!(
        t.rpc_err(&["bdev_null_create", "N0", "1", "512"])["code"],
        -17
    );
    // Deleting through another module's method is refused, as SPDK does.
    assert_eq!(t.rpc_err(&["bdev_malloc_delete", "N0"])["code"], -19);
    assert_eq!(t.rpc_err(&["bdev_malloc_create", "1", "500"])["code"], -22);

    t.rpc_ok(&["bdev_malloc_delete", "M0"]);
    t.rpc_ok(&["bdev_null_delete", "N0"]);
    assert_eq!(t.rpc_err(&["bdev_null_delete", "N0"])["code"], -19);
    let left = t.rpc_json(&["bdev_get_bdevs"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["name"], "Malloc0");

    let all = t.rpc_json(&["notify_get_notifications"]);
    let seen: Vec<(String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["type"].as_str().unwrap().to_string(),
                n["ctx"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("bdev_register", "M0"),
        ("bdev_register", "Malloc0"),
        ("bdev_register", "N0"),
        ("bdev_unregister", "M0"),
        ("bdev_unregister", "N0"),
    ];
    assert_eq!(seen, expected.map(|(a, b)| (a.to_string(), b.to_string())));
    let ids: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    let window = t.rpc_json(&[
        "notify_get_notifications",
        "-i",
        &ids[1].to_string(),
        "-n",
        "2",
    ]);
    assert_eq!(window, json!([all[1], all[2]]));
}

#[test]
fn get_bdevs_waits_for_a_bdev_to_appear_until_its_timeout() {
    let t = Target::start();
    let sock = t.sock.clone();
    let creator = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut raw = Raw::from(UnixStream::connect(&sock).unwrap());
        let r = raw.call(request(
            1,
            "bdev_null_create",
            json!({"name": "Late", "num_blocks": 8, "block_size": 512}),
        ));
        assert_eq!(r["result"], "Late");
    });
    let found = t.rpc_json(&["bdev_get_bdevs", "-b", "Late", "-t", "10000"]);
    assert_eq!(found[0]["name"], "Late");
    creator.join().unwrap();
    let start = Instant::now();
    assert_eq!(
        t.rpc_err(&["bdev_get_bdevs", "-b", "Never", "-t", "200"])["code"],
        -19
    );
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn iostat_reports_every_bdev_or_the_named_ones() {
    let t = Target::start();
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "1", "512"]);
    t.rpc_ok(&["bdev_null_create", "N0", "1", "4096"]);
    let all = t.rpc_json(&["bdev_get_iostat"]);
    assert!(all["tick_rate"].as_u64().unwrap() > 0);
    assert!(all["ticks"].as_u64().unwrap() > 0);
    let bdevs = all["bdevs"].as_array().unwrap();
    assert_eq!(bdevs.len(), 2);
    assert_eq!(bdevs[0]["name"], "M0");
    assert_eq!(bdevs[1]["name"], "N0");
    for field in [
        "bytes_read",
        "num_read_ops",
        "bytes_written",
        "num_write_ops",
        "num_unmap_ops",
        "read_latency_ticks",
        "write_latency_ticks",
    ] {
        assert_eq!(bdevs[0][field], 0, "{field}");
    }
    let one = t.rpc_json(&["bdev_get_iostat", "--names", "N0"]);
    assert_eq!(one["bdevs"].as_array().unwrap().len(), 1);
    assert_eq!(one["bdevs"][0]["name"], "N0");
    assert_eq!(
        t.rpc_err(&["bdev_get_iostat", "--names", "M0,zz"])["code"],
        -19
    );
    let per_channel = t.rpc_err(&["bdev_get_iostat", "--names", "M0", "-c"]);
    assert_eq!(per_channel["code"], -32602);
    let mut raw = t.raw();
    let by_name = raw.call(request(3, "bdev_get_iostat", json!({"name": "M0"})));
    assert_eq!(by_name["result"]["bdevs"][0]["name"], "M0");
}

#[test]
fn save_config_then_restart_with_it_gives_the_same_bdevs() {
    let t = Target::start();
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "2", "512"]);
    t.rpc_ok(&["bdev_malloc_create", "1", "4096"]);
    t.rpc_ok(&["bdev_null_create", "N0", "4", "512"]);
    let before = t.bdevs();
    let saved = t.rpc_ok(&["save_config"]);
    let config: Value = serde_json::from_str(&saved).unwrap();
    let bdev_entries = &config["subsystems"][0]["config"];
    assert_eq!(config["subsystems"][0]["subsystem"], "bdev");
    assert_eq!(bdev_entries[3], json!({"method": "bdev_wait_for_examine"}));

    let (status, dir) = t.signal(libc::SIGTERM);
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(!dir.path().join("rpc.sock").exists(), "socket left behind");
    let path = dir.path().join("saved.json");
    std::fs::write(&path, &saved).unwrap();

    let t = Target::start_in(dir, &["-c", path.to_str().unwrap()]);
    let after = t.bdevs();
    let key = |list: &Value| -> Vec<(Value, Value, Value, Value, Value)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["name"].clone(),
                    b["uuid"].clone(),
                    b["block_size"].clone(),
                    b["num_blocks"].clone(),
                    b["product_name"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(key(&after), key(&before));
    assert_eq!(key(&after).len(), 3);
    // Saving again gives the same config: the round trip is stable.
    assert_eq!(
        serde_json::from_str::<Value>(&t.rpc_ok(&["save_config"])).unwrap(),
        config
    );
}

#[test]
fn protocol_errors_get_spdk_codes() {
    let t = Target::start();
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "1", "512"]);
    let mut raw = t.raw();
    let code = |raw: &mut Raw, req: Value| {
        let answer = raw.call(req);
        (
            answer["id"].clone(),
            answer["error"]["code"].clone(),
            answer,
        )
    };

    for (bad, id) in [
        (json!(7), Value::Null),
        (json!("text"), Value::Null),
        (json!({"jsonrpc": "2.0", "id": 1}), json!(1)),
        (json!({"jsonrpc": "2.0", "id": 2, "method": 5}), json!(2)),
        (
            json!({"jsonrpc": "1.0", "id": 3, "method": "spdk_get_version"}),
            json!(3),
        ),
        (
            json!({"jsonrpc": "2.0", "id": 4, "method": "spdk_get_version", "params": 1}),
            json!(4),
        ),
        (
            json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "spdk_get_version"}),
            Value::Null,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 5, "method": "spdk_get_version", "x": 1}),
            json!(5),
        ),
        (json!([]), Value::Null),
    ] {
        let (got_id, got_code, answer) = code(&mut raw, bad.clone());
        assert_eq!(got_code, -32600, "{bad} -> {answer}");
        assert_eq!(got_id, id, "{bad} -> {answer}");
    }

    let (id, c, answer) = code(&mut raw, request(6, "no_such_method", json!({})));
    assert_eq!((id, c), (json!(6), json!(-32601)), "{answer}");
    assert_eq!(answer["error"]["message"], "Method not found");

    let create = |params: Value| request(7, "bdev_malloc_create", params);
    for (params, needle) in [
        (
            json!({"name": "X", "num_blocks": 8, "block_size": 512, "bogus": 1}),
            "bogus",
        ),
        (
            json!({"name": "X", "num_blocks": "8", "block_size": 512}),
            "invalid type",
        ),
        (json!({"name": "X", "block_size": 512}), "num_blocks"),
        (json!([1, 2]), "Invalid parameters"),
    ] {
        let (_, c, answer) = code(&mut raw, create(params.clone()));
        assert_eq!(c, -32602, "{params} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{params}: {message}");
    }
    let (_, c, _) = code(
        &mut raw,
        request(8, "spdk_get_version", json!({"unexpected": true})),
    );
    assert_eq!(c, -32602);
    // Explicit false for flags and nulls for absent optionals are accepted.
    let ok = raw.call(request(
        9,
        "bdev_malloc_create",
        json!({"name": "X", "num_blocks": 8, "block_size": 512, "uuid": null,
               "md_interleave": false, "dif_is_head_of_md": false}),
    ));
    assert_eq!(ok["result"], "X", "{ok}");
    let ok = raw.call(request(
        10,
        "rpc_get_methods",
        json!({"current": false, "include_aliases": false}),
    ));
    assert!(ok["result"].is_array(), "{ok}");
    // String ids are accepted; a request without "jsonrpc": "2.0" is not, as in SPDK.
    let ok = raw.call(json!({"jsonrpc": "2.0", "id": "abc", "method": "framework_wait_init"}));
    assert_eq!(
        (ok["id"].clone(), ok["result"].clone()),
        (json!("abc"), json!(true))
    );
    let no_version = raw.call(json!({"id": "v", "method": "framework_wait_init"}));
    assert_eq!(
        (
            no_version["id"].clone(),
            no_version["error"]["code"].clone()
        ),
        (json!("v"), json!(-32600)),
        "{no_version}"
    );
    let unversioned_create = raw.call(json!({"id": 12, "method": "bdev_null_create",
        "params": {"name": "Unversioned", "num_blocks": 8, "block_size": 512}}));
    assert_eq!(unversioned_create["error"]["code"], -32600);
    let listed = raw.call(request(13, "bdev_get_bdevs", json!({})));
    assert!(
        listed["result"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["name"] != "Unversioned"),
        "a refused request changed nothing: {listed}"
    );

    // A notification gets no response: the next thing read answers the next request.
    raw.send(br#"{"jsonrpc":"2.0","method":"bdev_null_create","params":{"name":"Quiet","num_blocks":8,"block_size":512}}"#);
    raw.send(br#"{"jsonrpc":"2.0","method":"no_such_method"}"#);
    let next = raw.call(request(11, "bdev_get_bdevs", json!({"name": "Quiet"})));
    assert_eq!(next["id"], 11, "{next}");
    assert_eq!(next["result"][0]["name"], "Quiet", "the notification ran");

    // Batches: one array answer, in request order, without the notifications.
    let batch = raw.call(json!([
        request(20, "spdk_get_version", json!(null)),
        {"jsonrpc": "2.0", "method": "framework_wait_init"},
        42,
        request(21, "bdev_get_bdevs", json!({"name": "nope"})),
        request(22, "no_such_method", json!({})),
    ]));
    let items = batch.as_array().unwrap_or_else(|| panic!("{batch}"));
    assert_eq!(items.len(), 4, "{batch}");
    assert_eq!(items[0]["id"], 20);
    assert!(items[0]["result"]["version"].is_string());
    assert_eq!(
        (items[1]["id"].clone(), items[1]["error"]["code"].clone()),
        (Value::Null, json!(-32600))
    );
    assert_eq!(
        (items[2]["id"].clone(), items[2]["error"]["code"].clone()),
        (json!(21), json!(-19))
    );
    assert_eq!(
        (items[3]["id"].clone(), items[3]["error"]["code"].clone()),
        (json!(22), json!(-32601))
    );
    raw.send(br#"[{"jsonrpc":"2.0","method":"framework_wait_init"}]"#);
    let next = raw.call(request(23, "framework_wait_init", json!(null)));
    assert_eq!(next["id"], 23, "an all-notification batch gets no answer");

    // Not JSON: -32700 with a null id, then the connection is closed.
    raw.send(b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": nonsense}");
    raw.expect_error_then_close(-32700);
    assert_eq!(t.bdevs().as_array().unwrap().len(), 3);
}

#[test]
fn framing_accepts_any_layout_and_split() {
    let t = Target::start();
    let mut raw = t.raw();
    // Back to back in one write, no separator, compact then pretty-printed.
    let mut two = serde_json::to_vec(&request(1, "spdk_get_version", json!(null))).unwrap();
    two.extend(serde_json::to_vec_pretty(&request(2, "framework_wait_init", json!({}))).unwrap());
    raw.send(&two);
    assert_eq!(raw.recv()["id"], 1);
    assert_eq!(raw.recv()["id"], 2);
    // One request a byte at a time.
    let text = serde_json::to_vec_pretty(&request(
        3,
        "bdev_null_create",
        json!({"name": "Split \"quoted\" {}", "num_blocks": 16, "block_size": 512}),
    ))
    .unwrap();
    for byte in &text {
        raw.send(std::slice::from_ref(byte));
        std::thread::sleep(Duration::from_micros(200));
    }
    let answer = raw.recv();
    assert_eq!(
        (answer["id"].clone(), answer["result"].clone()),
        (json!(3), json!("Split \"quoted\" {}"))
    );
    // A large but valid request (8 MiB of name) is parsed whole and answered.
    let big = "x".repeat(8 << 20);
    let answer = raw.call(request(4, "bdev_get_bdevs", json!({"name": big})));
    assert_eq!(
        (answer["id"].clone(), answer["error"]["code"].clone()),
        (json!(4), json!(-19))
    );
    // Requests sent before a half-close are still answered.
    raw.send(&serde_json::to_vec(&request(5, "spdk_get_version", json!(null))).unwrap());
    raw.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(raw.recv()["id"], 5);
    assert!(raw.try_recv().is_none());
}

/// Checks the daemon survived and its state did not change.
fn assert_unharmed(t: &mut Target, baseline: &Value, after: &str) {
    assert!(t.alive(), "quorum-tgt died after {after}: {}", t.stderr());
    assert_eq!(&t.bdevs(), baseline, "state changed after {after}");
}

#[test]
fn hostile_input_never_takes_the_daemon_down() {
    let mut t = Target::start();
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "1", "512"]);
    t.rpc_ok(&["bdev_null_create", "N0", "1", "512"]);
    let baseline = t.bdevs();

    // Random bytes (a fixed seed, starting outside any JSON token).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = std::iter::once(0xffu8)
        .chain((0..4096).map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        }))
        .collect();
    let mut raw = t.raw();
    raw.send(&noise);
    raw.expect_error_then_close(-32700);
    assert_unharmed(&mut t, &baseline, "random bytes");

    // Invalid UTF-8 inside a string.
    let mut raw = t.raw();
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"bdev_get_bdevs\",\"params\":{\"name\":\"\xc3\x28\"}}");
    raw.expect_error_then_close(-32700);
    assert_unharmed(&mut t, &baseline, "invalid UTF-8");

    // Truncated JSON, then the client goes away.
    let mut raw = t.raw();
    raw.send(br#"{"jsonrpc":"2.0","id":1,"method":"bdev_malloc_delete","params":{"name":"M0""#);
    drop(raw);
    assert_unharmed(&mut t, &baseline, "truncated request");

    // 1000-deep nesting.
    let mut raw = t.raw();
    let mut deep =
        br#"{"jsonrpc":"2.0","id":1,"method":"bdev_get_bdevs","params":{"name":"#.to_vec();
    deep.extend(std::iter::repeat_n(b'[', 1000));
    deep.extend(std::iter::repeat_n(b']', 1000));
    deep.extend(b"}}");
    raw.send(&deep);
    raw.expect_error_then_close(-32700);
    assert_unharmed(&mut t, &baseline, "deep nesting");

    // A 32 MiB request: refused once it passes the 16 MiB cap, then closed.
    let stream = UnixStream::connect(&t.sock).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut payload =
            br#"{"jsonrpc":"2.0","id":1,"method":"bdev_get_bdevs","params":{"name":""#.to_vec();
        payload.resize(payload.len() + (32 << 20), b'a');
        payload.extend(b"\"}}");
        // The server closes the socket midway: a write error is expected.
        let _ = writer.write_all(&payload);
    });
    let mut raw = Raw::from(stream);
    raw.expect_error_then_close(-32700);
    sender.join().unwrap();
    assert_unharmed(&mut t, &baseline, "32 MiB request");

    // Wrong types everywhere: answered, nothing created.
    let mut raw = t.raw();
    for params in [
        json!({"name": 5, "num_blocks": 8, "block_size": 512}),
        json!({"name": "W", "num_blocks": -8, "block_size": 512}),
        json!({"name": "W", "num_blocks": 8, "block_size": 512.5}),
        json!({"name": "W", "num_blocks": 8, "block_size": 512, "uuid": "not-a-uuid"}),
        json!({"name": "W", "num_blocks": 1e30, "block_size": 512}),
    ] {
        let answer = raw.call(request(1, "bdev_null_create", params.clone()));
        assert_eq!(answer["error"]["code"], -32602, "{params} -> {answer}");
    }
    for params in [json!({"name": ["M0"]}), json!({"name": null}), json!({})] {
        let answer = raw.call(request(2, "bdev_malloc_delete", params.clone()));
        assert_eq!(answer["error"]["code"], -32602, "{params} -> {answer}");
    }
    assert_unharmed(&mut t, &baseline, "wrong types");

    // 50 clients at once, each with 20 requests in flight.
    let barrier = Arc::new(Barrier::new(50));
    let clients: Vec<_> = (0..50)
        .map(|c| {
            let sock = t.sock.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut raw = Raw::from(UnixStream::connect(&sock).unwrap());
                barrier.wait();
                let mut burst = Vec::new();
                for i in 0..20 {
                    let method = if i % 2 == 0 {
                        "bdev_get_bdevs"
                    } else {
                        "spdk_get_version"
                    };
                    burst.extend(
                        serde_json::to_vec(&request(c * 100 + i, method, json!(null))).unwrap(),
                    );
                }
                raw.send(&burst);
                let mut ids: Vec<i64> = (0..20)
                    .map(|_| raw.recv()["id"].as_i64().unwrap())
                    .collect();
                ids.sort_unstable();
                assert_eq!(ids, (0..20).map(|i| c * 100 + i).collect::<Vec<_>>());
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert_unharmed(&mut t, &baseline, "50 clients");
}

#[test]
fn a_client_that_never_reads_stalls_only_itself() {
    let mut t = Target::start();
    t.rpc_ok(&["bdev_malloc_create", "-b", "M0", "1", "512"]);
    let baseline = t.bdevs();
    let greedy = UnixStream::connect(&t.sock).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut writer = greedy.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let one = serde_json::to_vec(&request(1, "bdev_get_bdevs", json!(null))).unwrap();
        let mut sent = 0usize;
        // Far more answers than any buffer holds; the write times out once the server stops
        // reading this client.
        for _ in 0..200_000 {
            if writer.write_all(&one).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut other = t.raw();
    for i in 0..5 {
        let start = Instant::now();
        let answer = other.call(request(i, "spdk_get_version", json!(null)));
        assert_eq!(answer["id"], i);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "other client stalled"
        );
    }
    let sent = flood.join().unwrap();
    assert!(
        sent < 200_000,
        "the server kept reading a client that never reads"
    );
    drop(greedy);
    assert_unharmed(&mut t, &baseline, "a client that never reads");
}

#[test]
fn broken_config_stops_start_up_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.json");
    std::fs::write(
        &config,
        serde_json::to_vec(&json!({"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 8, "block_size": 512}},
            {"method": "bdev_null_create", "params": {"name": "N0", "num_blocks": 8, "block_size": 512, "colour": "red"}}
        ]}]}))
        .unwrap(),
    )
    .unwrap();
    let sock = dir.path().join("rpc.sock");
    let mut child = spawn(dir.path(), &sock, &["-c", config.to_str().unwrap()]);
    let status = wait_exit(&mut child);
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("entry 1")
            && stderr.contains("bdev_null_create")
            && stderr.contains("colour"),
        "{stderr}"
    );
    assert!(!sock.exists(), "socket left behind");

    std::fs::write(&config, b"{\"subsystems\": [").unwrap();
    let mut child = spawn(dir.path(), &sock, &["-c", config.to_str().unwrap()]);
    let status = wait_exit(&mut child);
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("bad.json"), "{stderr}");
}

#[test]
fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    let mut live = Target::start();
    let mut second = spawn(live.dir.path(), &live.sock, &[]);
    let status = wait_exit(&mut second);
    assert!(!status.success());
    let stderr = live.stderr();
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(live.alive());
    assert!(live.raw().call(request(1, "spdk_get_version", json!(null)))["result"].is_object());

    let dir = tempfile::tempdir().unwrap();
    drop(UnixListener::bind(dir.path().join("rpc.sock")).unwrap());
    assert!(dir.path().join("rpc.sock").exists(), "a stale socket file");
    let t = Target::start_in(dir, &[]);
    let (status, _) = t.signal(libc::SIGINT);
    assert!(status.success(), "SIGINT exit: {status}");
}

#[test]
fn spdk_rpc_plugin_maps_arguments_to_contract_params() {
    let sock = Path::new("/nonexistent/for-dry-run.sock");
    let plugin = |args: &[&str]| {
        let mut full = vec!["--plugin", "quorum_rpc_plugin", "--dry-run"];
        full.extend_from_slice(args);
        let out = spdk_rpc(sock, &full);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (_, request) = stdout.split_once("Request:\n").unwrap();
        let value = serde_json::Deserializer::from_str(request)
            .into_iter::<Value>()
            .next()
            .unwrap()
            .unwrap();
        (
            value["method"].clone(),
            value.get("params").cloned().unwrap_or(Value::Null),
        )
    };
    assert_eq!(
        plugin(&[
            "bdev_quorum_create",
            "-b",
            "Q0",
            "-t",
            "2",
            "M0",
            "M1",
            "M2"
        ]),
        (
            json!("bdev_quorum_create"),
            json!({"name": "Q0", "base_bdevs": ["M0", "M1", "M2"], "vote_threshold": 2,
                   "blkverify": false, "rewrite_corrupted": false})
        )
    );
    assert_eq!(
        plugin(&[
            "bdev_quorum_create",
            "-b",
            "Q1",
            "-t",
            "2",
            "--read-pattern",
            "fifo",
            "--blkverify",
            "--rewrite-corrupted",
            "A",
            "B"
        ])
        .1,
        json!({"name": "Q1", "base_bdevs": ["A", "B"], "vote_threshold": 2,
               "read_pattern": "fifo", "blkverify": true, "rewrite_corrupted": true})
    );
    assert_eq!(
        plugin(&["bdev_quorum_delete", "Q0"]),
        (json!("bdev_quorum_delete"), json!({"name": "Q0"}))
    );
    assert_eq!(
        plugin(&["bdev_quorum_add_child", "Q0", "M3"]),
        (
            json!("bdev_quorum_add_child"),
            json!({"name": "Q0", "base_bdev": "M3"})
        )
    );
    assert_eq!(
        plugin(&["bdev_quorum_remove_child", "Q0", "M3"]),
        (
            json!("bdev_quorum_remove_child"),
            json!({"name": "Q0", "base_bdev": "M3"})
        )
    );
    assert_eq!(
        plugin(&["bdev_quorum_get_bdevs"]),
        (json!("bdev_quorum_get_bdevs"), Value::Null)
    );
    assert_eq!(
        plugin(&["bdev_quorum_get_bdevs", "-b", "Q0"]).1,
        json!({"name": "Q0"})
    );
    assert_eq!(
        plugin(&[
            "bdev_quorum_get_events",
            "-b",
            "Q0",
            "--since",
            "5",
            "--max",
            "10"
        ]),
        (
            json!("bdev_quorum_get_events"),
            json!({"name": "Q0", "since": 5, "max": 10})
        )
    );
    assert_eq!(
        plugin(&[
            "nbd_server_start",
            "127.0.0.1",
            "-p",
            "10810",
            "--handshake-max-seconds",
            "3"
        ]),
        (
            json!("nbd_server_start"),
            json!({"listen_addr": "127.0.0.1", "listen_port": 10810, "handshake_max_seconds": 3})
        )
    );
    let help = spdk_rpc(
        sock,
        &[
            "--plugin",
            "quorum_rpc_plugin",
            "bdev_quorum_create",
            "--help",
        ],
    );
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--rewrite-corrupted"));
    let bad = spdk_rpc(
        sock,
        &[
            "--plugin",
            "quorum_rpc_plugin",
            "--dry-run",
            "bdev_quorum_create",
            "-b",
            "Q",
        ],
    );
    assert!(
        !bad.status.success(),
        "missing threshold and children refused by the CLI"
    );
}

#[test]
fn every_method_refuses_unknown_params_naming_them() {
    let t = Target::start();
    let mut raw = t.raw();
    let methods = raw.call(request(1, "rpc_get_methods", json!({})))["result"].clone();
    let methods = methods.as_array().unwrap();
    assert!(methods.len() > 30, "{methods:?}");
    for (id, method) in methods.iter().enumerate() {
        let method = method.as_str().unwrap();
        // Alone, the unknown field is the first thing a strict decoder meets, whatever the
        // method requires; a lenient one would complain about a missing field instead.
        let answer = raw.call(request(
            id as i64 + 2,
            method,
            json!({"no_such_param_xyz": 1}),
        ));
        assert_eq!(answer["error"]["code"], -32602, "{method}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("no_such_param_xyz"), "{method}: {message}");
    }
    assert!(
        t.bdevs().as_array().unwrap().is_empty(),
        "nothing was created"
    );
}

#[test]
fn sizes_that_overflow_or_exceed_the_machine_are_refused_and_create_nothing() {
    let t = Target::start();
    let mut raw = t.raw();
    let mut id = 0;
    let mut call = |method: &str, params: Value| {
        id += 1;
        raw.call(request(id, method, params))
    };
    let huge = json!({"name": "N0", "num_blocks": u64::MAX, "block_size": 512});
    let answer = call("bdev_null_create", huge);
    assert_eq!(answer["error"]["code"], -22, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("num_blocks"));
    // The largest size a block device can have is i64::MAX bytes (off_t, QEMU, libnbd).
    let just_over = json!({"name": "N1", "num_blocks": (1u64 << 54), "block_size": 512});
    assert_eq!(call("bdev_null_create", just_over)["error"]["code"], -22);
    let just_under = json!({"name": "N2", "num_blocks": (1u64 << 54) - 1, "block_size": 512});
    assert_eq!(call("bdev_null_create", just_under)["result"], "N2");
    // Block sizes: multiples of 512 up to 64 KiB.
    for bad in [0u64, 256, 520, 1 << 31, 128 << 10] {
        for method in ["bdev_null_create", "bdev_malloc_create"] {
            let params = json!({"name": "B", "num_blocks": 8, "block_size": bad});
            let answer = call(method, params);
            assert_eq!(answer["error"]["code"], -22, "{method} {bad}: {answer}");
        }
    }
    let big_blocks = json!({"name": "B64", "num_blocks": 8, "block_size": 64 << 10});
    assert_eq!(call("bdev_malloc_create", big_blocks)["result"], "B64");
    // A malloc bdev larger than the machine can give is refused at create (ENOMEM), not
    // OOM-killed later.
    let tib = json!({"name": "M0", "num_blocks": 1u64 << 31, "block_size": 512});
    let answer = call("bdev_malloc_create", tib);
    assert_eq!(answer["error"]["code"], -12, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("GiB"), "{message}");
    assert_eq!(t.bdev_names(), [json!("N2"), json!("B64")]);
    // The survivors work, and the big null bdev reports its true size.
    let n2 = call("bdev_get_bdevs", json!({"name": "N2"}));
    assert_eq!(n2["result"][0]["num_blocks"], (1u64 << 54) - 1);
}

/// Starts the daemon with `umask` and `extra` arguments in `dir`, RPC socket `rpc.sock`.
fn spawn_with_umask(dir: &Path, umask: u32, extra: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(TGT);
    command
        .arg("-r")
        .arg(dir.join("rpc.sock"))
        .arg("--interrupt-mode")
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    // SAFETY: umask(2) is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    command.spawn().unwrap()
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_rpc_socket_is_private_whatever_the_umask_and_its_lock_never_a_symlink() {
    for (extra, want) in [(&[][..], 0o600), (&["--rpc-group-access"][..], 0o660)] {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("rpc.sock");
        let child = spawn_with_umask(dir.path(), 0o000, extra);
        let mut t = Target {
            child,
            sock: sock.clone(),
            dir,
        };
        t.wait_ready();
        assert_eq!(mode_of(&sock), want, "socket mode with {extra:?}");
        assert_eq!(
            mode_of(&t.dir.path().join("rpc.sock.lock")),
            0o600,
            "lock file mode"
        );
        let leftovers: Vec<_> = std::fs::read_dir(t.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let (status, _) = t.signal(libc::SIGTERM);
        assert!(status.success());
    }

    // A lock path planted as a symlink is refused, and its target is left untouched.
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let victim_mode = mode_of(&victim);
    std::os::unix::fs::symlink(&victim, dir.path().join("rpc.sock.lock")).unwrap();
    let mut child = spawn_with_umask(dir.path(), 0o022, &[]);
    let status = wait_exit(&mut child);
    assert!(!status.success());
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(mode_of(&victim), victim_mode);
    assert!(!dir.path().join("rpc.sock").exists());

    // Something that is not a socket at the socket path is never removed.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rpc.sock"), b"not a socket").unwrap();
    let mut child = spawn_with_umask(dir.path(), 0o022, &[]);
    assert!(!wait_exit(&mut child).success());
    assert_eq!(
        std::fs::read(dir.path().join("rpc.sock")).unwrap(),
        b"not a socket"
    );
}

#[test]
fn spdk_rpc_script_and_batch_modes_work() {
    let t = Target::start();
    let run = |batch: bool, script: &str| {
        let mut cmd = Command::new("spdk-rpc");
        cmd.arg("-s").arg(&t.sock);
        if batch {
            cmd.arg("--batch-mode");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spdk-rpc must be installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // Script mode: several requests on one connection, one after another.
    let out = run(
        false,
        "bdev_malloc_create -b S0 1 512\nbdev_null_create S1 1 512\n",
    );
    assert!(out.status.success(), "{out:?}");
    // Batch mode: one JSON-RPC batch array, one array answer.
    let out = run(
        true,
        "bdev_malloc_create -b B0 1 512\nbdev_get_bdevs -b nope\nbdev_null_create B1 1 512\n",
    );
    assert!(!out.status.success(), "the failed member fails the batch");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"B0\"") && stdout.contains("\"B1\""),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("-19"));
    assert_eq!(
        t.bdev_names(),
        [json!("S0"), json!("S1"), json!("B0"), json!("B1")]
    );
}

#[test]
fn bad_command_lines_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    for (args, needle) in [
        (vec!["-m", "zz"], "core mask"),
        (vec!["-S", "/nonexistent/vhost"], "vhost socket directory"),
        (vec!["-L", "bad=level=x"], "log flag"),
    ] {
        let out = Command::new(TGT)
            .arg("-r")
            .arg(&sock)
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!sock.exists());
    }
}

/// `spdk-rpc --plugin quorum_rpc_plugin ARGS...`
fn plugin_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--plugin", "quorum_rpc_plugin"];
    all.extend_from_slice(args);
    all
}

#[test]
fn quorum_commands_work_end_to_end_through_the_plugin() {
    let t = Target::start();
    for i in 0..4 {
        t.rpc_ok(&["bdev_malloc_create", "-b", &format!("M{i}"), "8", "512"]);
    }
    t.rpc_ok(&["bdev_malloc_create", "-b", "Odd", "4", "512"]);
    let created = t.rpc_ok(&plugin_args(&[
        "bdev_quorum_create",
        "-b",
        "Q",
        "-t",
        "2",
        "--rewrite-corrupted",
        "M0",
        "M1",
        "M2",
    ]));
    assert_eq!(created.trim(), "Q");
    // A child of a quorum is claimed: SPDK's -16.
    let err = t.rpc_err(&["bdev_malloc_delete", "M0"]);
    assert_eq!(err["code"], -16, "{err}");
    // QEMU's validation, through the CLI.
    let err = t.rpc_err(&plugin_args(&[
        "bdev_quorum_create",
        "-b",
        "Q2",
        "-t",
        "3",
        "M3",
        "Odd",
    ]));
    assert_eq!(err["code"], -22);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("threshold may not exceed children count"),
        "{err}"
    );
    let err = t.rpc_err(&plugin_args(&[
        "bdev_quorum_create",
        "-b",
        "Q2",
        "-t",
        "1",
        "M3",
        "Odd",
    ]));
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("Odd (8192 blocks of 512 bytes)"),
        "{err}"
    );
    let err = t.rpc_err(&plugin_args(&[
        "bdev_quorum_create",
        "-b",
        "Q2",
        "-t",
        "1",
        "M3",
        "Nope",
    ]));
    assert_eq!(err["code"], -19);
    assert!(t
        .bdevs()
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["name"] != "Q2"));
    assert_eq!(
        t.bdevs()[5]["claimed"],
        false,
        "M3 unclaimed after the refusals"
    );

    let info = t.rpc_json(&plugin_args(&["bdev_quorum_get_bdevs", "-b", "Q"]));
    assert_eq!(info[0]["vote_threshold"], 2);
    assert_eq!(info[0]["rewrite_corrupted"], true);
    let names: Vec<&str> = info[0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["M0", "M1", "M2"]);
    assert_eq!(info[0]["children"][0]["reads"], 0);

    t.rpc_ok(&plugin_args(&["bdev_quorum_add_child", "Q", "M3"]));
    let err = t.rpc_err(&plugin_args(&["bdev_quorum_add_child", "Q", "Odd"]));
    assert_eq!(err["code"], -22);
    t.rpc_ok(&plugin_args(&["bdev_quorum_remove_child", "Q", "M0"]));
    t.rpc_ok(&plugin_args(&["bdev_quorum_remove_child", "Q", "M1"]));
    let err = t.rpc_err(&plugin_args(&["bdev_quorum_remove_child", "Q", "M2"]));
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("vote threshold 2"),
        "{err}"
    );
    let info = t.rpc_json(&plugin_args(&["bdev_quorum_get_bdevs"]));
    assert_eq!(info[0]["num_children"], 2);
    assert_eq!(
        t.rpc_json(&plugin_args(&["bdev_quorum_get_events", "-b", "Q"])),
        json!([])
    );
    let bdev = t.rpc_json(&["bdev_get_bdevs", "-b", "Q"]);
    assert_eq!(bdev[0]["product_name"], "Quorum disk");
    assert_eq!(
        bdev[0]["driver_specific"]["quorum"]["base_bdevs"],
        json!(["M2", "M3"])
    );

    // save_config brings the quorum back with its children, options and identity.
    let saved = t.rpc_ok(&["save_config"]);
    let (status, dir) = t.signal(libc::SIGTERM);
    assert!(status.success());
    let path = dir.path().join("saved.json");
    std::fs::write(&path, &saved).unwrap();
    let t = Target::start_in(dir, &["-c", path.to_str().unwrap()]);
    let again = t.rpc_json(&["bdev_get_bdevs", "-b", "Q"]);
    assert_eq!(again[0]["uuid"], bdev[0]["uuid"]);
    assert_eq!(again[0]["driver_specific"], bdev[0]["driver_specific"]);

    let types = t.rpc_json(&["notify_get_types"]);
    for kind in ["quorum_report_bad", "quorum_failure"] {
        assert!(
            types.as_array().unwrap().iter().any(|k| k == kind),
            "{types}"
        );
    }
    t.rpc_ok(&plugin_args(&["bdev_quorum_delete", "Q"]));
    let err = t.rpc_err(&plugin_args(&["bdev_quorum_delete", "Q"]));
    assert_eq!(err["code"], -19);
    let notes = t.rpc_json(&["notify_get_notifications"]);
    let last = notes.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        json!({"type": "bdev_unregister", "ctx": "Q", "id": last["id"]})
    );
    // The children are free again.
    t.rpc_ok(&["bdev_malloc_delete", "M2"]);
}

#[test]
fn file_bdevs_are_created_with_spdk_rpcs_own_commands() {
    let t = Target::start();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("disk.img");
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let file = file.to_str().unwrap();
    // SPDK's client sends every optional flag of bdev_aio_create, `nowait: false` included.
    assert_eq!(
        t.rpc_ok(&["bdev_aio_create", file, "A0", "512"]).trim(),
        "A0"
    );
    assert_eq!(
        t.rpc_ok(&["bdev_uring_create", file, "U0", "4096"]).trim(),
        "U0"
    );
    let bdevs = t.rpc_json(&["bdev_get_bdevs", "-b", "U0"]);
    assert_eq!(bdevs[0]["num_blocks"], 256);
    assert_eq!(
        t.rpc_err(&["bdev_aio_create", "--no-wait", file, "A1", "512"])["code"],
        -32602
    );
    t.rpc_ok(&["bdev_aio_delete", "A0"]);
    t.rpc_ok(&["bdev_uring_delete", "U0"]);
}
