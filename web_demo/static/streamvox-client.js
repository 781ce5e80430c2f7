// streamvox browser client (protocol 2). Plain ES module, no build step:
//
//   import { StreamvoxClient } from "/static/streamvox-client.js";
//   const tts = new StreamvoxClient({ url: "ws://127.0.0.1:8765/v1/stream" });
//   // a server with API keys: a browser token from POST /v1/tokens (never a key in a page)
//   const tts = new StreamvoxClient({ url: "wss://tts.example/v1/stream", token: "svt_…" });
//   await tts.connect();
//   const id = tts.begin();            // a new utterance (context)
//   tts.sendText("Hello ", id); tts.sendText("there.", id); tts.end(id);
//   const next = tts.begin();          // may start while the first still plays: it plays after it
//   tts.addEventListener("done", (e) => console.log(e.detail));
//
// One socket carries several contexts at once (protocol 2): each binary frame starts with its
// context's channel byte. Contexts play one after another in the order they began, back to
// back (player-worklet.js), while the server generates them side by side.
//
// Opus packets are decoded with WebCodecs AudioDecoder, one per context (each is its own Opus
// stream); where WebCodecs (or its Opus decoder) is missing the client asks for 48 kHz
// pcm_s16le instead. Word timestamps are on: `wordAt(id, seconds)` says which word is
// sounding, for captions. While a context plays, the client reports its playback position
// every 250 ms (the server paces generation to it); `cancel(id)` fades it out and tells the
// server how much was played, and the `cancelled` event says what the listener heard.
//
// Events (CustomEvent, data in .detail): ready, context, segment, words, ttfa {id, ms},
// started {id}, buffered {ms}, underrun {id, count}, stats {...}, done, drained {id},
// cancelled, stopped {id, latencyMs, heard {played_s, char_offset, text, words}},
// error {code, message}, close {code, reason}.

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

/** What the client knows of one context. */
class ContextState {
  constructor(id) {
    this.id = id;
    this.channel = null;
    this.packets = 0;
    this.decodedSamples = 0;
    this.playedSamples = 0;
    this.bufferedMs = 0;
    this.underruns = 0;
    this.underrunMs = 0;
    this.ttfaMs = null;
    this.sentAt = null;
    this.started = false;
    this.playing = false;
    this.drained = false;
    this.words = [];
    this.text = ""; // everything sent: word offsets point into it
    this.heard = null;
    this.done = null;
    this.cancelled = null;
    this.stopRequestedAt = null;
    this.decoder = null;
    this.lastReport = 0;
  }

  get finished() { return Boolean(this.done || this.cancelled); }

  /** What the listener heard by `seconds` of this context (the rule the server's `cancelled`
   * uses): inside a word the offset is interpolated through it, between words it is the end
   * of the last one. */
  heardAt(seconds) {
    const begun = this.words.filter((w) => w.start_s <= seconds);
    const last = begun[begun.length - 1];
    let offset = 0;
    if (last && seconds >= last.end_s) offset = last.char_end;
    else if (last) {
      const fraction = (seconds - last.start_s) / (last.end_s - last.start_s);
      offset = Math.min(last.char_end - 1, last.char_start + Math.floor(fraction * (last.char_end - last.char_start)));
    }
    return { played_s: seconds, char_offset: offset, text: this.text.slice(0, offset), words: begun.map((w) => w.text) };
  }
}

export class StreamvoxClient extends EventTarget {
  constructor({ url, token = null, voice = null, format = "auto", prebufferMs = 60, workletUrl = new URL("./player-worklet.js", import.meta.url) } = {}) {
    super();
    this.url = url;
    this.token = token; // sent as ?token= (a browser cannot set headers on a WebSocket)
    this.voice = voice;
    this.requestedFormat = format; // "auto" | "opus" | "pcm"
    this.prebufferMs = prebufferMs;
    this.workletUrl = workletUrl;
    this.ws = null;
    this.audio = null;
    this.node = null;
    this.analyser = null;
    this.readyEvent = null;
    this.contexts = new Map();
    this.channels = new Map();
    this.playing = null; // the id of the context sounding now
    this.latest = null; // the id of the context begun last
    this.contextSeq = 0;
    this.closing = false;
  }

  /** Change voice or format: takes effect at the next connect(). */
  configure({ voice = this.voice, format = this.requestedFormat } = {}) {
    const changed = voice !== this.voice || format !== this.requestedFormat;
    this.voice = voice;
    this.requestedFormat = format;
    if (changed && this.ws) this.close();
    return changed;
  }

  get format() { return this.readyEvent ? this.readyEvent.format.codec : null; }

