"""API keys: the keys file, the ``STREAMVOX_API_KEYS`` variable, and checking a presented key.

A key is ``sv_<id>_<secret>``: ``id`` (12 hex digits) finds its line, and only
a salted SHA-256 of the secret is stored.  The secret is 32 random bytes, so a
fast hash is enough (slow password hashes are for guessable secrets) and
checking costs microseconds per request.  Comparison is constant-time, and an
unknown id costs the same comparison as a known one.

The keys file holds one JSON object per line: a ``token_secret`` line (the
HMAC key for browser tokens, written when the file is made) and one line per
key: ``name``, ``id``, ``salt``, ``hash``, ``limits``, ``voices`` and
``revoked``.  ``# comments`` and blank lines are allowed.  The server re-reads
the file when it changes, so ``streamvox keys revoke`` takes effect within a
second without a restart.

Keys never reach a log: only their names do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

KEY_PREFIX = "sv_"
ENV_KEYS = "STREAMVOX_API_KEYS"
"""Comma-separated keys (``name=key`` or a bare key, at least 16 characters) with no limits."""
MIN_ENV_KEY = 16
_ID_HEX = 12
_RELOAD_EVERY_S = 1.0


class KeysFileError(ValueError):
    """The keys file cannot be read or a line in it is malformed (the message says where)."""


@dataclass(frozen=True)
class KeyLimits:
    """What one key (with every token made from it) may use; ``None``: no limit."""

    sessions: int | None = None
    """Sessions (sockets, HTTP requests being answered) open at once."""
    chars_per_minute: int | None = None
    """Characters of text accepted in any 60 seconds."""
    audio_s_per_day: float | None = None
    """Seconds of audio sent per UTC day."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"limit {name} must be a positive number or absent, got {value!r}")

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> KeyLimits:
        unknown = set(raw) - {"sessions", "chars_per_minute", "audio_s_per_day"}
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}")
        return cls(**raw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored: never its secret."""

    name: str
    key_id: str
    salt: str
    digest: str
    limits: KeyLimits = field(default_factory=KeyLimits)
    voices: tuple[str, ...] | None = None
    """Voice ids the key may use (``None``: all)."""
    revoked: bool = False

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "id": self.key_id, "salt": self.salt, "hash": self.digest,
                "limits": {k: v for k, v in asdict(self.limits).items() if v is not None},
                "voices": None if self.voices is None else list(self.voices), "revoked": self.revoked}  # fmt: skip

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> KeyRecord:
        voices = raw.get("voices")
        return cls(
            name=str(raw["name"]),
            key_id=str(raw["id"]),
            salt=str(raw["salt"]),
            digest=str(raw["hash"]),
            limits=KeyLimits.from_json(raw.get("limits") or {}),  # type: ignore[arg-type]
            voices=None if voices is None else tuple(str(v) for v in voices),  # type: ignore[union-attr]
            revoked=bool(raw.get("revoked", False)),
        )


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def new_key(name: str, limits: KeyLimits | None = None, voices: Iterable[str] | None = None) -> tuple[str, KeyRecord]:
    """A fresh key: the text to hand out once, and the record to store."""
    if not name or any(c.isspace() for c in name):
        raise ValueError("a key's name must be non-empty and without spaces")
    key_id = secrets.token_hex(_ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    record = KeyRecord(name, key_id, salt, _digest(salt, secret), limits or KeyLimits(),
                       None if voices is None else tuple(voices))  # fmt: skip
    return f"{KEY_PREFIX}{key_id}_{secret}", record


@dataclass
class KeysFile:
    """The keys file's contents: read, changed and written back (by ``streamvox keys``)."""

    token_secret: str
    records: list[KeyRecord]

    @classmethod
    def read(cls, path: str | Path) -> KeysFile:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeysFileError(f"cannot read keys file {path}: {exc.strerror or exc}") from None
        token_secret = ""
        records: list[KeyRecord] = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                raw = json.loads(line)
                if "token_secret" in raw:
                    token_secret = str(raw["token_secret"])
                else:
                    records.append(KeyRecord.from_json(raw))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise KeysFileError(f"{path}:{number}: not a key line ({exc})") from None
        names = [r.name for r in records]
        if len(set(names)) != len(names):
            raise KeysFileError(f"{path}: two keys share a name")
        return cls(token_secret, records)

    @classmethod
    def read_or_new(cls, path: str | Path) -> KeysFile:
        if Path(path).exists():
            return cls.read(path)
        return cls(secrets.token_urlsafe(32), [])

    def write(self, path: str | Path) -> None:
        """Replace the file atomically, readable by its owner only."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        lines = ["# streamvox keys: one JSON object per line; edit with `streamvox keys`",
                 json.dumps({"token_secret": self.token_secret})]  # fmt: skip
        lines += [json.dumps(r.to_json()) for r in self.records]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        os.replace(tmp, target)

    def add(self, record: KeyRecord) -> None:
        if any(r.name == record.name for r in self.records):
            raise ValueError(f"a key named {record.name!r} exists already")
        self.records.append(record)

    def revoke(self, name: str) -> None:
        for i, record in enumerate(self.records):
            if record.name == name:
                self.records[i] = replace(record, revoked=True)
                return
        raise ValueError(f"no key named {name!r}")


def env_keys(value: str) -> list[tuple[str, KeyRecord]]:
    """Keys given in ``STREAMVOX_API_KEYS``: (plain key, record) pairs, hashed in memory."""
    keys = []
    for i, item in enumerate(part.strip() for part in value.split(",")):
        if not item:
            continue
        name, _, key = item.partition("=") if "=" in item else (f"env-{i + 1}", "", item)
        if len(key) < MIN_ENV_KEY:
            raise KeysFileError(f"{ENV_KEYS}: key {name!r} is shorter than {MIN_ENV_KEY} characters")
        salt = secrets.token_hex(16)
        keys.append((key, KeyRecord(name, "", salt, _digest(salt, key))))
    return keys


class KeyRing:
    """Checks presented keys against the keys file (re-read when it changes) and the env keys.

    Thread-safe: a reload swaps whole tables."""

    def __init__(self, path: str | Path | None = None, env_value: str | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._env = env_keys(env_value) if env_value else []
        self._by_id: dict[str, KeyRecord] = {}
        self._by_name: dict[str, KeyRecord] = {}
        self.token_secret = ""
        self._stamp: tuple[int, int] | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self._load()

    @property
    def enabled(self) -> bool:
        """Whether any key exists (else the server is anonymous)."""
        return self.path is not None or bool(self._env)

    def _load(self) -> None:
        """(Re)build the tables from the keys file, if any, and the env keys (which win a name)."""
        contents = KeysFile("", [])
        if self.path is not None:
            stat = self.path.stat()
            contents = KeysFile.read(self.path)
            self._stamp = (stat.st_mtime_ns, stat.st_size)
        self._by_id = {r.key_id: r for r in contents.records}
        self._by_name = {r.name: r for r in contents.records} | {r.name: r for _, r in self._env}
        self.token_secret = contents.token_secret

    def refresh(self, now: float | None = None) -> None:
        """Re-read the keys file if it changed (checked at most once a second).  A file that
        turns unreadable or malformed keeps the last good keys (and the error is raised)."""
        if self.path is None:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            if now - self._checked_at < _RELOAD_EVERY_S:
                return
            self._checked_at = now
            try:
                stat = self.path.stat()
            except OSError:
                return
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                self._load()

    def verify(self, presented: str) -> KeyRecord | None:
        """The live (not revoked) key ``presented`` is, or ``None``."""
        found: KeyRecord | None = None
        if presented.startswith(KEY_PREFIX):
            key_id, _, secret = presented[len(KEY_PREFIX) :].partition("_")
            record = self._by_id.get(key_id)
            salt, digest = (record.salt, record.digest) if record else ("00" * 16, "0" * 64)
            if hmac.compare_digest(_digest(salt, secret), digest) and record is not None:
                found = record
        for key, record in self._env:
            if hmac.compare_digest(key.encode(), presented.encode()):
                found = record
        return None if found is None or found.revoked else found

    def named(self, name: str) -> KeyRecord | None:
        """The live key called ``name`` (tokens name the key they were made with)."""
        record = self._by_name.get(name)
        return None if record is None or record.revoked else record
