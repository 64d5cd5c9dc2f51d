"""The README's split-mode recipe made runnable on loopback, for integration/tdlib.sh.

Takes the Xray client configuration exactly as README.md's "Split mode" section writes it
(the first ```json block there: a SOCKS inbound with password auth and a VLESS +
xtls-rprx-vision + REALITY outbound) and fills in only its placeholders: the foreign
server's address and port (here a second Xray on loopback), the user UUID, REALITY's public
key and short id, and the SOCKS port. Writes beside it the matching "foreign server": Xray
with a VLESS + REALITY inbound (a fresh X25519 key pair; `dest` is a real TLS 1.3 site on
loopback, so REALITY has a handshake to borrow) and a freedom outbound that sends from
--send-through, so the fake DC can tell that a connection came out of the tunnel.

  python xray_recipe.py --readme README.md --out DIR --socks-port P --vless-port Q \
      --dest 127.0.0.1:R --server-name NAME --send-through 127.0.0.9

Writes DIR/xray-client.json, DIR/xray-server.json (access log DIR/xray-server-access.log)
and prints the SOCKS credentials of the recipe as `user:pass`.

  python xray_recipe.py --run CONFIG.json

runs Xray (the Xray-core wheel from PyPI, Xray's own Go code) with CONFIG until killed.
"""

import argparse
import base64
import json
import re
import sys
import time
import uuid

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

SHORT_ID = "5e1f0a7c"


def recipe_client(readme_path):
    """The first JSON block of the README's split-mode section, parsed."""
    text = open(readme_path, encoding="utf-8").read()
    start = text.find("### Split mode")
    if start < 0:
        sys.exit("xray_recipe: README has no '### Split mode' section")
    block = re.search(r"```json\n(.*?)```", text[start:], re.S)
    if not block:
        sys.exit("xray_recipe: the split-mode section has no ```json block")
    return json.loads(block.group(1))


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def x25519_pair():
    key = X25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b64url(private), b64url(public)


def write_configs(args):
    client = recipe_client(args.readme)
    private, public = x25519_pair()
    user_id = str(uuid.uuid4())
    socks = client["inbounds"][0]
    socks["port"] = args.socks_port
    vless = client["outbounds"][0]
    server_entry = vless["settings"]["vnext"][0]
    server_entry["address"] = "127.0.0.1"
    server_entry["port"] = args.vless_port
    user = server_entry["users"][0]
    user["id"] = user_id
    reality = vless["streamSettings"]["realitySettings"]
    reality.update(serverName=args.server_name, publicKey=public, shortId=SHORT_ID)
    client["log"] = {"loglevel": "warning"}
    server = {
        "log": {"loglevel": "warning", "access": f"{args.out}/xray-server-access.log"},
        "inbounds": [
            {
                "listen": "127.0.0.1",
                "port": args.vless_port,
                "protocol": "vless",
                "settings": {"clients": [{"id": user_id, "flow": user.get("flow", "")}], "decryption": "none"},
                "streamSettings": {
                    "network": "tcp",
                    "security": "reality",
                    "realitySettings": {
                        "dest": args.dest,
                        "serverNames": [args.server_name],
                        "privateKey": private,
                        "shortIds": [SHORT_ID],
                    },
                },
            }
        ],
        "outbounds": [
            {
                "protocol": "freedom",
                "sendThrough": args.send_through,
                # Xray's freedom refuses private and loopback targets behind a VLESS inbound
                # by default; the fake DC is on loopback.
                "settings": {"finalRules": [{"action": "allow", "network": "tcp", "ip": ["127.0.0.0/8"]}]},
            }
        ],
    }
    for name, config in (("xray-client.json", client), ("xray-server.json", server)):
        with open(f"{args.out}/{name}", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=1)
    account = socks["settings"]["accounts"][0]
    print(f"{account['user']}:{account['pass']}")


def run(config_path):
    import xray  # the Xray-core wheel; startFromJSON serves until the process ends

    xray.startFromJSON(open(config_path, encoding="utf-8").read())
    while True:  # should it return, Xray's goroutines go on serving
        time.sleep(3600)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run")
    parser.add_argument("--readme")
    parser.add_argument("--out")
    parser.add_argument("--socks-port", type=int)
    parser.add_argument("--vless-port", type=int)
    parser.add_argument("--dest")
    parser.add_argument("--server-name")
    parser.add_argument("--send-through")
    args = parser.parse_args()
    if args.run:
        run(args.run)
    else:
        write_configs(args)


if __name__ == "__main__":
    main()
