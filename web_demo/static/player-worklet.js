// AudioWorklet player for streamvox: each context (utterance) has its own queue of samples;
// contexts play one after another in the order they began, back to back, with no gap or
// overlap at packet, segment or context seams, whatever the network jitter.
// In:  {type:"begin", id}  {type:"push", id, samples: Float32Array}  {type:"end", id}
//      {type:"stop", id} (fade out if playing, else drop)  {type:"stopAll"}
// Out: {type:"started", id} {type:"underrun", id, played} {type:"drained", id, played}
//      {type:"stopped", id, played} {type:"stats", playing, contexts: [{id, played, buffered, started}], ...}

const STOP_FADE_S = 0.005;
const REPORT_EVERY_S = 0.05;

class Queue {
  constructor(id) {
    this.id = id;
    this.chunks = [];
    this.offset = 0; // samples of chunks[0] already played
    this.buffered = 0;
    this.played = 0;
    this.ended = false; // no more samples will come
    this.started = false;
    this.starved = false;
    this.fading = 0; // samples left in a stop fade
    this.underruns = 0;
    this.underrunSamples = 0;
  }

  take() {
    const chunk = this.chunks[0];
    const value = chunk[this.offset++];
    if (this.offset === chunk.length) {
      this.chunks.shift();
      this.offset = 0;
    }
    this.buffered -= 1;
    this.played += 1;
    return value;
  }
}

class StreamvoxPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.prebuffer = Math.round((sampleRate * (opts.prebufferMs ?? 40)) / 1000);
    this.fadeLength = Math.max(1, Math.round(sampleRate * STOP_FADE_S));
    this.queues = new Map();
    this.order = []; // ids in play order; order[0] is playing (or about to)
    this.lastReport = 0;
    this.underruns = 0;
    this.underrunSamples = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(message) {
    const queue = this.queues.get(message.id);
    switch (message.type) {
      case "begin":
        if (!queue) {
          this.queues.set(message.id, new Queue(message.id));
          this.order.push(message.id);
        }
        break;
      case "push":
        if (queue && queue.fading === 0) {
          queue.chunks.push(message.samples);
          queue.buffered += message.samples.length;
        }
        break;
      case "end":
        if (queue) queue.ended = true;
        break;
      case "stop":
        if (queue) this.stop(queue);
        break;
      case "stopAll":
        for (const id of [...this.order]) this.stop(this.queues.get(id));
        break;
    }
  }

  stop(queue) {
    if (queue === this.current() && queue.started && queue.buffered > 0) {
      queue.fading = Math.min(this.fadeLength, queue.buffered);
    } else {
      this.drop(queue, "stopped");
    }
  }

  drop(queue, why) {
    this.queues.delete(queue.id);
    this.order = this.order.filter((id) => id !== queue.id);
    this.port.postMessage({ type: why, id: queue.id, played: queue.played, time: currentTime });
  }

  current() {
    return this.order.length ? this.queues.get(this.order[0]) : null;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    let i = 0;
    while (i < n) {
      const queue = this.current();
      if (!queue) break;
      if (!queue.started) {
        if (queue.buffered === 0 || (queue.buffered < this.prebuffer && !queue.ended)) {
          if (queue.ended && queue.buffered === 0) {
            this.drop(queue, "drained"); // nothing was spoken
            continue;
          }
          break; // still prebuffering
        }
        queue.started = true;
        this.port.postMessage({ type: "started", id: queue.id, time: currentTime });
      }
      if (queue.fading > 0) {
        while (i < n && queue.fading > 0 && queue.buffered > 0) out[i++] = (queue.take() * --queue.fading) / this.fadeLength;
        if (queue.fading === 0 || queue.buffered === 0) this.drop(queue, "stopped");
        continue;
      }
      while (i < n && queue.buffered > 0) out[i++] = queue.take();
      if (i < n) {
        if (queue.ended) {
          this.drop(queue, "drained");
          continue; // the next context starts in this same block, sample-exact
        }
        if (!queue.starved) {
          queue.starved = true;
          queue.underruns += 1;
          this.underruns += 1;
          this.port.postMessage({ type: "underrun", id: queue.id, played: queue.played, time: currentTime });
        }
        queue.underrunSamples += n - i;
        this.underrunSamples += n - i;
        break;
      }
      queue.starved = false;
    }
    out.fill(0, i);
    if (currentTime - this.lastReport >= REPORT_EVERY_S) {
      this.lastReport = currentTime;
      const current = this.current();
      this.port.postMessage({
        type: "stats",
        playing: current && current.started ? current.id : null,
        underruns: this.underruns,
        underrunSamples: this.underrunSamples,
        contexts: this.order.map((id) => {
          const q = this.queues.get(id);
          return { id, played: q.played, buffered: q.buffered, started: q.started, underruns: q.underruns, underrunSamples: q.underrunSamples };
        }),
      });
    }
    return true;
  }
}

registerProcessor("streamvox-player", StreamvoxPlayer);
