"""The client half of MTProto fake-TLS, shared by the scripts that drive frontgate with
recorded Telegram hellos (soak.py, fidelity/capture.py, fidelity/measure.py). No I/O here.

  load_hello(path)            the `full` TLS record of a vector JSON file (tests/data/...):
                              standard or URL-safe base64, padding optional.
  parse_client_hello(record)  what a server looks at: session id, cipher suites, supported
                              groups, key-share groups offered, SNI.
  sign_hello(template, secret, now=None, fresh_session_id=True)
                              the template re-signed for `secret` at `now` (PROTOCOL.md §2):
                              random := HMAC-SHA256(secret, record with random zeroed) with
                              the last 4 bytes XOR the LE unix time. Every other byte stays as
                              the client sent it, except the session id, made fresh (as a
                              client does on each connection) unless told not to: two hellos
                              signed in the same second then differ, so the replay cache does
                              not take the second for a replay. Returns (record, random).
  verify_flight(data, secret, client_random)
                              checks a fake server flight the way TDLib does
                              (td/mtproto/TlsInit.cpp): `16 03 03` + length + body, then
                              `14 03 03 00 01 01 17 03 03` + length + body, and the server
                              digest at offset 11 = HMAC(secret, client random || those bytes
                              with the digest zeroed). Returns (ok, why, flight length).
  obfuscated2_init(secret, tag, dc)
                              a client's 64-byte obfuscated2 init (PROTOCOL.md §5).
  tls_record(payload, kind)   one record `kind 03 03 LL LL payload`.
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import time

CCS = b"\x14\x03\x03\x00\x01\x01"
RANDOM_AT = 11  # 5 record header + 4 handshake header + 2 version
TAG_PADDED_INTERMEDIATE = b"\xdd" * 4


def load_hello(path):
    with open(path) as f:
        text = json.load(f)["full"]
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return base64.urlsafe_b64decode(text)


def _u16(b, at):
    return int.from_bytes(b[at : at + 2], "big")


def parse_client_hello(record):
    """The fields of a one-record ClientHello that decide a server's answer."""
    b = bytes(record)
    if b[0] != 0x16 or b[5] != 0x01:
        raise ValueError("not a ClientHello record")
    at = 5 + 4 + 2 + 32
    sid_len = b[at]
    out = {"session_id_at": at + 1, "session_id": b[at + 1 : at + 1 + sid_len]}
    at += 1 + sid_len
    n = _u16(b, at)
    out["cipher_suites"] = [_u16(b, at + 2 + i) for i in range(0, n, 2)]
    at += 2 + n
    at += 1 + b[at]  # compression methods
    end = at + 2 + _u16(b, at)
    at += 2
    out.update(groups=[], key_share_groups=[], sni=None, extensions=[])
    while at + 4 <= end:
        kind, length = _u16(b, at), _u16(b, at + 2)
        data = b[at + 4 : at + 4 + length]
        out["extensions"].append(kind)
        if kind == 0x000A:
            out["groups"] = [_u16(data, 2 + i) for i in range(0, _u16(data, 0), 2)]
        elif kind == 0x0033:
            i = 2
            while i + 4 <= len(data):
                group, klen = _u16(data, i), _u16(data, i + 2)
                out["key_share_groups"].append((group, klen))
                i += 4 + klen
        elif kind == 0x0000 and len(data) >= 5:
            out["sni"] = data[5 : 5 + _u16(data, 3)].decode("ascii", "replace")
        at += 4 + length
    return out


def sign_hello(template, secret, now=None, fresh_session_id=True):
    record = bytearray(template)
    record[RANDOM_AT : RANDOM_AT + 32] = bytes(32)
    if fresh_session_id:
        sid_at = RANDOM_AT + 32
        record[sid_at + 1 : sid_at + 1 + record[sid_at]] = os.urandom(record[sid_at])
    mac = hmac.new(secret, bytes(record), hashlib.sha256).digest()
    stamp = struct.pack("<I", int(time.time() if now is None else now))
    random = mac[:28] + bytes(a ^ b for a, b in zip(mac[28:], stamp))
    record[RANDOM_AT : RANDOM_AT + 32] = random
    return bytes(record), random


def verify_flight(data, secret, client_random):
    if len(data) < 5 or data[:3] != b"\x16\x03\x03":
        return False, f"starts with {data[:5].hex()}, not 16 03 03", 0
    at = 5 + _u16(data, 3)
    if data[at : at + 9] != CCS + b"\x17\x03\x03":
        return False, f"at {at}: {data[at:at + 9].hex()}, not CCS + 17 03 03", 0
    end = at + 11 + _u16(data, at + 9)
    if len(data) < end:
        return False, f"cut: {len(data)} of {end} bytes", 0
    zeroed = bytearray(data[:end])
    zeroed[RANDOM_AT : RANDOM_AT + 32] = bytes(32)
    want = hmac.new(secret, bytes(client_random) + bytes(zeroed), hashlib.sha256).digest()
    if not hmac.compare_digest(want, bytes(data[RANDOM_AT : RANDOM_AT + 32])):
        return False, "server digest does not verify", end
    return True, "", end


def obfuscated2_init(secret, tag=TAG_PADDED_INTERMEDIATE, dc=2):
    while True:
        init = bytearray(os.urandom(64))
        if init[0] != 0xEF and init[4:8] != bytes(4):
            break
    init[56:60] = tag
    init[60:62] = struct.pack("<h", dc)
    key = hashlib.sha256(bytes(init[8:40]) + secret).digest()
    # Imported here: everything else in this module is standard library only, so a script
    # that only signs hellos (integration/fail2ban.sh) needs no third-party package.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(init[40:56]))).encryptor()
    encrypted = enc.update(bytes(init))
    return bytes(init[:56]) + encrypted[56:64]


def tls_record(payload, kind=0x17):
    return bytes([kind, 3, 3]) + len(payload).to_bytes(2, "big") + payload
