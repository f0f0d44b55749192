"""The local identity provider: tokens the local gateway (and API Gateway) would accept."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from local import tokens

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return tokens.generate_key()


def _decode(
    token: str,
    key: rsa.RSAPrivateKey,
    issuer: str = tokens.LOCAL_ISSUER,
    audience: str = tokens.LOCAL_AUDIENCE,
) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(
        token, tokens.public_key(key), algorithms=["RS256"], issuer=issuer, audience=audience
    )
    return claims


def test_token_round_trip_carries_the_claims(key: rsa.RSAPrivateKey) -> None:
    before = int(time.time())
    token = tokens.issue_token("patient", "demo", ["pat_1", "pat_2"], sub="user-7", key=key)
    claims = _decode(token, key)
    assert claims["sub"] == "user-7"
    assert claims["clinic_id"] == "demo"
    assert claims["role"] == "patient"
    assert claims["patient_ids"] == ["pat_1", "pat_2"]
    assert claims["iss"] == tokens.LOCAL_ISSUER
    assert claims["aud"] == tokens.LOCAL_AUDIENCE
    iat = claims["iat"]
    assert isinstance(iat, int)
    assert before <= iat <= int(time.time())
    assert claims["nbf"] == iat
    assert claims["exp"] == iat + 43200
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == tokens.key_id(key.public_key())


def test_defaults_sub_and_empty_patients(key: rsa.RSAPrivateKey) -> None:
    claims = _decode(tokens.issue_token("staff", "demo", key=key), key)
    assert claims["sub"] == "local-staff"
    assert claims["patient_ids"] == []


def test_issuer_audience_and_ttl_can_be_chosen(key: rsa.RSAPrivateKey) -> None:
    token = tokens.issue_token(
        "admin", "c1", ttl_seconds=60, issuer="https://other/", audience="aud-2", key=key
    )
    claims = _decode(token, key, issuer="https://other/", audience="aud-2")
    assert claims["exp"] == claims["iat"] + 60  # type: ignore[operator]
    with pytest.raises(jwt.InvalidAudienceError):
        _decode(token, key, issuer="https://other/")
    with pytest.raises(jwt.InvalidIssuerError):
        _decode(token, key, audience="aud-2")


def test_expired_token_is_rejected_by_a_verifier(key: rsa.RSAPrivateKey) -> None:
    token = tokens.issue_token("admin", "demo", ttl_seconds=10, key=key, now=int(time.time()) - 60)
    with pytest.raises(jwt.ExpiredSignatureError):
        _decode(token, key)


def test_another_key_does_not_verify(key: rsa.RSAPrivateKey) -> None:
    token = tokens.issue_token("admin", "demo", key=tokens.generate_key())
    with pytest.raises(jwt.InvalidSignatureError):
        _decode(token, key)


@pytest.mark.parametrize("role", ["superuser", "", "Patient"])
def test_issue_token_rejects_unknown_roles(role: str, key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="role must be one of"):
        tokens.issue_token(role, "demo", key=key)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "key.pem"
    first = tokens.load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = tokens.load_or_create_key(path)
    assert tokens.key_id(first.public_key()) == tokens.key_id(second.public_key())
    assert [p.name for p in path.parent.iterdir()] == ["key.pem"]  # no temporary left behind


def test_a_racing_writer_keeps_the_first_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes creating the key at once both end up with the one that was linked first."""
    path = tmp_path / "key.pem"
    winner = tokens.generate_key()
    real_link = os.link

    def link_after_other_process(src: str, dst: Path) -> None:
        dst.write_bytes(tokens._pem(winner))  # the other process got there first
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_other_process)
    got = tokens.load_or_create_key(path)
    assert tokens.key_id(got.public_key()) == tokens.key_id(winner.public_key())
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_cli_prints_the_token_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "key.pem"
    argv = ["--role", "patient", "--clinic", "demo", "--patients", "pat_1, pat_2", "--sub", "x"]
    code = tokens.main([*argv, "--key-file", str(key_file)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    key = tokens.load_or_create_key(key_file)
    claims = _decode(lines[-1], key)
    assert claims["patient_ids"] == ["pat_1", "pat_2"]
    assert claims["sub"] == "x"
    assert claims["clinic_id"] == "demo"


def test_cli_treats_empty_patients_and_sub_as_not_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key.pem"
    argv = ["--role", "staff", "--clinic", "demo", "--patients", "", "--sub", ""]
    assert tokens.main([*argv, "--key-file", str(key_file)]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    claims = _decode(token, tokens.load_or_create_key(key_file))
    assert claims["sub"] == "local-staff"
    assert claims["patient_ids"] == []


def test_cli_rejects_a_bad_role_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        tokens.main(["--role", "owner", "--clinic", "demo", "--key-file", str(tmp_path / "k")])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "--role must be one of admin, staff, patient" in captured.err
    assert captured.out == ""
    assert not (tmp_path / "k").exists()


def test_cli_as_a_module_prints_the_token_last_and_exits_2_on_a_bad_role(
    tmp_path: Path,
) -> None:
    root = Path(tokens.__file__).resolve().parent.parent
    key_file = tmp_path / "key.pem"
    common = ["--clinic", "demo", "--patients", "pat_1", "--key-file", str(key_file)]
    ok = subprocess.run(
        [sys.executable, "-m", "local.tokens", "--role", "patient", *common],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    claims = _decode(ok.stdout.strip().splitlines()[-1], tokens.load_or_create_key(key_file))
    assert claims["patient_ids"] == ["pat_1"]

    bad = subprocess.run(
        [sys.executable, "-m", "local.tokens", "--role", "root", *common],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "--role must be one of admin, staff, patient" in bad.stderr
