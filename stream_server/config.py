"""Server configuration: one frozen dataclass, validated at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamvox.codecs.opus import OpusSettings
from streamvox.engine.core import EngineConfig
from streamvox.engine.registry import VoiceSpec
from streamvox.engine.text.segmenter import SegmenterConfig
from streamvox.stream_server.auth import is_loopback_address

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_LEAD_S = 3.0
"""How far generation may run ahead of a listener's playback: enough to ride out stalls,
small enough that a stream does not hog the CPU other streams need."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``streamvox serve`` can be told."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    voices: tuple[VoiceSpec, ...] = ()
    """Voices served next to the bundled one, each a family and a local path: Piper ``.onnx``
    files (``.onnx.json`` beside them), GPT-SoVITS v2 directories (``voice.json`` and the files
    it names)."""
    include_bundled_voice: bool = True
    voice_aliases: tuple[tuple[str, str], ...] = ()
    """Names the compatible dialects accept for our voices (an OpenAI, ElevenLabs or Cartesia
    voice id -> one of ours); see ``voice_names.py``."""
    threads: int = 0
    """onnxruntime intra-op threads (0: one per core)."""
    wyoming_port: int | None = None
    """Serve the Wyoming protocol (Home Assistant) on this TCP port (0: any free one; ``None``:
    off).  Wyoming has no authentication: keep ``wyoming_host`` on loopback or a trusted LAN."""
    wyoming_host: str = "127.0.0.1"
    default_seed: int | None = None
    """The seed of every context whose client names none (the compatible dialects have no seed
    field): with it, the same text and voice give the same audio through every dialect."""
    keys_file: str | None = None
    """API keys (see ``keys.py``; ``streamvox keys add``): with keys, every dialect route needs one
    (or a browser token made with one)."""
    api_keys: str | None = None
    """Keys given as text (``STREAMVOX_API_KEYS``: comma-separated, ``name=key`` or a bare key)."""
    token_secret: str | None = None
    """Signs browser tokens (``STREAMVOX_TOKEN_SECRET``; else the keys file's): replicas that share
    it accept each other's tokens."""
    allow_origins: tuple[str, ...] = ()
    """Browser origins (``https://app.example``, or ``*``) whose pages may open sockets, beyond the
    server's own origin (and loopback pages while the server has no keys)."""
    allow_anonymous: bool = False
    """Serve without keys on a non-loopback address (refused otherwise)."""
    tls_cert: str | None = None
    """PEM certificate chain: serve ``https://`` and ``wss://`` (with ``tls_key``)."""
    tls_key: str | None = None
    """The certificate's PEM private key."""
    max_message_bytes: int = 64 * 1024
    """Larger text frames get ``message_too_large`` and are dropped; the session lives on."""
    hard_message_bytes: int = 1024 * 1024
    """Frames beyond this close the socket (1009) without being read into memory."""
    max_text_chars: int = 16 * 1024
    """Characters per ``text`` message."""
    max_context_chars: int = 100_000
    """Characters one context may accumulate."""
    max_contexts: int = 8
    """Protocol 2: contexts one session may have open (speaking) at once."""
    max_sessions: int = 64
    """Open sessions beyond this are refused (error ``overloaded``, close code 1013)."""
    hurry_margin_s: float = 0.6
    """When the listener has less than this much audio left, buffered text is spoken up to
    its last clause boundary; below half of it, up to its last complete word (time for the
    next span's first window to be synthesised and sent)."""
    max_unsent_s: float = 5.0
    """Audio (seconds) the server holds for a client that is not reading; beyond it the stream's
    generation pauses, so a stalled client costs bounded memory."""
    slow_reader_timeout_s: float = 10.0
    """While paused that way, a socket that accepts nothing for this long is closed (1008 ``slow_reader``)."""
    idle_timeout_s: float | None = 300.0
    """A session whose client has sent nothing (a ``keepalive`` counts) for this long, with no
    context speaking, is closed (1000 ``idle_timeout``); ``None``: never.  Sessions may set
    their own with ``configure``."""
    ping_interval_s: float = 30.0
    """WebSocket pings this often; a client that answers none within the interval is dropped."""
    drain_timeout_s: float = 10.0
    """On SIGTERM, how long open contexts may run before they are cancelled."""
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_lead_s=DEFAULT_MAX_LEAD_S))
    opus: OpusSettings = field(default_factory=OpusSettings)

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self.voice_aliases)

    def __post_init__(self) -> None:
        if self.default_seed is not None and not 0 <= self.default_seed < 2**63:
            raise ValueError("default_seed must be within 0..2**63-1")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.max_message_bytes <= 0 or self.hard_message_bytes < self.max_message_bytes:
            raise ValueError("need 0 < max_message_bytes <= hard_message_bytes")
        if self.max_text_chars <= 0 or self.max_context_chars < self.max_text_chars:
            raise ValueError("need 0 < max_text_chars <= max_context_chars")
        if not 1 <= self.max_contexts <= 255:
            raise ValueError("max_contexts must be 1..255 (a context's channel is one byte)")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if self.hurry_margin_s < 0:
            raise ValueError("hurry_margin_s must be >= 0")
        if self.max_unsent_s <= 0 or self.slow_reader_timeout_s <= 0:
            raise ValueError("max_unsent_s and slow_reader_timeout_s must be > 0")
        if self.threads < 0:
            raise ValueError("threads must be >= 0")
        if self.idle_timeout_s is not None and self.idle_timeout_s <= 0:
            raise ValueError("idle_timeout_s must be > 0 or None")
        if self.ping_interval_s <= 0:
            raise ValueError("ping_interval_s must be > 0")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")
        if not is_loopback_address(self.host) and not self.has_keys and not self.allow_anonymous:
            raise ValueError(
                f"refusing to serve {self.host} without API keys: give --keys FILE (or STREAMVOX_API_KEYS), "
                "or --allow-anonymous to let anyone who can reach the port use it"
            )
        if self.wyoming_port is not None and not is_loopback_address(self.wyoming_host) and not self.allow_anonymous:
            raise ValueError(
                f"refusing Wyoming on {self.wyoming_host}: the protocol carries no key; keep it on loopback "
                "or give --allow-anonymous for a trusted LAN"
            )

    @property
    def has_keys(self) -> bool:
        return bool(self.keys_file or self.api_keys)

    @property
    def scheme(self) -> tuple[str, str]:
        """The HTTP and WebSocket URL schemes the server answers on."""
        return ("https", "wss") if self.tls_cert else ("http", "ws")
