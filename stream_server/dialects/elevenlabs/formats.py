"""ElevenLabs' ``output_format`` names, mapped to ours.

``pcm_<rate>``, ``ulaw_8000``, ``alaw_8000``, ``mp3_<rate>_<kbps>`` and
``opus_48000_<kbps>`` (Opus in Ogg).  MP3 is sent at the named rate at our
constant bitrate (the kbps part is accepted, not matched).  Pure functions.
"""

from __future__ import annotations

from streamvox.codecs.formats import FormatError, OutputFormat, resolve_format
from streamvox.codecs.opus import OpusSettings

DEFAULT_FORMAT = "mp3_44100_128"
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
CONTENT_TYPES = {"pcm_s16le": "audio/pcm", "mulaw_8000": "audio/basic", "alaw_8000": "audio/basic",
                 "mp3": "audio/mpeg", "ogg_opus": "audio/ogg"}  # fmt: skip


def elevenlabs_format(name: str, model_rate: int, opus: OpusSettings) -> OutputFormat:
    """The format ElevenLabs calls ``name``; :class:`FormatError` if it has none such."""
    parts = name.split("_")
    try:
        if parts[0] == "pcm" and len(parts) == 2 and int(parts[1]) in PCM_RATES:
            return resolve_format("pcm_s16le", int(parts[1]), model_rate)
        if name == "ulaw_8000":
            return resolve_format("mulaw_8000", None, model_rate)
        if name == "alaw_8000":
            return resolve_format("alaw_8000", None, model_rate)
        if parts[0] == "mp3" and len(parts) == 3 and int(parts[2]) > 0:
            return resolve_format("mp3", int(parts[1]), model_rate)
        if parts[0] == "opus" and len(parts) == 3 and parts[1] == "48000" and 6 <= int(parts[2]) <= 510:
            settings = OpusSettings(opus.frame_ms, opus.application, int(parts[2]) * 1000, opus.complexity)
            return resolve_format("ogg_opus", None, model_rate, settings)
    except ValueError:
        pass
    raise FormatError(f"Invalid output format: {name!r}")
