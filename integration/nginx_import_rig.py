"""The rig of integration/import-nginx.sh: one nginx configuration of tests/data/nginx, made
runnable on loopback test ports, recording backends, and the probes that compare where nginx
and frontgate send the same connection. Standard library only; loopback only.

  prepare FIXTURE OUT --ports P1,P2,... --ipv6 0|1 [--stream-module PATH]
      Copies the fixture's folder into OUT with every port renumbered onto the given free
      ports (the same port always onto the same new one, so a map value that names another
      stream server's listen still does), every address made 127.0.0.1 (or [::1]), IPv6
      listens dropped when the host has no IPv6, and stream log paths moved into OUT.
      Next to the renumbered fixture it writes nginx-run.conf: the fixture's stream block
      under a main context of our own (daemon off, pid, error_log in OUT, the dynamic stream
      module), without the http block, whose servers the recording backends stand in for.
      Writes OUT/desc.json (read it with `get`): run_conf, import_conf, front_port,
      front_proxy_in, ports (old -> new), backend_ports, hop_ports (the other stream servers' listens),
      regex_keys and the probes: names from the fixture's
      server-name map (a `.x` key gives x, www.x and a.b.x; `*.x` gives www.x and x), a name
      no map has, a hello without SNI and bytes that are not TLS.
  get DESC KEY
      Prints one value of desc.json (lists space-separated); `port:N` is the port the
      fixture's port N became.
  record DESC DIR [--dead P1,P2]
      Listens on every backend port but the dead ones; each connection is read to its end (at most 64 KiB)
      and appended to DIR/records.jsonl as {"port", "data" (hex)}; DIR/ready once bound.
  compare DESC RECORDS --nginx PORT --frontgate PORT [--only LABEL,...]
      Sends each probe to nginx and to frontgate (a PROXY v1 header first when the fixture
      listens with proxy_protocol), then reads which backend got it and what it got. Prints
      `ok<TAB>what` or `fail<TAB>what<TAB>details` per probe: the same backend (for a pool
      nginx balances: one nginx also picks when asked again), the same PROXY header or none
      (client ports and the front's own port normalised), and the client's bytes intact.
"""

import argparse
import asyncio
import glob
import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tools import client_hello  # noqa: E402  (a real OpenSSL ClientHello)

PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
# What a balancer in front says about the client (documentation addresses: bytes only).
INBOUND_HEADER = b"PROXY TCP4 198.51.100.7 203.0.113.9 40001 443\r\n"
PLAIN_BYTES = b"GET / HTTP/1.0\r\nHost: plain.test\r\n\r\n"


# ---------------------------------------------------------------- nginx syntax (tests' own)
def tokens(text):
    """(kind, value, start, end) for words, strings and ; { }, skipping comments."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in ";{}":
            yield (c, c, i, i + 1)
            i += 1
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            yield ("w", text[i + 1 : j], i, j + 1)
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ";{}":
                j += 1
            yield ("w", text[i:j], i, j)
            i = j


def tree(text):
    """Directives [name, args, block or None, start, end] of a whole file."""
    stack = [[]]
    current = []
    start = None
    for kind, value, s, e in tokens(text):
        if kind == "w":
            if not current:
                start = s
            current.append(value)
        elif kind == ";":
            stack[-1].append([current[0], current[1:], None, start, e])
            current = []
        elif kind == "{":
            node = [current[0], current[1:], [], start, None]
            stack[-1].append(node)
            stack.append(node[2])
            current = []
        else:
            stack.pop()
            parent = stack[-1][-1] if stack[-1] else None
            if parent is not None:
                parent[4] = e
    return stack[0]


def expand(nodes, prefix):
    """Includes followed, relative to the fixture's folder, glob matches in name order."""
    out = []
    for node in nodes:
        name, args, block = node[0], node[1], node[2]
        if name == "include" and block is None:
            pattern = args[0] if os.path.isabs(args[0]) else os.path.join(prefix, args[0])
            for path in sorted(glob.glob(pattern)):
                with open(path) as f:
                    out.extend(expand(tree(f.read()), prefix))
        elif block is not None and name not in ("http", "events", "mail"):
            out.append([name, args, expand(block, prefix), node[3], node[4]])
        else:
            out.append(node)
    return out


