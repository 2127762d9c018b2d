"""A tiny Python service that uses a Tooken token the way Tooken's guide shows: from the
environment, as os.environ["TOOKEN_TOKEN"]. Under Vault Agent's process supervisor
(agent-exec.hcl) the variable always holds a live token: Agent restarts the process with a new
one before the old one's lease ends. Started by anything else, it reads the token from the file
TOOKEN_TOKEN_FILE names instead, if set (agent-file.hcl renders it), again before every call,
since Agent replaces the file's contents and nothing tells the process.

Every TOOKEN_CHECK_INTERVAL seconds (default 60) it asks Tooken which token it holds
(GET /tokens/self) and logs the token's id, never its secret.
"""

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

BASE_URL = os.environ.get("TOOKEN_URL", "https://api.tooken.io/v1")
INTERVAL = float(os.environ.get("TOOKEN_CHECK_INTERVAL", "60"))


def log(msg):
    print(f"tooken-app[python]: {msg}", flush=True)


def token():
    path = os.environ.get("TOOKEN_TOKEN_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ["TOOKEN_TOKEN"]


def check():
    req = urllib.request.Request(
        f"{BASE_URL}/tokens/self", headers={"Authorization": f"Bearer {token()}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            me = json.load(res)
        log(f"token {me['id']} works, expires {me['expires_at']}")
    except urllib.error.HTTPError as err:
        log(f"GET /tokens/self answered {err.code}")
    except (OSError, ValueError) as err:
        log(f"calling Tooken failed: {err}")


def stop(*_):
    log(f"stopping, pid {os.getpid()}")
    sys.exit(0)


def main():
    if not os.environ.get("TOOKEN_TOKEN") and not os.environ.get("TOOKEN_TOKEN_FILE"):
        print("tooken-app[python]: TOOKEN_TOKEN is not set", file=sys.stderr)
        sys.exit(1)
    signal.signal(signal.SIGTERM, stop)
    log(f"started, pid {os.getpid()}")
    while True:
        check()
        time.sleep(INTERVAL)


if __name__ == "__main__":
    main()
