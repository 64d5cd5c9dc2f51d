#!/usr/bin/env python3
"""Turns integration/fidelity.sh's results into FIDELITY.md and its checks.

  report.py --results DIR --out FIDELITY.md --frontgate BIN --modes "live learned off"
            --tries N --download-bytes B --elapsed S --nginx VERSION --system-openssl VERSION

DIR holds measure.py's BACKEND-MODE.json (and fidelity.sh's BACKEND-MODE.said: what
frontgate logged). Prints `ok   WHAT` / `FAIL WHAT: WHY` lines for fidelity.sh to count:
  - every fake flight verifies as a client checks it (TDLib's rule, faketls_client.py);
  - a replay of the hello through frontgate gets the backend's answer;
  - both downloads complete;
  - `mimic: live`, TLS 1.3 backends: JA3S, key-share group/length and flight bytes equal the
    backend's, for every hello ("equal" bytes: inside the backend's own spread over the same
    tries, since an ECDSA signature's DER length varies by a byte or two per handshake);
  - `mimic: learned`: flight bytes within 5% of the backend's median;
  - a TLS 1.2 backend is reported as unmatchable (never a FAIL for its differences).
The fixed shape (`fixed`: a binary without `mimic`; `off`) is only reported.
"""

import argparse
import datetime
import json
import statistics
from pathlib import Path

BACKENDS = {
    "nginx-tls13": "nginx {nginx} + OpenSSL 3.0, `ssl_protocols TLSv1.2 TLSv1.3;`",
    "nginx-4k": "nginx {nginx} + OpenSSL 3.0, TLS 1.3 and `ssl_buffer_size 4k;` (4113-byte records)",
    "pyopenssl": "pyOpenSSL {pyopenssl} + {openssl4} (PyPI cryptography wheel)",
    "rustls": "frontgate's own TLS termination (rustls)",
    "nginx-default": "nginx {nginx}, default `ssl_protocols` (no TLSv1.3)",
}
ORDER = list(BACKENDS)
MODE_ORDER = ["fixed", "live", "learned", "off"]
GROUPS = {0x001D: "x25519", 0x11EC: "X25519MLKEM768", 0x0017: "P-256", 0x0018: "P-384",
          0x6399: "X25519Kyber768"}
RECORD_TYPES = {20: "CCS", 21: "alert", 22: "hs", 23: "data"}
MTG_GROUP = "mtg ok-* (5 vectors, 517 B)"


def ks(sh):
    if not sh or not sh.get("key_share"):
        return "—"
    g, n = sh["key_share"]
    return f"{GROUPS.get(g, hex(g))}/{n}"


def ja3s(sh):
    return sh["ja3s"] if sh else "—"


def span(values):
    values = [v for v in values if v]
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def one_or_all(values):
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return " / ".join(str(v) for v in seen) if seen else "—"


def shape(recs):
    """Record lengths: `hs 122, CCS 1, data 42+465+95+53`."""
    parts, data = [], []
    for t, n in recs:
        if t == 23:
            data.append(str(n))
        else:
            if data:
                parts.append("data " + "+".join(data))
                data = []
            parts.append(f"{RECORD_TYPES.get(t, t)} {n}")
    if data:
        parts.append("data " + "+".join(data))
    return ", ".join(parts)


def ms(x):
    return "—" if x is None else f"{x:.2f}"


def run_order(key):
    backend, mode = key
    return (ORDER.index(backend) if backend in ORDER else 99, MODE_ORDER.index(mode))


def load(results):
    runs = {}
    for f in sorted(results.glob("*.json")):
        stem = f.stem
        mode = next((m for m in MODE_ORDER if stem.endswith("-" + m)), None)
        if mode is None:
            continue
        backend = stem[: -len(mode) - 1]
        data = json.loads(f.read_text())
        said = results / f"{stem}.said"
        data["said"] = said.read_text().strip() if said.exists() else ""
        runs[(backend, mode)] = data
    return runs


def group_hellos(hellos):
    """(display name, [entries]): the five mtg ok vectors of one shape form one row."""
    rows, mtg = [], []
    for h in hellos:
        if h["name"].startswith("mtg-ok-") and h["name"] != "mtg-ok-grease-first":
            mtg.append(h)
        else:
            rows.append((h["name"], [h]))
    if mtg:
        at = next((i for i, (n, _) in enumerate(rows) if n.startswith("mtg")), len(rows))
        rows.insert(at, (MTG_GROUP, mtg))
    return rows


