// streamvox browser client (protocol v1). Plain ES module, no build step:
//
//   import { StreamvoxClient } from "/static/streamvox-client.js";
//   const tts = new StreamvoxClient({ url: "ws://127.0.0.1:8765/v1/stream" });
//   await tts.connect();
//   const id = tts.begin();            // a new utterance (context)
//   tts.sendText("Hello ", id); tts.sendText("there.", id); tts.end(id);
//   tts.addEventListener("done", (e) => console.log(e.detail));
//
// Opus packets are decoded with WebCodecs AudioDecoder; where WebCodecs (or its Opus
// decoder) is missing the client asks for 48 kHz pcm_s16le instead. Audio plays through
// an AudioWorklet ring buffer (player-worklet.js) on a 48 kHz AudioContext, so packets
// and segments join without gaps or overlaps whatever the network jitter.
//
// While an utterance plays, the client reports its playback position every 250 ms, so the
// server paces generation to the real listener.
// Events (CustomEvent, data in .detail): ready, segment, ttfa {ms}, started, buffered {ms},
// underrun {count}, stats {...}, done, drained, cancelled, stopped {latencyMs}, error {code, message}, close {code, reason}.

const SAMPLE_RATE = 48000;
const REPORT_EVERY_MS = 250;

export async function opusDecodingSupported() {
  if (typeof AudioDecoder !== "function") return false;
  try {
    const { supported } = await AudioDecoder.isConfigSupported({ codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1 });
    return Boolean(supported);
  } catch {
    return false;
  }
}

export class StreamvoxClient extends EventTarget {
  /** Change voice or format: takes effect at the next connect(). */
  configure({ voice = this.voice, format = this.requestedFormat } = {}) {
    const changed = voice !== this.voice || format !== this.requestedFormat;
    this.voice = voice;
    this.requestedFormat = format;
    if (changed && this.ws) this.close();
    return changed;
  }

  constructor({ url, voice = null, format = "auto", prebufferMs = 60, workletUrl = new URL("./player-worklet.js", import.meta.url) } = {}) {
    super();
    this.url = url;
    this.voice = voice;
    this.requestedFormat = format; // "auto" | "opus" | "pcm"
    this.prebufferMs = prebufferMs;
    this.workletUrl = workletUrl;
    this.ws = null;
    this.audio = null;
    this.node = null;
    this.analyser = null;
    this.decoder = null;
    this.readyEvent = null;
    this.contextSeq = 0;
    this.closing = false;
    this.resetStats();
  }

  resetStats() {
    this.stats = {
      contextId: null, packets: 0, decodedSamples: 0, ttfaMs: null, playedSamples: 0, bufferedMs: 0,
      underruns: 0, underrunMs: 0, started: false, done: null, cancelled: null,
    };
    this.sentAt = null;
    this.stopRequestedAt = null;
  }

  get format() { return this.readyEvent ? this.readyEvent.format.codec : null; }

