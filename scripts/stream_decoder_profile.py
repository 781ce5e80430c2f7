"""Throwaway onnxruntime profile of the streaming decoder step graph: share of kernel time by operator."""
import numpy as np, json, collections, onnxruntime as ort
from streamvox.engine.backends.piper.backend import bundled_voice_path
from streamvox.engine.backends.piper.graph import split_piper_graph, Z_OUTPUT
from streamvox.engine.backends.piper.stream_graph import streaming_decoder
from streamvox.engine.backends.piper.voice import _session_options
split = split_piper_graph(bundled_voice_path().read_bytes())
g = streaming_decoder(split.decoder, Z_OUTPUT)
o = _session_options(1); o.enable_profiling = True
o.optimized_model_filepath = '/tmp/opt_step.onnx'
s = ort.InferenceSession(g.step, o, providers=['CPUExecutionProvider'])
z = np.random.randn(1,192,64).astype(np.float32)*0.5
states = [sp.start() for sp in g.states]
outs=[s.get_outputs()[0].name]+[sp.next_name for sp in g.states]
first=True
for i in range(30):
    feeds={'z':z,'first':np.array([1 if first else 0],dtype=np.int64)}
    feeds.update((sp.name,st) for sp,st in zip(g.states,states))
    a,*states = s.run(outs,feeds); first=False
p = s.end_profiling()
ev=json.load(open(p))
tot=collections.Counter(); 
for e in ev:
    if e.get('cat')=='Node' and e['name'].endswith('_kernel_time'):
        tot[e['args']['op_name']]+=e['dur']
T=sum(tot.values())
for k,v in tot.most_common(): print(k, round(100*v/T,1))
import onnx
m=onnx.load('/tmp/opt_step.onnx'); print(collections.Counter(n.op_type for n in m.graph.node))