def sizes(entries, side):
    out = []
    for h in entries:
        if side in h:
            out.append(h[side]["bytes"])
        out += [n for n in h.get("flight_sizes", {}).get(side, []) if n]
    return out


def backend_sizes(entries):
    return sizes(entries, "backend") + sizes(entries, "replay")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--frontgate", required=True)
    ap.add_argument("--modes", required=True)
    ap.add_argument("--tries", type=int, required=True)
    ap.add_argument("--download-bytes", type=int, required=True)
    ap.add_argument("--elapsed", type=int, required=True)
    ap.add_argument("--nginx", default="?")
    ap.add_argument("--system-openssl", default="?")
    args = ap.parse_args()

    try:
        import OpenSSL
        from cryptography.hazmat.backends.openssl import backend as ossl

        versions = {"pyopenssl": OpenSSL.__version__, "openssl4": ossl.openssl_version_text()}
    except ImportError:
        versions = {"pyopenssl": "?", "openssl4": "OpenSSL ?"}
    versions["nginx"] = args.nginx
    runs = load(args.results)

    def where_runs(labels):
        labels = list(dict.fromkeys(labels))
        return "every run" if len(labels) == len(runs) else ", ".join(labels)
    checks = []  # (ok, what, why)
    notes = []

    def check(good, what, why=""):
        checks.append((good, what, why))

    # ------------------------------------------------------------ checks and table rows
    table = []
    for (backend, mode), run in sorted(
        runs.items(), key=lambda kv: (ORDER.index(kv[0][0]) if kv[0][0] in ORDER else 99,
                                      MODE_ORDER.index(kv[0][1]))
    ):
        label = f"{backend}/{mode}"
        hellos = run["hellos"]
        broken = [h["name"] for h in hellos if "error" in h]
        for h in hellos:
            if "error" in h:
                check(False, f"[{label}] {h['name']}: measured", h["error"])
        good = [h for h in hellos if "error" not in h]
        unverified = [f"{h['name']}: {h['frontgate'].get('why')}" for h in good
                      if not h["frontgate"].get("verified")]
        check(not unverified, f"[{label}] the fake flight verifies as a client checks it, for all "
              f"{len(good)} hellos", "; ".join(unverified))
        replay_bad = []
        for h in good:
            b, r = h["backend"], h["replay"]
            lo, hi = min(backend_sizes([h])), max(backend_sizes([h]))
            if ja3s(b["server_hello"]) != ja3s(r["server_hello"]) or not lo <= r["bytes"] <= hi:
                replay_bad.append(f"{h['name']}: replay {ja3s(r['server_hello'])} {r['bytes']} B,"
                                  f" backend {ja3s(b['server_hello'])} {b['bytes']} B")
        check(not replay_bad, f"[{label}] a replay of each hello through frontgate gets the "
              "backend's answer (same JA3S, same size)", "; ".join(replay_bad))
        tls12 = any((h["backend"]["server_hello"] or {}).get("version") != 0x0304 for h in good)
        if tls12:
            vers = one_or_all(hex((h["backend"]["server_hello"] or {}).get("version") or 0)
                              for h in good)
            check(True, f"[{label}] the backend answers TLS {'1.2' if vers == '0x303' else vers}:"
                  " reported as unmatchable, not compared")
        for name, entries in group_hellos(good):
            b_sh = [e["backend"]["server_hello"] for e in entries]
            f_sh = [e["frontgate"]["server_hello"] for e in entries]
            b_sizes, f_sizes = backend_sizes(entries), sizes(entries, "frontgate")
            b_med = statistics.median(b_sizes) if b_sizes else 0
            lo, hi = (min(b_sizes), max(b_sizes)) if b_sizes else (0, 0)
            ja3_eq = all(ja3s(x) == ja3s(y) for x, y in zip(b_sh, f_sh))
            ks_eq = all(ks(x) == ks(y) for x, y in zip(b_sh, f_sh))
            sh_eq = all((x or {}).get("record_len") == (y or {}).get("record_len")
                        for x, y in zip(b_sh, f_sh))
            bytes_eq = bool(f_sizes) and all(lo <= n <= hi for n in f_sizes)
            within5 = bool(f_sizes) and all(abs(n - b_med) <= 0.05 * b_med for n in f_sizes)
            recs_b = one_or_all(len(e["backend"]["records"]) for e in entries)
            recs_f = one_or_all(len(e["frontgate"]["records"]) for e in entries)
            differs = []
            if tls12:
                differs = ["**unmatchable**: the backend answers TLS 1.2"]
            else:
                if not ja3_eq:
                    differs.append("JA3S")
                if not ks_eq:
                    differs.append("key share")
                if not sh_eq:
                    differs.append("ServerHello length")
                if not bytes_eq:
                    differs.append("flight bytes" + ("" if within5 else " (> 5%)"))
                if recs_b != recs_f:
                    differs.append("records (clients accept one)")
            offered = set()
            for e in entries:
                offered |= {g for g, _ in e["offered_key_shares"]} | set(e["offered_groups"])
            for y in f_sh:
                if y and y.get("key_share") and y["key_share"][0] not in offered:
                    notes.append(f"{label}, {name}: frontgate's key share group "
                                 f"{GROUPS.get(y['key_share'][0], hex(y['key_share'][0]))} is one "
                                 "the client never offered.")
                    break
            # The checks go hello by hello, also inside the mtg row.
            for e in entries if not tls12 and mode in ("live", "learned") else []:
                xb, yf = e["backend"]["server_hello"], e["frontgate"]["server_hello"]
                eb, ef = backend_sizes([e]), sizes([e], "frontgate")
                med = statistics.median(eb) if eb else 0
                if mode == "live":
                    why = []
                    if ja3s(xb) != ja3s(yf):
                        why.append(f"JA3S {ja3s(yf)} vs backend {ja3s(xb)}")
                    if ks(xb) != ks(yf):
                        why.append(f"key share {ks(yf)} vs backend {ks(xb)}")
                    if not ef or not all(min(eb) <= n <= max(eb) for n in ef):
                        why.append(f"flight {span(ef)} B vs backend {span(eb)} B")
                    check(not why, f"[{label}] {e['name']}: JA3S, key share and flight bytes "
                          "equal the backend's", "; ".join(why))
                else:
                    check(bool(ef) and all(abs(n - med) <= 0.05 * med for n in ef),
                          f"[{label}] {e['name']}: flight bytes within 5% of the backend's",
                          f"flight {span(ef)} B vs backend median {med:g} B")
            ttfb = lambda side: statistics.median(  # noqa: E731
                [e["ttfb_ms"][side] for e in entries if e["ttfb_ms"].get(side) is not None]
                or [float("nan")])
            table.append({
                "backend": backend, "mode": mode, "hello": name,
                "ja3s": (one_or_all(ja3s(x) for x in b_sh), one_or_all(ja3s(y) for y in f_sh)),
                "ks": (one_or_all(ks(x) for x in b_sh), one_or_all(ks(y) for y in f_sh)),
                "sh": (one_or_all((x or {}).get("record_len", "—") for x in b_sh),
                       one_or_all((y or {}).get("record_len", "—") for y in f_sh)),
                "bytes": (span(b_sizes), span(f_sizes)),
                "records": (recs_b, recs_f),
                "shape": (one_or_all(shape(e["backend"]["records"]) for e in entries[:1]),
                          one_or_all(shape(e["frontgate"]["records"]) for e in entries[:1])),
                "ttfb": (ttfb("backend"), ttfb("replay"), ttfb("frontgate")),
                "differs": ", ".join(differs) or "none",
            })
            if any(e["frontgate"].get("after_flight") for e in entries):
                notes.append(f"{label}, {name}: frontgate sent "
                             f"{one_or_all(e['frontgate'].get('after_flight') for e in entries)} "
                             "bytes after its flight, before the client said anything.")
        dl = run.get("download", {})
        for side in ("backend", "frontgate"):
            if side in dl:
                err = dl[side].get("error")
                check(not err, f"[{label}] the {args.download_bytes >> 20} MiB download "
                      f"({'HTTPS GET from the backend' if side == 'backend' else 'fake DC through frontgate'}) "
                      "completes", err or "")
        if broken:
            notes.append(f"{label}: no measurement for {', '.join(broken)}.")

    # ------------------------------------------------------------ record-size histograms
    dl_rows = []
    biggest = {}  # (backend, mode, side) -> largest data record payload
    for (backend, mode), run in sorted(
        runs.items(), key=lambda kv: (ORDER.index(kv[0][0]) if kv[0][0] in ORDER else 99,
                                      MODE_ORDER.index(kv[0][1]))
    ):
        dl = run.get("download", {})
        for side in ("backend", "frontgate"):
            d = dl.get(side)
            if not d or d.get("error"):
                continue
            top = d["sizes"][:4]
            rest = d["records"] - sum(c for _, _, c in top)
            hist = ", ".join(f"{RECORD_TYPES.get(t, t)} {n} ×{c}" for t, n, c in top)
            if rest:
                hist += f", {rest} other"
            full = max((n for t, n, _ in d["sizes"] if t == 23), default=0)
            biggest[(backend, mode, side)] = full
            first = " ".join(str(n) for _, n in d.get("first", [])[:6])
            dl_rows.append((backend, "backend (Python ssl client)" if side == "backend"
                            else f"frontgate `{mode}` (fake DC)", d.get("version") or "fake-TLS",
                            d["records"], full, hist, first))

    # Mirroring modes send the site's full record size, or the largest a client takes
    # (2^14) when the site's is larger. The backend's own download is measured once per
    # backend (its first mode's run).
    for (backend, mode, side), full in biggest.items():
        if side != "frontgate" or mode not in ("live", "learned") or backend == "nginx-default":
            continue
        site = next((f for (b, _, s), f in biggest.items() if b == backend and s == "backend"), 0)
        if site:
            want = min(site, 16384)
            check(full == want, f"[{backend}/{mode}] download records: largest {full} B, the "
                  f"site's {site} B (clients take at most 16384)", f"want {want}")

    # ------------------------------------------------------------ the document
    modes = args.modes.split()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_hellos = max((len(r["hellos"]) for r in runs.values()), default=0)
    L = []
    L.append("# Fidelity: frontgate's fake flight vs the fronted site's own answer\n")
    L.append(f"Generated by `integration/fidelity.sh` on {now} (run by hand, not in CI; "
             f"{args.elapsed} s). Binary: `{args.frontgate}`; mimic modes measured: "
             f"{', '.join(f'`{m}`' for m in modes)}"
             + (" (the binary refuses `mimic: live`: only its fixed shape exists)"
                if modes == ["fixed"] else "")
             + f". Timing: median of {args.tries} tries per hello and side. Downloads: "
             f"{args.download_bytes >> 20} MiB. Client side: {args.system_openssl} (Python's ssl), "
             f"{versions['openssl4']} (pyOpenSSL backend). Loopback, 2 shared cores.\n")
    L.append("## Method\n")
    L.append(
        "A prober that captured a Telegram client's ClientHello replays it; frontgate's replay "
        "cache sends the replay to the route's `to`, so the prober gets the real backend's "
        "answer to that exact hello and can hold it against what the client got. For each "
        f"backend and each of {n_hellos} client hellos (TDLib 1.8.66's recorded hello, the hello "
        "TelethonFakeTLS's codec builds, mtg's six `client-hello-ok-*` vectors; every one "
        "re-signed for the configured user at the current time, with a fresh session id as a "
        "client makes, every other byte as the client sent it) the script sends the signed "
        "hello through frontgate (an `mtproto: true` route whose `to` is that backend: the fake "
        "flight the client gets), the same bytes straight to the backend (the prober's replay "
        "as the backend answers it) and the same bytes again through frontgate (the replay as "
        "a prober really sends it, checked to get the backend's answer). The hellos run in "
        "the table's order against one frontgate per backend and mode, so under `learned` a "
        "hello's first connection gets what the hellos before it taught. It compares JA3S "
        "(legacy version, cipher, extension types in order), the key-share group and length, "
        "the ServerHello record, the flight's bytes on the wire (everything until the server "
        "waits for the client; for the backend, until 200 ms of silence, 30 ms in the timing "
        "tries), its records, and the time from the hello's last byte to the server's first. "
        "Flight bytes are given over the capture and every timing try: OpenSSL's ECDSA "
        "signature varies by a byte or two per handshake, so a backend is a range too, and "
        "\"equal\" means inside the backend's own range. The five mtg vectors of one shape "
        "(517 bytes) share a row. Then one download per side: a real TLS client (Python ssl "
        "on a MemoryBIO, so the raw records are seen) fetching the body over HTTPS from the "
        "backend, and a fake-TLS session through frontgate (handshake, obfuscated2 init) to a "
        "loopback fake DC (every DC id mapped to it in `mtproto.datacenters`) that sends the "
        "same number of bytes.\n")
    L.append("## What a server cannot hide\n")
    L.append(
        "The client's own ClientHello. TDLib's hello (1752 bytes: GREASE, an X25519MLKEM768 "
        "share, ECH GREASE, ALPS, a 32-byte session id, the digest in `random`) and the "
        "TelethonFakeTLS and mtg hellos (517 bytes, fixed extension order, the padding to 517) "
        "are fingerprints of Telegram clients before the server says a word, and the 28 zero "
        "bytes of `HMAC XOR random` are a fingerprint to anyone who knows the secret. No "
        "server answer changes that; frontgate can only make the answer indistinguishable "
        "from the site's. Two more limits sit in the clients: they accept exactly ONE "
        "application-data record in the flight (so OpenSSL's four encrypted records become "
        "one of the same total size), and they refuse records over 2^14 payload bytes, while "
        "a TLS 1.3 server's full records carry 16384 + 17 = 16401 (TLS 1.2 AES-GCM: 16408; "
        "TDLib's `TlsReaderByteFlow.cpp` refuses `len > (1 << 14)`). frontgate downloads the "
        "site's front page at start to learn its record sizes: a site whose records fit "
        "(`ssl_buffer_size 4k`: 4113) is matched exactly; one sending full 16401-byte records "
        "gets 16384-byte ones, 17 bytes short, the one record-size difference no fake-TLS "
        "server can avoid (table below). A TLS 1.2-only backend "
        "cannot be matched at all: its ServerHello has no key_share, its certificate goes in "
        "the clear, and no Telegram client speaks that.\n")
    L.append("## Handshake flights: backend → frontgate\n")
    L.append("Each cell is `backend → frontgate`. First byte: backend direct / the replay "
             "through frontgate / frontgate's fake flight, ms (median).\n")
    L.append("| backend | client hello | mode | JA3S | key share | ServerHello B | flight B "
             "| records | first byte ms | differs |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        bname = r["backend"]
        L.append(
            f"| {bname} | {r['hello']} | `{r['mode']}` | {r['ja3s'][0]} → {r['ja3s'][1]} "
            f"| {r['ks'][0]} → {r['ks'][1]} | {r['sh'][0]} → {r['sh'][1]} "
            f"| {r['bytes'][0]} → {r['bytes'][1]} | {r['records'][0]} → {r['records'][1]} "
            f"| {ms(r['ttfb'][0])} / {ms(r['ttfb'][1])} / {ms(r['ttfb'][2])} | {r['differs']} |")
    L.append("")
    L.append("Backends: " + "; ".join(
        f"**{k}**: {v.format(**versions)}" for k, v in BACKENDS.items()
        if any(b == k for b, _ in runs)) + ".\n")
    L.append("Record shapes (first capture, TDLib's hello), backend → frontgate:\n")
    seen = set()
    for r in table:
        if r["hello"].startswith("tdlib") and (r["backend"], r["shape"]) not in seen:
            seen.add((r["backend"], r["shape"]))
            L.append(f"- {r['backend']} `{r['mode']}`: {r['shape'][0]} → {r['shape'][1]}")
    L.append("")
    L.append(f"## Bulk transfer: TLS records of one {args.download_bytes >> 20} MiB download\n")
    L.append("| backend | side | TLS | records | largest record payload B | record payload sizes "
             "(type, length ×count) | first records after the request (payload B) |")
    L.append("|---|---|---|---|---|---|---|")
    for row in dl_rows:
        L.append("| " + " | ".join(str(x) for x in row) + " |")
    L.append("")
    L.append("## Time to the first server byte\n")
    L.append("Median over each run's hellos, ms, from the hello's last byte written. A prober "
             "measures its replay through frontgate; an observer on the client's path measures "
             "the fake flight. Loopback on a shared machine: read the order, not the digits.\n")
    L.append("| backend | mode | backend direct | replay through frontgate | fake flight | fake − replay |")
    L.append("|---|---|---|---|---|---|")
    for key in sorted(runs, key=run_order):
        rows = [r for r in table if (r["backend"], r["mode"]) == key]
        med = [statistics.median([r["ttfb"][i] for r in rows if r["ttfb"][i] == r["ttfb"][i]]
                                 or [float("nan")]) for i in range(3)]
        L.append(f"| {key[0]} | `{key[1]}` | {ms(med[0])} | {ms(med[1])} | {ms(med[2])} "
                 f"| {med[2] - med[1]:+.2f} |")
        if med[2] - med[1] > 5:
            notes.append(f"{key[0]}/{key[1]}: the fake flight's first byte comes "
                         f"{med[2] - med[1]:.1f} ms after the replay's ({ms(med[2])} vs "
                         f"{ms(med[1])} ms): an observer on the client's path sees the delay.")
    L.append("")
    said = {}  # what was logged -> the runs that logged it
    for key in sorted(runs, key=run_order):
        for line in runs[key]["said"].splitlines():
            line = " ".join(line.split())
            if line:
                said.setdefault(line, []).append(f"{key[0]}/{key[1]}")
    L.append("## What frontgate logged\n")
    L.append("Warnings, mimic lines and `frontgate check` remarks (with how often each run logged "
             "them), and how the connections ended; connection lines themselves left out.\n")
    if said:
        for line, where in said.items():
            L.append(f"- {where_runs(where)}: `` {line} ``")
    else:
        L.append("Nothing beyond the connection lines.")
    L.append("")
    L.append("## Notes\n")
    fixed_modes = [m for m in ("fixed", "off") if m in modes]
    for m in fixed_modes:
        fake = [n for run_key, run in runs.items() if run_key[1] == m
                for h in run["hellos"] if "error" not in h for n in sizes([h], "frontgate")]
        spread = [max(backend_sizes([h])) - min(backend_sizes([h])) for run_key, run in runs.items()
                  if run_key[1] == m for h in run["hellos"] if "error" not in h]
        if fake:
            notes.insert(0, f"`{m}`: the fake flight's size is drawn anew for every connection "
                         f"({min(fake)}–{max(fake)} B over {len(fake)} flights), while a "
                         f"backend's flight for one hello varies by at most {max(spread)} B: a "
                         "prober that replays one hello a few times sees the difference.")
    firsts = {}
    for (backend, mode), run in runs.items():
        d = run.get("download", {}).get("frontgate")
        if d and not d.get("error") and d.get("first"):
            firsts.setdefault(d["first"][0][1], []).append(f"{backend}/{mode}")
    for n, where in sorted(firsts.items()):
        if n != 16384:
            notes.append(f"The first record frontgate sends after the obfuscated2 init carries {n} "
                         f"payload bytes ({where_runs(where)}); the rest are full 16384-byte "
                         "records and the remainder.")
    after = {}
    for (backend, mode), run in sorted(runs.items()):
        for how, a in run.get("after_flight", {}).items():
            if how == "hello" or not isinstance(a, dict):
                continue
            if a.get("error"):
                notes.append(f"{backend}/{mode}: after the fake flight, {how}: {a['error']}.")
            else:
                after.setdefault(how, []).append((f"{backend}/{mode}", a))
    for how, seen in after.items():
        what = ("half-closes (shuts its write side)" if how == "half-close"
                else "sends a data record of 64 random bytes (no obfuscated2 init)")
        fronted = [(lbl, a) for lbl, a in seen if a.get("server_hello")]
        quiet = [lbl for lbl, a in seen if not a.get("bytes")]
        other = [(lbl, a) for lbl, a in seen if a.get("bytes") and not a.get("server_hello")]
        if fronted:
            notes.append(
                f"After the fake flight, a client that {what} then gets the backend's own "
                "ServerHello flight on the same connection: frontgate forwards the hello to `to` "
                "after it has already answered it (" + "; ".join(
                    f"{lbl}: {a['bytes']} B, {shape(a['records'])}" for lbl, a in fronted) + ").")
        if quiet:
            notes.append(f"After the fake flight, a client that {what} gets nothing more "
                         f"({where_runs(quiet)}).")
        for lbl, a in other:
            notes.append(f"{lbl}: after the fake flight, a client that {what} gets {a['bytes']} "
                         f"more bytes starting {a['head']}.")
    for n in dict.fromkeys(notes):
        L.append(f"- {n}")
    L.append("")
    passed = sum(1 for g, _, _ in checks if g)
    L.append(f"Checks made from these results (fidelity.sh adds its own: config, liveness, "
             f"no panic): {passed} passed, {len(checks) - passed} failed"
             + ("" if passed == len(checks) else " — " + "; ".join(
                 f"{w}: {y}" for g, w, y in checks if not g)) + ".\n")
    args.out.write_text("\n".join(L))
    for good, what, why in checks:
        print(f"ok   {what}" if good else f"FAIL {what}: {why or 'failed'}")


if __name__ == "__main__":
    main()
