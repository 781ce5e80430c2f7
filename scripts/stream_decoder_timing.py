"""Throwaway timing of the streaming decoder against the windowed and one-shot decodes (experiment branch).

    python scripts/stream_decoder_timing.py WINDOW_FRAMES
"""
import numpy as np, time, sys
from streamvox.engine.backends.piper.backend import bundled_voice_path
from streamvox.engine.backends.piper.graph import split_piper_graph, Z_OUTPUT
from streamvox.engine.backends.piper.stream_graph import streaming_decoder
from streamvox.engine.backends.piper.stream_decoder import StreamingDecoder
from streamvox.engine.backends.piper.voice import PiperVoice, _session_options
v = PiperVoice.load(bundled_voice_path())
split = split_piper_graph(bundled_voice_path().read_bytes())
g = streaming_decoder(split.decoder, Z_OUTPUT)
d = StreamingDecoder(g, Z_OUTPUT, _session_options(0), _session_options(1), split.has_speaker_input)
front = v.front(v.text_to_ids("Here is a short summary of the meeting: the budget was approved, and the launch moves to March. Hiring continues."), np.random.default_rng(1))
z = v.flow(front.z_p)
W = int(sys.argv[1]) if len(sys.argv) > 1 else 64
def t_window():
    t=time.thread_time()
    for st in range(0, z.shape[1], W):
        v.decode_window(z, st, min(z.shape[1], st+W), 10, urgent=False)
    return time.thread_time()-t
def t_stream():
    t=time.thread_time()
    s=d.stream()
    for st in range(0, z.shape[1], W):
        en=min(z.shape[1], st+W)
        s.feed(z[:, st:en], final=en==z.shape[1])
    return time.thread_time()-t
def t_one():
    t=time.thread_time(); v.decode(z, urgent=False); return time.thread_time()-t
res={'w':[],'s':[],'o':[]}
for i in range(12):
    res['w'].append(t_window()); res['s'].append(t_stream()); res['o'].append(t_one())
audio = z.shape[1]*256/22050
print('W', W, 'frames', z.shape[1], {k: round(1000*np.median(v[2:])/audio,2) for k,v in res.items()}, 'ms CPU per audio s')
