"""``python -m provenance``: check a saved result's signature offline, or make a signing key.

    python -m provenance verify result.json --keys jwks.json     # exit 0: intact
    python -m provenance verify result.json --keys http://localhost:3000/.well-known/jwks.json
    python -m provenance keygen --out signing-key.pem            # for VERITY_SIGNING_KEY_FILE

``verify`` exits 0 when the result is intact and signed by one of the keys, 1 when it is not
(changed after signing, unsigned, or signed by a key the set does not hold), 2 when it cannot
check (a missing or unreadable file, keys that cannot be fetched).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from provenance.signing import SignatureProblem, private_pem, public_keys, public_pem, verify

log = logging.getLogger("provenance")

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def _document(source: str) -> Any:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as response:
            return json.loads(response.read(MAX_DOCUMENT_BYTES))
    return json.loads(Path(source).read_bytes()[:MAX_DOCUMENT_BYTES])


def _verify(args: argparse.Namespace) -> int:
    try:
        result = _document(args.result)
        keys = public_keys(_document(args.keys))
    except (OSError, ValueError) as exc:
        log.error("cannot check: %s", exc)
        return 2
    if not isinstance(result, dict):
        log.error("not a result: %s holds no JSON object", args.result)
        return 1
    try:
        kid = verify(result, keys)
    except SignatureProblem as exc:
        log.error("NOT intact: %s", exc)
        return 1
    log.info("intact: %s is signed by key %s", args.result, kid)
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    out: Path = args.out
    if out.exists():
        log.error("%s exists: refusing to overwrite a signing key", out)
        return 2
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem(key))
    log.info("signing key written to %s (keep it secret); its public key:\n%s", out, public_pem(key).decode())
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m provenance", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check a saved result's signature")
    check.add_argument("result", help="a result saved as JSON")
    check.add_argument("--keys", required=True, help="the service's JWK Set: a file or its URL")
    make = commands.add_parser("keygen", help="write a new Ed25519 signing key (PKCS#8 PEM)")
    make.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    return _verify(args) if args.command == "verify" else _keygen(args)


if __name__ == "__main__":
    sys.exit(main())
