"""Audio codecs for streamvox: resampling, PCM, mu-law, WAV, Opus and Ogg/Opus.

Everything here is pure and synchronous and knows nothing of sessions; each
stateful object (a resampler, an encoder) belongs to one stream and is not
thread-safe.
"""