# ---------------------------------------------------------------- prepare
ADDRESS = re.compile(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:]*\]|localhost|\*):(\d{1,5})\b")
BARE_LISTEN = re.compile(r"(\blisten\s+)(\d{1,5})(?=[\s;])")
V6_LISTEN = re.compile(r"\blisten\s+\[[0-9A-Fa-f:]*\]:\d+[^;]*;")
LOG_PATH = re.compile(r"\b(access_log|error_log)(\s+)(/[^\s;]+)")


def renumber(text, ports, free, ipv6, logs):
    def new_port(old):
        if old not in ports:
            if not free:
                sys.exit("nginx_import_rig: not enough free ports given")
            ports[old] = free.pop(0)
        return ports[old]

    if not ipv6:
        text = V6_LISTEN.sub(lambda m: "# (no IPv6 on this host) " + m.group(0).replace(";", ","), text)

    def address(m):
        host, port = m.group(1), new_port(m.group(2))
        if host.startswith("["):
            host = "[::1]"
        elif not host.startswith("127."):
            host = "127.0.0.1"
        return f"{host}:{port}"

    text = ADDRESS.sub(address, text)
    text = BARE_LISTEN.sub(lambda m: f"{m.group(1)}127.0.0.1:{new_port(m.group(2))}", text)
    text = LOG_PATH.sub(lambda m: f"{m.group(1)}{m.group(2)}{logs}/{os.path.basename(m.group(3))}", text)
    return text


def included(path, prefix):
    """The files `path` includes (outside http, events and mail), relative ones from prefix."""
    with open(path) as f:
        nodes = tree(f.read())
    found = []

    def walk(nodes):
        for name, args, block, _, _ in nodes:
            if name == "include" and block is None:
                pattern = args[0] if os.path.isabs(args[0]) else os.path.join(prefix, args[0])
                for match in sorted(glob.glob(pattern)):
                    if os.path.abspath(match).startswith(prefix + os.sep):
                        found.append(os.path.abspath(match))
                        found.extend(included(match, prefix))
            elif block is not None and name not in ("http", "events", "mail"):
                walk(block)

    walk(nodes)
    return found


def stream_addresses(nodes):
    """Ports of the addresses a stream block sends to (upstream servers, map values,
    proxy_pass), not its listens."""
    ports = []
    for name, args, block, _, _ in nodes:
        if name == "listen":
            continue
        words = ([name] if block is None else []) + args
        ports += [p for w in words for _, p in ADDRESS.findall(w)]
        if block is not None:
            ports += stream_addresses(block)
    return ports


def probe_names(nodes):
    """Names to try, from every $ssl_preread_server_name map of the stream block."""
    names, regex = [], []
    for stream in (n for n in nodes if n[0] == "stream"):
        for node in stream[2]:
            if node[0] != "map" or node[1][:1] != ["$ssl_preread_server_name"]:
                continue
            for entry in node[2]:
                key = entry[0]
                if key in ("hostnames", "volatile", "default", "") or entry[2] is not None:
                    continue
                if key.startswith("~"):
                    regex.append(key)
                elif key.startswith("."):
                    names += [key[1:], "www" + key, "a.b" + key]
                elif key.startswith("*."):
                    names += ["www" + key[1:], key[2:]]
                else:
                    names.append(key)
    names.append("unknown-name.invalid")
    seen, unique = set(), []
    for n in names:
        if n.lower() not in seen:
            seen.add(n.lower())
            unique.append(n)
    return unique, regex


def stream_servers(nodes):
    return [n for s in nodes if s[0] == "stream" for n in s[2] if n[0] == "server" and n[2] is not None]


def listen_port(args):
    m = re.search(r":(\d+)$", args[0])
    return int(m.group(1)) if m else None