  async connect() {
    if (!this.audio) {
      this.audio = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "interactive" });
      await this.audio.audioWorklet.addModule(this.workletUrl);
      this.node = new AudioWorkletNode(this.audio, "streamvox-player", {
        numberOfInputs: 0, outputChannelCount: [1], processorOptions: { prebufferMs: this.prebufferMs },
      });
      this.analyser = this.audio.createAnalyser();
      this.analyser.fftSize = 1024;
      this.node.connect(this.analyser).connect(this.audio.destination);
      this.node.port.onmessage = (e) => this._onPlayer(e.data);
    }
    await this.audio.resume();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    this.readyEvent = null;
    const useOpus = this.requestedFormat === "opus" || (this.requestedFormat === "auto" && (await opusDecodingSupported()));
    this.closing = false;
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    await new Promise((resolve, reject) => {
      let opened = false;
      ws.onopen = () => { opened = true; };
      ws.onerror = () => { if (!opened) reject(new Error(`cannot reach ${this.url}`)); };
      ws.onclose = (e) => {
        if (ws !== this.ws) return; // an older socket, replaced on purpose
        if (!this.readyEvent) reject(new Error(`connection closed (${e.code})`));
        this._onClose(e);
      };
      this._pendingReady = { resolve, reject };
      ws.onmessage = (e) => { if (ws === this.ws) this._onMessage(e); };
    });
    const configure = { type: "configure", format: useOpus ? "opus" : { codec: "pcm_s16le", sample_rate: SAMPLE_RATE } };
    if (this.voice) configure.voice = this.voice;
    await new Promise((resolve, reject) => {
      this._pendingReady = { resolve, reject };
      this.ws.send(JSON.stringify(configure));
    });
    if (this.format === "opus") this._setupDecoder();
    return this.readyEvent;
  }

  get connected() { return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN && this.readyEvent); }

  begin(contextId = null) {
    const id = contextId || `u${Date.now().toString(36)}-${++this.contextSeq}`;
    this.resetStats();
    this.stats.contextId = id;
    this.node.port.postMessage({ type: "begin" });
    if (this.decoder) {
      this.decoder.reset(); // drop frames of a cancelled utterance still in the decoder
      this._configureDecoder();
    }
    return id;
  }

  sendText(text, contextId = this.stats.contextId) {
    if (this.sentAt === null) this.sentAt = performance.now();
    this._send({ type: "text", text, context_id: contextId });
  }

  flush(contextId = this.stats.contextId) { this._send({ type: "flush", context_id: contextId }); }
  end(contextId = this.stats.contextId) { this._send({ type: "end", context_id: contextId }); }

  /** Barge-in: silence playback at once (5 ms fade) and tell the server to stop generating. */
  cancel(contextId = this.stats.contextId) {
    this.stopRequestedAt = performance.now();
    this.node.port.postMessage({ type: "stop" });
    if (this.connected && !this.stats.done && !this.stats.cancelled) this._send({ type: "cancel", context_id: contextId });
  }

  close() {
    this.closing = true;
    if (this.ws) this.ws.close(1000);
  }

  /** RMS level of what is playing now, 0..1 (for meters). */
  level() {
    if (!this.analyser) return 0;
    const data = new Float32Array(this.analyser.fftSize);
    this.analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    return Math.sqrt(sum / data.length);
  }

  waveform(out) { if (this.analyser) this.analyser.getFloatTimeDomainData(out); return out; }

  _send(message) {
    if (!this.connected) throw new Error("not connected");
    if (message.context_id == null) delete message.context_id;
    this.ws.send(JSON.stringify(message));
  }

  _emit(type, detail = {}) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  _configureDecoder() { this.decoder.configure({ codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1 }); }

  _setupDecoder() {
    if (this.decoder) return;
    this.decoder = new AudioDecoder({
      output: (data) => {
        const pcm = new Float32Array(data.numberOfFrames);
        data.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
        data.close();
        this._push(pcm);
      },
      error: (e) => this._emit("error", { code: "decoder_error", message: String(e) }),
    });
    this._configureDecoder();
  }

  _push(pcm) {
    if (this.stats.decodedSamples === 0 && this.sentAt !== null) this.stats.firstDecodedMs = performance.now() - this.sentAt;
    this.stats.decodedSamples += pcm.length;
    this.node.port.postMessage({ type: "push", samples: pcm }, [pcm.buffer]);
  }

  async _onMessage(event) {
    if (typeof event.data !== "string") {
      if (this.stats.cancelled || this.stopRequestedAt !== null) return;
      if (this.stats.packets === 0 && this.sentAt !== null) {
        this.stats.ttfaMs = performance.now() - this.sentAt;
        this._emit("ttfa", { ms: this.stats.ttfaMs });
      }
      const index = this.stats.packets++;
      if (this.format === "opus") {
        this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: index * 20000, duration: 20000, data: event.data }));
      } else {
        const ints = new Int16Array(event.data);
        const pcm = new Float32Array(ints.length);
        for (let i = 0; i < ints.length; i++) pcm[i] = ints[i] / 32768;
        this._push(pcm);
      }
      return;
    }
    const message = JSON.parse(event.data);
    if (message.type === "ready") {
      this.readyEvent = message;
      const pending = this._pendingReady;
      this._pendingReady = null;
      if (pending) pending.resolve(message);
      this._emit("ready", message);
      return;
    }
    if (message.type === "error" && this._pendingReady) {
      const pending = this._pendingReady;
      this._pendingReady = null;
      const error = new Error(message.message);
      error.code = message.code;
      pending.reject(error);
    }
    if (message.type === "done") {
      if (this.format === "opus") await this.decoder.flush();
      this.stats.done = message;
      this.node.port.postMessage({ type: "end" });
    }
    if (message.type === "cancelled") {
      this.stats.cancelled = message;
      this.node.port.postMessage({ type: "end" });
    }
    this._emit(message.type, message);
  }

  _onPlayer(message) {
    if (message.type === "stats") {
      this.stats.playedSamples = message.played;
      this.stats.bufferedMs = (message.buffered / SAMPLE_RATE) * 1000;
      this.stats.underruns = message.underruns;
      this.stats.underrunMs = (message.underrunSamples / SAMPLE_RATE) * 1000;
      this._emit("buffered", { ms: this.stats.bufferedMs });
      this._emit("stats", { ...this.stats });
      this._maybeReport();
    } else if (message.type === "started") {
      this.stats.started = true;
      if (this.sentAt !== null) this.stats.startedMs = performance.now() - this.sentAt;
      this._emit("started", {});
    } else if (message.type === "underrun") {
      this.stats.underruns += 1;
      this._emit("underrun", { count: this.stats.underruns, playedSamples: message.played, atMs: performance.now() - (this.sentAt ?? 0) });
    } else if (message.type === "drained") {
      this.stats.playedSamples = message.played;
      this._emit("drained", { playedSamples: message.played });
    } else if (message.type === "stopped") {
      const latencyMs = this.stopRequestedAt === null ? null : performance.now() - this.stopRequestedAt;
      this.stats.playedSamples = message.played;
      this._emit("stopped", { latencyMs, playedSamples: message.played });
    }
  }

  /** Tell the server where playback is (it paces generation to it) and about underruns. */
  _maybeReport() {
    const now = performance.now();
    const active = this.stats.contextId && this.stats.packets > 0 && !this.stats.done && !this.stats.cancelled;
    if (!active || !this.connected || this.stopRequestedAt !== null || now - (this._lastReport || 0) < REPORT_EVERY_MS) return;
    this._lastReport = now;
    this._send({
      type: "report", context_id: this.stats.contextId, played_ms: (this.stats.playedSamples / SAMPLE_RATE) * 1000,
      underruns: this.stats.underruns, underrun_ms: this.stats.underrunMs,
    });
  }

  _onClose(event) {
    const expected = this.closing || event.code === 1000;
    this.readyEvent = null;
    this._emit("close", { code: event.code, reason: event.reason, expected });
    if (!expected) this._emit("error", { code: "connection_lost", message: `connection closed (${event.code}${event.reason ? ": " + event.reason : ""})` });
  }
}
