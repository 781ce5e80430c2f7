"""Browser tokens: short-lived, scoped credentials a page can put in a WebSocket URL.

A token is ``svt_<claims>.<signature>``: the claims are base64url JSON (the
key's name, expiry, voices, dialects, session limit, a random id) and the
signature is HMAC-SHA256 over them with the server's token secret.  Any
replica with the same secret verifies a token without asking anyone; a
revoked key's tokens stop working because the key they name is checked too.
Pure and thread-safe.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

TOKEN_PREFIX = "svt_"
DEFAULT_TTL_S = 300
MAX_TTL_S = 3600


class TokenError(ValueError):
    """The token is malformed, tampered with or expired (the message says which, not how)."""


@dataclass(frozen=True)
class TokenClaims:
    key_name: str
    expires_at: float
    """Unix time."""
    voices: tuple[str, ...] | None = None
    dialects: tuple[str, ...] | None = None
    sessions: int | None = None
    """Sessions this token may hold open at once."""
    token_id: str = ""

    def to_json(self) -> dict[str, object]:
        return {"k": self.key_name, "exp": self.expires_at, "v": None if self.voices is None else list(self.voices),
                "d": None if self.dialects is None else list(self.dialects), "s": self.sessions,
                "i": self.token_id}  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Makes and checks tokens with one secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 characters")
        self._key = hashlib.sha256(b"streamvox token v1\0" + secret.encode()).digest()

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def issue(
        self,
        key_name: str,
        now: float,
        ttl_s: float = DEFAULT_TTL_S,
        voices: Sequence[str] | None = None,
        dialects: Sequence[str] | None = None,
        sessions: int | None = None,
    ) -> tuple[str, TokenClaims]:
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be in (0, {MAX_TTL_S}]")
        claims = TokenClaims(key_name, round(now + ttl_s, 3), None if voices is None else tuple(voices),
                             None if dialects is None else tuple(dialects), sessions,
                             secrets.token_hex(8))  # fmt: skip
        body = _b64(json.dumps(claims.to_json(), separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{body}.{self._sign(body)}", claims

    def verify(self, token: str, now: float) -> TokenClaims:
        """The token's claims, if it is ours, intact and not expired."""
        body, dot, signature = token.removeprefix(TOKEN_PREFIX).partition(".")
        if not token.startswith(TOKEN_PREFIX) or not dot or not hmac.compare_digest(self._sign(body), signature):
            raise TokenError("invalid token")
        try:
            raw = json.loads(_unb64(body))
            claims = TokenClaims(
                key_name=str(raw["k"]),
                expires_at=float(raw["exp"]),
                voices=None if raw["v"] is None else tuple(str(v) for v in raw["v"]),
                dialects=None if raw["d"] is None else tuple(str(d) for d in raw["d"]),
                sessions=None if raw["s"] is None else int(raw["s"]),
                token_id=str(raw["i"]),
            )
        except (ValueError, KeyError, TypeError):
            raise TokenError("invalid token") from None
        if claims.expires_at <= now:
            raise TokenError("token expired")
        return claims
