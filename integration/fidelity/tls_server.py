#!/usr/bin/env python3
"""A TLS 1.3 backend on a second TLS stack, for the fidelity checks (loopback only).

  tls_server.py --listen 127.0.0.1:P --cert CERT --key KEY [--body-bytes N]

pyOpenSSL on the OpenSSL that PyPI's `cryptography` wheel bundles (4.x): unlike Debian's
OpenSSL 3.0 behind nginx, it picks X25519MLKEM768 when the client offers a share for it
(TDLib does), so its ServerHello carries a 1120-byte key share. It answers every request
with `200 OK` and N bytes of body (default 16 MiB), for the record-size histograms.
"""

import argparse
import socket
import threading

from OpenSSL import SSL


def serve(conn, ctx, body_bytes):
    tls = SSL.Connection(ctx, conn)
    tls.set_accept_state()
    try:
        tls.do_handshake()
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            part = tls.recv(4096)
            if not part:
                return
            request += part
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {body_bytes}\r\nConnection: close\r\n\r\n"
        tls.sendall(head.encode())
        chunk = b"x" * 65536
        left = body_bytes
        while left > 0:
            n = min(left, len(chunk))
            tls.sendall(chunk[:n])
            left -= n
        tls.shutdown()
    except (SSL.Error, OSError):
        pass
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--body-bytes", type=int, default=16 << 20)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate_chain_file(args.cert)
    ctx.use_privatekey_file(args.key)
    srv = socket.create_server((host.strip("[]"), int(port)), backlog=256)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, ctx, args.body_bytes), daemon=True).start()


if __name__ == "__main__":
    main()
