// streamvox browser client: protocol v1 over a WebSocket, Opus decoded with WebCodecs
// (PCM fallback where WebCodecs is missing), played back-to-back on one AudioContext clock.
// Plain ES module, no build step:  import { StreamvoxClient } from "/static/streamvox-client.js";

export class StreamvoxClient extends EventTarget {
  constructor(url, { voice = null, format = null, leadMs = 60 } = {}) {
    super();
    this.url = url;
    this.voice = voice;
    this.leadMs = leadMs;
    this.format = format || (typeof AudioDecoder === "function" ? "opus" : "pcm_s16le");
    this.ws = null;
    this.ctx = null;
    this.decoder = null;
    this.ready = null;
    this.nextTime = 0;
    this.packets = 0;
    this.sentAt = null;
    this.sources = new Set();
  }

  async connect() {
    this.ctx = this.ctx || new AudioContext({ latencyHint: "interactive" });
    await this.ctx.resume();
    this.ws = new WebSocket(this.url);
    this.ws.binaryType = "arraybuffer";
    const opened = new Promise((resolve, reject) => {
      this.ws.onerror = () => reject(new Error(`cannot connect to ${this.url}`));
      this.ws.onclose = (e) => reject(new Error(`socket closed (${e.code})`));
      this._onReady = resolve;
    });
    this.ws.onmessage = (e) => this._onMessage(e);
    await opened;
    this.ws.onclose = (e) => this._emit("close", { code: e.code, reason: e.reason });
    const wanted = { type: "configure", format: this.format === "opus" ? "opus" : { codec: "pcm_s16le", sample_rate: 24000 } };
    if (this.voice) wanted.voice = this.voice;
    this.ws.send(JSON.stringify(wanted));
    this.ready = await new Promise((resolve) => (this._onReady = resolve));
    this._setupDecoder();
    return this.ready;
  }

  speak(text, contextId) { this._send({ type: "text", text, context_id: contextId }); }
  flush(contextId) { this._send({ type: "flush", context_id: contextId }); }
  end(contextId) { this._send({ type: "end", context_id: contextId }); }

  cancel(contextId) {
    this._send({ type: "cancel", context_id: contextId });
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.nextTime = 0;
  }

  close() { if (this.ws) this.ws.close(1000); }

  startContext() {
    this.packets = 0;
    this.sentAt = performance.now();
    this.firstAudioAt = null;
  }

  _send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new Error("not connected");
    if (message.context_id === undefined) delete message.context_id;
    this.ws.send(JSON.stringify(message));
  }

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  _setupDecoder() {
    if (this.ready.format.codec !== "opus") return;
    this.decoder = new AudioDecoder({
      output: (data) => {
        const pcm = new Float32Array(data.numberOfFrames);
        data.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
        this._play(pcm, data.sampleRate);
        data.close();
      },
      error: (e) => this._emit("error", { code: "decoder_error", message: String(e) }),
    });
    this.decoder.configure({ codec: "opus", sampleRate: 48000, numberOfChannels: 1 });
  }

  _onMessage(event) {
    if (typeof event.data !== "string") {
      if (this.firstAudioAt === null && this.sentAt !== null) {
        this.firstAudioAt = performance.now();
        this._emit("ttfa", { ms: this.firstAudioAt - this.sentAt });
      }
      if (this.decoder) {
        const timestamp = this.packets++ * this.ready.format.frame_ms * 1000;
        this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp, data: event.data }));
      } else {
        const ints = new Int16Array(event.data);
        const pcm = Float32Array.from(ints, (v) => v / 32768);
        this._play(pcm, this.ready.format.sample_rate);
      }
      return;
    }
    const message = JSON.parse(event.data);
    if (message.type === "ready" && this._onReady) { const r = this._onReady; this._onReady = null; r(message); return; }
    this._emit(message.type, message);
  }

  _play(pcm, sampleRate) {
    if (!pcm.length) return;
    const buffer = this.ctx.createBuffer(1, pcm.length, sampleRate);
    buffer.copyToChannel(pcm, 0);
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.ctx.destination);
    const now = this.ctx.currentTime;
    if (this.nextTime < now) {
      if (this.nextTime > 0) this._emit("underrun", { ms: (now - this.nextTime) * 1000 });
      this.nextTime = now + this.leadMs / 1000;
    }
    source.start(this.nextTime);
    this.nextTime += buffer.duration;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
    this._emit("buffered", { ms: (this.nextTime - now) * 1000 });
  }
}
