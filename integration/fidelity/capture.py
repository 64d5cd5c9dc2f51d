#!/usr/bin/env python3
"""Records a TLS server's first flight in answer to a recorded ClientHello (loopback only).

  capture.py --connect 127.0.0.1:P --hello-json tests/data/tdlib/client-hello-tdlib-1.8.66.json
             --out FILE [--quiet-ms 200]

Sends the hello's `full` record, reads until the server has been quiet for --quiet-ms
(a server writes its first flight at once, then waits for the client's Finished), writes
every byte received to FILE. The recorded flights in tests/data/flights/ were made with it.
"""

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faketls_client import load_hello  # noqa: E402  (integration/faketls_client.py)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", required=True)
    parser.add_argument("--hello-json", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quiet-ms", type=int, default=200)
    args = parser.parse_args()
    host, _, port = args.connect.rpartition(":")
    got = b""
    with socket.create_connection((host.strip("[]"), int(port)), timeout=5) as s:
        s.sendall(load_hello(args.hello_json))
        s.settimeout(args.quiet_ms / 1000)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                part = s.recv(65536)
            except socket.timeout:
                break
            if not part:
                break
            got += part
    open(args.out, "wb").write(got)
    print(f"{len(got)} bytes")


if __name__ == "__main__":
    main()
