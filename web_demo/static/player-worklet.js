// AudioWorklet ring-buffer player for streamvox: samples pushed from the main thread play
// back to back, with no gap or overlap at packet or segment seams, whatever the jitter.
// In:  {type:"begin"} (new utterance)  {type:"push", samples: Float32Array}  {type:"end"}  {type:"stop"}
// Out: {type:"started"} {type:"underrun"} {type:"drained"} {type:"stopped"} {type:"stats", ...}

const STOP_FADE_S = 0.005;
const REPORT_EVERY_S = 0.05;

class StreamvoxPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.ring = new Float32Array(Math.ceil(sampleRate * (opts.bufferSeconds || 120)));
    this.prebuffer = Math.round((sampleRate * (opts.prebufferMs ?? 40)) / 1000);
    this.fadeLength = Math.max(1, Math.round(sampleRate * STOP_FADE_S));
    this.lastReport = 0;
    this.reset();
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  reset() {
    this.read = 0; // absolute sample counters; the ring index is counter % length
    this.write = 0;
    this.playing = false;
    this.ended = false; // no more samples will come for this utterance
    this.halted = false; // stopped: ignore everything until the next "begin"
    this.starved = false;
    this.fading = 0; // samples left in a stop fade
    this.played = 0;
    this.underruns = 0;
    this.underrunSamples = 0;
    this.overflowed = 0;
  }

  onMessage(message) {
    switch (message.type) {
      case "begin":
        this.reset();
        break;
      case "push": {
        if (this.halted) break;
        const samples = message.samples;
        const count = Math.min(samples.length, this.ring.length - (this.write - this.read));
        for (let i = 0; i < count; i++) this.ring[(this.write + i) % this.ring.length] = samples[i];
        this.write += count;
        this.overflowed += samples.length - count;
        break;
      }
      case "end":
        this.ended = true;
        break;
      case "stop":
        if (this.playing && this.read < this.write) this.fading = this.fadeLength;
        else this.halt();
        break;
    }
  }

  halt() {
    this.read = this.write;
    this.playing = false;
    this.halted = true;
    this.fading = 0;
    this.port.postMessage({ type: "stopped", played: this.played, time: currentTime });
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    let i = 0;
    const available = this.write - this.read;
    if (!this.playing && !this.halted && available > 0 && (available >= this.prebuffer || this.ended)) {
      this.playing = true;
      this.port.postMessage({ type: "started", time: currentTime });
    }
    if (this.playing) {
      const stopping = this.fading > 0;
      while (i < n && this.read < this.write) {
        let value = this.ring[this.read % this.ring.length];
        if (stopping) value *= --this.fading / this.fadeLength;
        out[i++] = value;
        this.read += 1;
        this.played += 1;
        if (stopping && this.fading === 0) break;
      }
      if (stopping) {
        // Drop the rest of the utterance once the fade reached silence (or the buffer ran out).
        if (this.fading === 0 || this.read >= this.write) this.halt();
      } else if (i < n) {
        if (this.ended) {
          this.playing = false;
          this.port.postMessage({ type: "drained", played: this.played, time: currentTime });
        } else {
          if (!this.starved) {
            this.starved = true;
            this.underruns += 1;
            this.port.postMessage({ type: "underrun", time: currentTime, played: this.played });
          }
          this.underrunSamples += n - i;
        }
      } else {
        this.starved = false;
      }
    }
    out.fill(0, i);
    if (currentTime - this.lastReport >= REPORT_EVERY_S) {
      this.lastReport = currentTime;
      this.port.postMessage({
        type: "stats",
        played: this.played,
        buffered: this.write - this.read,
        underruns: this.underruns,
        underrunSamples: this.underrunSamples,
        overflowed: this.overflowed,
      });
    }
    return true;
  }
}

registerProcessor("streamvox-player", StreamvoxPlayer);
