#!/usr/bin/env python3
"""Records what real clients send: listens on a Unix socket, forwards every connection to
the target's socket both ways, and writes each connection's client-to-server bytes to
OUT_DIR/<n>. fuzz/seed runs the clients through it to make the seed corpus."""
import os
import socket
import sys
import threading


def pump(src, dst, record=None):
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if not data:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        if record is not None:
            record.write(data)
            record.flush()
        try:
            dst.sendall(data)
        except OSError:
            return


def main():
    listen_path, upstream_path, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen_path)
    server.listen(16)
    n = 0
    while True:
        client, _ = server.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(upstream_path)
        record = open(os.path.join(out_dir, f"{n:03}"), "wb")
        n += 1
        threading.Thread(target=pump, args=(client, upstream, record), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


if __name__ == "__main__":
    main()