def prepare(args):
    fixture = os.path.abspath(args.fixture)
    src_dir = os.path.dirname(fixture)
    out = os.path.abspath(args.out)
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    free = [int(p) for p in args.ports.split(",") if p]
    ports = {}
    for path in [fixture] + included(fixture, src_dir):
        dest = os.path.join(out, os.path.relpath(path, src_dir))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(path) as f:
            text = f.read()
        with open(dest, "w") as f:
            f.write(renumber(text, ports, free, args.ipv6 == "1", logs))
    import_conf = os.path.join(out, os.path.basename(fixture))
    with open(import_conf) as f:
        text = f.read()
    nodes = expand(tree(text), out)
    top = tree(text)
    streams = [text[n[3] : n[4]] for n in top if n[0] == "stream"]
    module = f"load_module {args.stream_module};\n" if args.stream_module else ""
    run_conf = os.path.join(out, "nginx-run.conf")
    with open(run_conf, "w") as f:
        f.write(
            f"daemon off;\nworker_processes 1;\npid {out}/nginx.pid;\nerror_log {logs}/error.log info;\n"
            f"{module}events {{ worker_connections 256; }}\n" + "\n".join(streams) + "\n"
        )
    servers = stream_servers(nodes)
    front = next((s for s in servers if ["ssl_preread", ["on"]] in [[d[0], d[1]] for d in s[2]]), servers[0])
    front_listen = next(d for d in front[2] if d[0] == "listen" and d[1][0].startswith("127."))
    listen_ports = {listen_port(d[1]) for s in servers for d in s[2] if d[0] == "listen"}
    addresses = [a for s in nodes if s[0] == "stream" for a in stream_addresses(s[2])]
    backends = sorted({int(p) for p in addresses} - listen_ports)
    names, regex = probe_names(nodes)
    probes = [{"label": n, "sni": n, "plain": False} for n in names]
    probes.append({"label": "(no SNI)", "sni": None, "plain": False})
    probes.append({"label": "(not TLS)", "sni": None, "plain": True})
    desc = {
        "run_conf": run_conf,
        "import_conf": import_conf,
        "front_port": listen_port(front_listen[1]),
        "front_proxy_in": "proxy_protocol" in front_listen[1][1:],
        "ports": ports,
        "backend_ports": backends,
        "hop_ports": sorted(listen_ports - {listen_port(front_listen[1])}),
        "regex_keys": regex,
        "probes": probes,
    }
    with open(os.path.join(out, "desc.json"), "w") as f:
        json.dump(desc, f, indent=1)


def get(args):
    with open(args.desc) as f:
        desc = json.load(f)
    if args.key.startswith("port:"):
        value = desc["ports"][args.key[5:]]
    else:
        value = desc[args.key]
    if isinstance(value, list):
        print(" ".join(str(v) for v in value))
    elif isinstance(value, bool):
        print(int(value))
    else:
        print(value)


