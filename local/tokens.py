"""The local identity provider: RS256 tokens shaped like the ones API Gateway's authorizer checks.

The signing key lives in `.local-state/jwt-signing-key.pem` (gitignored), created on first use,
so `make run` and `make token` in another terminal sign with the same key.

    python -m local.tokens --role patient --clinic demo --patients pat_1,pat_2 [--sub X]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".local-state"
KEY_FILE = STATE_DIR / "jwt-signing-key.pem"

LOCAL_ISSUER = "https://issuer.local.clinic-payments.invalid/"
LOCAL_AUDIENCE = "clinic-payments-api"
ROLES = ("admin", "staff", "patient")
DEFAULT_TTL_SECONDS = 12 * 3600


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _read_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise RuntimeError(f"{path} is not a PEM private key: delete it to get a new one") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise RuntimeError(f"{path} is not an RSA key: delete it to get a new one")
    return key


def load_or_create_key(path: Path = KEY_FILE) -> rsa.RSAPrivateKey:
    """The key in `path`, created (mode 0600) when missing. Safe when two processes race.

    The new key is written to a temporary file and linked into place, which fails if another
    process got there first; either way every process then uses the file that won.
    """
    if path.exists():
        return _read_key(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".jwt-key-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_pem(generate_key()))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        except OSError:
            if not path.exists():  # no hard links on this filesystem
                os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return _read_key(path)


@cache
def signing_key() -> rsa.RSAPrivateKey:
    """The local issuer's private key (from `.local-state/`)."""
    return load_or_create_key(KEY_FILE)


def public_key(key: rsa.RSAPrivateKey | None = None) -> rsa.RSAPublicKey:
    """What a verifier needs: the public half of `key` (default: the local issuer's key)."""
    return (key or signing_key()).public_key()


def key_id(key: rsa.RSAPublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:12]).decode().rstrip("=")


def issue_token(
    role: str,
    clinic_id: str,
    patient_ids: Iterable[str] = (),
    sub: str | None = None,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    *,
    issuer: str = LOCAL_ISSUER,
    audience: str = LOCAL_AUDIENCE,
    key: rsa.RSAPrivateKey | None = None,
    now: int | None = None,
) -> str:
    """A signed RS256 JWT with the claims the API's authorizer and handlers expect."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not clinic_id:
        raise ValueError("clinic_id is required")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    signer = key or signing_key()
    issued = int(time.time()) if now is None else now
    claims = {
        "sub": sub or f"local-{role}",
        "clinic_id": clinic_id,
        "role": role,
        "patient_ids": list(patient_ids),
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(
        claims, signer, algorithm="RS256", headers={"kid": key_id(signer.public_key())}
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.tokens",
        description="Print a local API token (RS256, signed with .local-state/ key).",
    )
    parser.add_argument("--role", required=True, help="admin | staff | patient")
    parser.add_argument("--clinic", required=True, help="the clinic_id claim, e.g. demo")
    parser.add_argument("--patients", default="", help="comma-separated patient ids")
    parser.add_argument("--sub", default="", help="subject (default local-<role>)")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="seconds")
    parser.add_argument("--key-file", type=Path, default=KEY_FILE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role not in ROLES:
        parser.error(f"--role must be one of {', '.join(ROLES)} (got {args.role!r})")
    if not args.clinic:
        parser.error("--clinic must not be empty")
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    patients = [p.strip() for p in args.patients.split(",") if p.strip()]
    if args.role == "patient" and not patients:
        print("note: a patient token without --patients may act for no patient", file=sys.stderr)
    token = issue_token(
        args.role,
        args.clinic,
        patients,
        sub=args.sub or None,
        ttl_seconds=args.ttl,
        key=load_or_create_key(args.key_file),
    )
    print(token, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
