"""Keys, tokens, quotas and the access policy, without a server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamvox.stream_server.auth import Access, AuthRefusal, Grant, is_loopback_address, redact_query
from streamvox.stream_server.keys import KeyLimits, KeyRing, KeysFile, KeysFileError, env_keys, new_key
from streamvox.stream_server.quotas import MemoryQuotaStore, QuotaExceeded, Usage
from streamvox.stream_server.tokens import TokenError, TokenSigner

SECRET = "0123456789abcdef-secret"


def _ring(tmp_path: Path, **named: KeyLimits) -> tuple[KeyRing, dict[str, str]]:
    contents = KeysFile(SECRET, [])
    plain = {}
    for name, limits in named.items():
        plain[name], record = new_key(name, limits)
        contents.add(record)
    contents.write(tmp_path / "keys")
    return KeyRing(tmp_path / "keys"), plain


def test_a_key_is_stored_only_as_a_salted_hash(tmp_path: Path) -> None:
    ring, plain = _ring(tmp_path, app=KeyLimits(sessions=2))
    text = (tmp_path / "keys").read_text()
    secret = plain["app"].split("_", 2)[2]
    assert secret not in text and plain["app"] not in text
    assert (tmp_path / "keys").stat().st_mode & 0o077 == 0
    assert ring.verify(plain["app"]).name == "app"  # type: ignore[union-attr]
    assert ring.verify(plain["app"][:-1] + ("A" if plain["app"][-1] != "A" else "B")) is None
    assert ring.verify("sv_ffffffffffff_" + secret) is None
    assert ring.verify("") is None and ring.verify("sv_") is None
    assert KeysFile.read(tmp_path / "keys").records[0].limits == KeyLimits(sessions=2)


def test_revocation_and_reload(tmp_path: Path) -> None:
    ring, plain = _ring(tmp_path, a=KeyLimits(), b=KeyLimits())
    contents = KeysFile.read(tmp_path / "keys")
    contents.revoke("a")
    contents.write(tmp_path / "keys")
    ring.refresh(now=time.monotonic() + 5)
    assert ring.verify(plain["a"]) is None and ring.named("a") is None
    assert ring.verify(plain["b"]).name == "b"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="no key named"):
        contents.revoke("zzz")
    with pytest.raises(ValueError, match="exists already"):
        contents.add(new_key("b")[1])


def test_a_malformed_keys_file_says_where(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text('# fine\n{"token_secret": "x"}\n{"name": "a"}\n')
    with pytest.raises(KeysFileError, match=r"keys:3"):
        KeysFile.read(tmp_path / "keys")
    with pytest.raises(KeysFileError, match="cannot read"):
        KeysFile.read(tmp_path / "missing")


def test_env_keys() -> None:
    pairs = env_keys("ci=abcdefghijklmnop-1, zyxwvutsrqponmlkj")
    assert [r.name for _, r in pairs] == ["ci", "env-2"]
    ring = KeyRing(env_value="ci=abcdefghijklmnop-1")
    assert ring.enabled and ring.verify("abcdefghijklmnop-1").name == "ci"  # type: ignore[union-attr]
    assert ring.verify("abcdefghijklmnop-2") is None
    with pytest.raises(KeysFileError, match="shorter"):
        env_keys("short")


def test_tokens_expire_and_resist_tampering() -> None:
    signer = TokenSigner(SECRET)
    now = time.time()
    token, claims = signer.issue("app", now, 60, voices=["v"], dialects=["native"], sessions=1)
    assert signer.verify(token, now) == claims
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token, now + 61)
    with pytest.raises(TokenError, match="invalid"):
        TokenSigner(SECRET + "x").verify(token, now)
    body, _, sig = token.partition(".")
    with pytest.raises(TokenError, match="invalid"):
        signer.verify(body + "." + sig[:-2] + "AA", now)
    with pytest.raises(TokenError, match="invalid"):
        signer.verify("svt_" + "e30" + "." + sig, now)
    with pytest.raises(ValueError):
        signer.issue("app", now, 3601)


def test_sliding_minute_and_daily_audio() -> None:
    store = MemoryQuotaStore()
    usage = Usage(store, "k", KeyLimits(chars_per_minute=100, audio_s_per_day=10))
    usage.take_text(60, now=1000.0)
    with pytest.raises(QuotaExceeded) as exc:
        usage.take_text(50, now=1030.0)
    assert exc.value.limit == "chars_per_minute"
    usage.take_text(50, now=1061.0)  # the first 60 left the window
    usage.add_audio(10.0, now=1061.0)
    with pytest.raises(QuotaExceeded) as exc:
        usage.take_text(1, now=1062.0)
    assert exc.value.limit == "audio_s_per_day"
    usage.take_text(1, now=86_400 * 2 + 1.0)  # a new UTC day


def test_sessions_for_the_key_and_for_a_token() -> None:
    store = MemoryQuotaStore()
    first = Usage(store, "k", KeyLimits(sessions=2), token_id="t", token_sessions=1)
    first.open()
    second = Usage(store, "k", KeyLimits(sessions=2), token_id="t", token_sessions=1)
    with pytest.raises(QuotaExceeded, match="token"):
        second.open()
    assert store.sessions("k") == 1  # the refused one gave its key place back
    third = Usage(store, "k", KeyLimits(sessions=2))
    third.open()
    with pytest.raises(QuotaExceeded, match="key"):
        Usage(store, "k", KeyLimits(sessions=2)).open()
    first.close()
    third.close()
    assert store.sessions("k") == 0 and store.sessions("token:t") == 0


def test_access_checks(tmp_path: Path) -> None:
    ring, plain = _ring(tmp_path, app=KeyLimits())
    access = Access(ring, MemoryQuotaStore(), allow_origins=("https://ok.example/",))
    assert isinstance(access.check(plain["app"], "native"), Grant)
    refusal = access.check(None, "native")
    assert isinstance(refusal, AuthRefusal) and refusal.missing and refusal.status == 401
    token, _ = access.issue(Grant(ring.verify(plain["app"])), 60, ["v1"], ["openai"], None)
    grant = access.check(token, "openai")
    assert isinstance(grant, Grant) and grant.allows_voice("v1") and not grant.allows_voice("v2")
    forbidden = access.check(token, "native")
    assert isinstance(forbidden, AuthRefusal) and forbidden.status == 403
    with pytest.raises(PermissionError):
        access.issue(grant, 60, None, None, None)  # no tokens from tokens
    assert access.origin_allowed(None, "h:1") and access.origin_allowed("https://ok.example", "h:1")
    assert access.origin_allowed("http://h:1", "h:1") and not access.origin_allowed("http://evil", "h:1")
    assert not access.origin_allowed("http://localhost:5", "h:1")
    assert isinstance(access.check_peer("127.0.0.1"), Grant) and isinstance(access.check_peer("10.0.0.2"), AuthRefusal)
    anonymous = Access(KeyRing(), MemoryQuotaStore())
    assert anonymous.check(None, "native") == Grant() and anonymous.origin_allowed("http://127.0.0.1:9", "h:1")


def test_loopback_and_redaction() -> None:
    assert is_loopback_address("127.0.0.1") and is_loopback_address("::1") and is_loopback_address("localhost")
    assert not is_loopback_address("0.0.0.0") and not is_loopback_address("::")
    assert redact_query("protocol=2&token=svt_abc.def&x=1") == "protocol=2&token=REDACTED&x=1"
    assert "secret" not in redact_query("api_key=secret&xi_api_key=secret&authorization=Bearer+secret")