  /** The context begun last (what a call without an id means). */
  get stats() { return this.contexts.get(this.latest) || new ContextState(null); }

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
    const url = new URL(this.url, location.href);
    url.searchParams.set("protocol", "2");
    if (this.token) url.searchParams.set("token", this.token);
    const ws = new WebSocket(url);
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
    const configure = {
      type: "configure", timestamps: "word",
      format: useOpus ? "opus" : { codec: "pcm_s16le", sample_rate: SAMPLE_RATE },
    };
    if (this.voice) configure.voice = this.voice;
    await new Promise((resolve, reject) => {
      this._pendingReady = { resolve, reject };
      this.ws.send(JSON.stringify(configure));
    });
    return this.readyEvent;
  }

  get connected() { return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN && this.readyEvent); }

  /** A new context: it plays after every context begun before it. */
  begin(contextId = null) {
    const id = contextId || `u${Date.now().toString(36)}-${++this.contextSeq}`;
    for (const [old, state] of this.contexts) if (state.finished && state.drained && old !== this.playing) this.contexts.delete(old);
    this.contexts.set(id, new ContextState(id));
    this.latest = id;
    this.node.port.postMessage({ type: "begin", id });
    return id;
  }

  sendText(text, contextId = this.latest) {
    const state = this.contexts.get(contextId);
    if (state && state.sentAt === null) state.sentAt = performance.now();
    if (state) state.text += text;
    this._send({ type: "text", text, context_id: contextId });
  }

  flush(contextId = this.latest) { this._send({ type: "flush", context_id: contextId }); }
  end(contextId = this.latest) { this._send({ type: "end", context_id: contextId }); }

  /** Barge-in on one context: silence it at once (5 ms fade) and tell the server to stop,
   * with how much of it was played (its `cancelled` event then says what was heard). */
  cancel(contextId = this.latest) {
    const state = this.contexts.get(contextId);
    if (!state || state.stopRequestedAt !== null) return;
    state.stopRequestedAt = performance.now();
    this.node.port.postMessage({ type: "stop", id: contextId });
    if (this.connected && !state.finished && state.sentAt !== null) {
      this._send({ type: "cancel", context_id: contextId, played_ms: (this._playedNow(state) / SAMPLE_RATE) * 1000 });
    }
  }

  /** Barge-in on everything: the context playing and every one queued behind it. */
  cancelAll() { for (const id of [...this.contexts.keys()]) this.cancel(id); }

  close() {
    this.closing = true;
    if (this.ws) this.ws.close(1000);
  }

  /** The word of context `id` sounding at `seconds` of its audio, or null between words. */
  wordAt(id, seconds) {
    const state = this.contexts.get(id);
    if (!state) return null;
    return state.words.find((w) => w.start_s <= seconds && seconds < w.end_s) || null;
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

  _decoderFor(state) {
    const decoder = new AudioDecoder({
      output: (data) => {
        const pcm = new Float32Array(data.numberOfFrames);
        data.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
        data.close();
        this._push(state, pcm);
      },
      error: (e) => this._emit("error", { code: "decoder_error", message: String(e) }),
    });
    decoder.configure({ codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1 });
    return decoder;
  }

  _push(state, pcm) {
    if (state.stopRequestedAt !== null) return;
    if (state.decodedSamples === 0 && state.sentAt !== null) state.firstDecodedMs = performance.now() - state.sentAt;
    state.decodedSamples += pcm.length;
    this.node.port.postMessage({ type: "push", id: state.id, samples: pcm }, [pcm.buffer]);
  }

  _onAudio(data) {
    const bytes = new Uint8Array(data);
    const state = this.contexts.get(this.channels.get(bytes[0]));
    if (!state || state.cancelled || state.stopRequestedAt !== null) return;
    if (state.packets === 0 && state.sentAt !== null) {
      state.ttfaMs = performance.now() - state.sentAt;
      this._emit("ttfa", { id: state.id, ms: state.ttfaMs });
    }
    const index = state.packets++;
    const payload = bytes.subarray(1);
    if (this.format === "opus") {
      state.decoder ||= this._decoderFor(state);
      state.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: index * 20000, duration: 20000, data: payload }));
    } else {
      const ints = new Int16Array(payload.buffer.slice(payload.byteOffset, payload.byteOffset + payload.byteLength));
      const pcm = new Float32Array(ints.length);
      for (let i = 0; i < ints.length; i++) pcm[i] = ints[i] / 32768;
      this._push(state, pcm);
    }
  }

  async _onMessage(event) {
    if (typeof event.data !== "string") {
      this._onAudio(event.data);
      return;
    }
    const message = JSON.parse(event.data);
    const state = message.context_id ? this.contexts.get(message.context_id) : null;
    if (message.type === "ready") {
      this.readyEvent = message;
      const pending = this._pendingReady;
      this._pendingReady = null;
      if (pending) pending.resolve(message);
      this._emit("ready", message);
      return;
    }
    if (message.type === "error" && message.code === "context_ended" && state && (state.finished || state.stopRequestedAt !== null)) {
      return; // a report or cancel crossed the context's end on the wire: nothing was lost
    }
    if (message.type === "error" && this._pendingReady) {
      const pending = this._pendingReady;
      this._pendingReady = null;
      const error = new Error(message.message);
      error.code = message.code;
      pending.reject(error);
    }
    if (message.type === "context" && state) {
      state.channel = message.channel;
      this.channels.set(message.channel, message.context_id);
    }
    if (message.type === "words" && state) state.words.push(...message.words);
    if ((message.type === "done" || message.type === "cancelled") && state) {
      if (state.decoder) {
        if (message.type === "done") await state.decoder.flush();
        state.decoder.close();
        state.decoder = null;
      }
      state[message.type] = message;
      if (state.channel !== null && this.channels.get(state.channel) === state.id) this.channels.delete(state.channel);
      this.node.port.postMessage({ type: "end", id: state.id });
    }
    this._emit(message.type, message);
  }

  _onPlayer(message) {
    const state = message.id ? this.contexts.get(message.id) : null;
    if (message.type === "stats") {
      this.playing = message.playing;
      for (const c of message.contexts) {
        const s = this.contexts.get(c.id);
        if (!s) continue;
        s.playedSamples = c.played;
        s.bufferedMs = (c.buffered / SAMPLE_RATE) * 1000;
        s.underruns = c.underruns;
        s.underrunMs = (c.underrunSamples / SAMPLE_RATE) * 1000;
        s.playing = c.id === message.playing;
        s.statsAt = performance.now();
        this._maybeReport(s);
      }
      const playing = this.contexts.get(message.playing) || this.stats;
      this._emit("buffered", { ms: playing.bufferedMs });
      this._emit("stats", { ...this._public(playing), playing: message.playing });
    } else if (message.type === "started" && state) {
      state.started = true;
      this.playing = state.id;
      if (state.sentAt !== null) state.startedMs = performance.now() - state.sentAt;
      state.startedAt = performance.now();
      this._emit("started", { id: state.id });
    } else if (message.type === "underrun" && state) {
      state.underruns += 1;
      this._emit("underrun", { id: state.id, count: state.underruns, playedSamples: message.played });
    } else if ((message.type === "drained" || message.type === "stopped") && state) {
      state.playedSamples = message.played;
      state.drained = true;
      state.playing = false;
      state.drainedAt = performance.now();
      if (this.playing === state.id) this.playing = null;
      const latencyMs = state.stopRequestedAt === null ? null : performance.now() - state.stopRequestedAt;
      if (message.type === "stopped") state.heard = state.heardAt(message.played / SAMPLE_RATE);
      this._emit(message.type, { id: state.id, latencyMs, playedSamples: message.played, heard: state.heard });
    }
  }

  /** Samples of `state` played by now: the player's last count (up to 50 ms old) moved on by
   * the time since, while it plays. */
  _playedNow(state) {
    if (!state.playing || state.statsAt === undefined) return state.playedSamples;
    const moved = ((performance.now() - state.statsAt) / 1000) * SAMPLE_RATE;
    return Math.min(state.decodedSamples, Math.round(state.playedSamples + moved));
  }

  _public(state) {
    const { decoder, ...rest } = state;
    return { ...rest, contextId: state.id };
  }

  /** Tell the server where a playing context is (it paces generation to it) and about underruns. */
  _maybeReport(state) {
    const now = performance.now();
    const active = state.started && state.packets > 0 && !state.finished && state.stopRequestedAt === null;
    if (!active || !this.connected || now - state.lastReport < REPORT_EVERY_MS) return;
    state.lastReport = now;
    this._send({
      type: "report", context_id: state.id, played_ms: (state.playedSamples / SAMPLE_RATE) * 1000,
      underruns: state.underruns, underrun_ms: state.underrunMs,
    });
  }

  _onClose(event) {
    const expected = this.closing || event.code === 1000;
    this.readyEvent = null;
    this.channels.clear();
    this._emit("close", { code: event.code, reason: event.reason, expected });
    if (!expected) this._emit("error", { code: "connection_lost", message: `connection closed (${event.code}${event.reason ? ": " + event.reason : ""})` });
  }
}