# ---------------------------------------------------------------- record
def record(args):
    with open(args.desc) as f:
        desc = json.load(f)
    log_path = os.path.join(args.dir, "records.jsonl")

    async def main():
        log = open(log_path, "a", buffering=1)

        def handler(port):
            async def handle(reader, writer):
                data = b""
                try:
                    while len(data) < 65536:
                        chunk = await asyncio.wait_for(reader.read(65536), 10)
                        if not chunk:
                            break
                        data += chunk
                except (asyncio.TimeoutError, ConnectionError):
                    pass
                log.write(json.dumps({"port": port, "data": data.hex()}) + "\n")
                writer.close()

            return handle

        dead = {int(p) for p in args.dead.split(",") if p}
        for port in desc["backend_ports"]:
            if port not in dead:
                await asyncio.start_server(handler(port), "127.0.0.1", port)
        open(os.path.join(args.dir, "ready"), "w").close()
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------- compare
def send(port, payload):
    """Sends payload, half-closes, reads to the end; the client's local port."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        local = s.getsockname()[1]
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(65536):
                pass
        except (socket.timeout, ConnectionError):
            pass
    return local


def records(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return []


def through(port, payload, path):
    """(backend port or None, bytes it got, client port) for one connection via `port`."""
    before = len(records(path))
    local = send(port, payload)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = records(path)
        if len(got) > before:
            r = got[before]
            return r["port"], bytes.fromhex(r["data"]), local
        time.sleep(0.05)
    return None, b"", local


def split_header(data):
    """(normalisable header text or 'none', the bytes after it)."""
    if data.startswith(b"PROXY "):
        end = data.find(b"\r\n")
        return data[:end].decode("ascii", "replace"), data[end + 2 :]
    if data.startswith(PROXY_V2_SIG):
        length = int.from_bytes(data[14:16], "big")
        return "v2:" + data[12:16 + length].hex(), data[16 + length :]
    return "none", data


def normalise(header, client_port, front_port, hop_ports):
    """The header with what differs by nature between two connections named, not numbered;
    and whether it came from one of nginx's internal hops (whose header describes the hop's
    own connection, from nginx's port to the hop's, where frontgate's describes the client's:
    on loopback both come from 127.0.0.1)."""
    parts = header.split(" ")
    via_hop = False
    if len(parts) == 6 and parts[0] == "PROXY":
        if parts[5] in hop_ports:
            via_hop = True
            parts[4], parts[5] = "<client port>", "<front port>"
        if parts[4] == str(client_port):
            parts[4] = "<client port>"
        if parts[5] == str(front_port):
            parts[5] = "<front port>"
    return " ".join(parts), via_hop


def compare(args):
    with open(args.desc) as f:
        desc = json.load(f)
    path = os.path.join(args.records, "records.jsonl")
    prefix = INBOUND_HEADER if desc["front_proxy_in"] else b""
    hops = {str(p) for p in desc["hop_ports"]}
    for probe in desc["probes"]:
        if args.only and probe["label"] not in args.only.split(","):
            continue
        body = PLAIN_BYTES if probe["plain"] else client_hello(probe["sni"])
        seen = {}
        note = ""
        for who, port in (("nginx", args.nginx), ("frontgate", args.frontgate)):
            backend, data, local = through(port, prefix + body, path)
            header, rest = split_header(data)
            header, via_hop = normalise(header, local, port, hops)
            seen[who] = (backend, header, rest == body)
            if via_hop:
                note = " (nginx's header came from its internal hop)"
        what = f"{args.name}: {probe['label']}"
        (n_port, n_header, n_intact), (f_port, f_header, f_intact) = seen["nginx"], seen["frontgate"]
        balanced = ""
        if f_port != n_port and f_port is not None:
            # nginx balances a pool; frontgate takes its first server: one nginx picks too?
            for _ in range(8):
                again, _, _ = through(args.nginx, prefix + body, path)
                if again == f_port:
                    balanced = f" (nginx balances this pool; :{f_port} is one of its picks)"
                    n_port = f_port
                    break
        problems = []
        if n_port is None:
            problems.append("nginx sent it to no backend")
        if f_port != n_port:
            problems.append(f"backend: nginx :{seen['nginx'][0]}, frontgate :{f_port}")
        if f_header != n_header:
            problems.append(f"header: nginx {n_header!r}, frontgate {f_header!r}")
        if not n_intact or not f_intact:
            problems.append(f"client bytes intact: nginx {n_intact}, frontgate {f_intact}")
        if problems:
            print(f"fail\t{what}\t{'; '.join(problems)}")
        else:
            print(f"ok\t{what} -> backend :{f_port}, header {f_header}{balanced}{note}")
        sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("fixture")
    p.add_argument("out")
    p.add_argument("--ports", required=True)
    p.add_argument("--ipv6", default="0")
    p.add_argument("--stream-module", default="")
    p.set_defaults(run=prepare)
    g = sub.add_parser("get")
    g.add_argument("desc")
    g.add_argument("key")
    g.set_defaults(run=get)
    r = sub.add_parser("record")
    r.add_argument("desc")
    r.add_argument("dir")
    r.add_argument("--dead", default="")
    r.set_defaults(run=record)
    c = sub.add_parser("compare")
    c.add_argument("desc")
    c.add_argument("records")
    c.add_argument("--nginx", type=int, required=True)
    c.add_argument("--frontgate", type=int, required=True)
    c.add_argument("--name", default="")
    c.add_argument("--only", default="")
    c.set_defaults(run=compare)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
