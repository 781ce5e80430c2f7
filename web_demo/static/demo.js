// The demo page: wires the StreamvoxClient to the controls, figures, waveform, timeline and
// captions. Speak while something plays queues a new utterance behind it (protocol 2: both
// are generated at once on one socket); Stop cancels everything and shows what was heard.
// window.streamvoxDemo exposes its state (the headless-browser tests read it).
import { StreamvoxClient } from "./streamvox-client.js";

const $ = (id) => document.getElementById(id);
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`;
// A server with API keys: the page is opened as /?token=svt_… (a browser token, POST /v1/tokens).
const token = new URLSearchParams(location.search).get("token");
const demo = { client: null, runs: [], errors: [], current: null, voicesLoaded: false };
window.streamvoxDemo = demo;

function showError(message) {
  demo.errors.push(message);
  $("error-text").textContent = message;
  $("error").classList.add("visible");
}

function clearError() { $("error").classList.remove("visible"); }

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = `pill ${kind || ""}`;
}

async function loadVoices() {
  const response = await fetch("/v1/voices", token ? { headers: { Authorization: `Bearer ${token}` } } : {});
  if (response.status === 401) throw new Error("this server needs a key: open the page with ?token=<a browser token from POST /v1/tokens>");
  if (!response.ok) throw new Error(`server answered ${response.status}`);
  const { voices } = await response.json();
  const select = $("voice");
  const previous = select.value;
  select.innerHTML = "";
  for (const v of voices) {
    const option = new Option(`${v.id} · ${v.language} · ${v.sample_rate / 1000} kHz`, v.id, v.default, v.id === previous || (!previous && v.default));
    select.add(option);
  }
  demo.voicesLoaded = true;
}

function runOf(id) { return demo.runs.find((r) => r.id === id) || null; }

function wantedClient() {
  if (demo.client) {
    demo.client.configure({ voice: $("voice").value, format: $("format").value });
    return demo.client;
  }
  const client = new StreamvoxClient({ url: wsUrl, token, voice: $("voice").value, format: $("format").value });
  client.addEventListener("ttfa", (e) => {
    const run = runOf(e.detail.id);
    if (run) run.ttfaMs = e.detail.ms;
    if (run === demo.current) $("ttfa").textContent = `${e.detail.ms.toFixed(0)} ms`;
  });
  client.addEventListener("buffered", (e) => ($("buffered").textContent = `${e.detail.ms.toFixed(0)} ms`));
  client.addEventListener("stats", (e) => {
    const run = runOf(e.detail.playing);
    if (!run) return;
    $("underruns").textContent = e.detail.underruns;
    $("played").textContent = `${(e.detail.playedSamples / 48000).toFixed(2)} s`;
    show(run);
    updatePlayhead(run, e.detail.playedSamples / 48000);
  });
  client.addEventListener("segment", (e) => { const run = runOf(e.detail.context_id); if (run) addSegment(run, e.detail); });
  client.addEventListener("words", (e) => { const run = runOf(e.detail.context_id); if (run) addWords(run, e.detail.words); });
  client.addEventListener("underrun", (e) => { const run = runOf(e.detail.id); if (run) (run.underrunLog ||= []).push(e.detail); });
  client.addEventListener("done", (e) => {
    const run = runOf(e.detail.context_id);
    if (run) {
      run.done = e.detail;
      run.decodedSamples = client.contexts.get(run.id)?.decodedSamples;
      run.tail = document.createTextNode((client.contexts.get(run.id)?.text || "").slice(run.captionedTo || 0));
      if (shown === run) $("spoken").append(run.tail);
    }
    $("rtf").textContent = e.detail.rtf == null ? "—" : e.detail.rtf.toFixed(3);
  });
  client.addEventListener("cancelled", (e) => { const run = runOf(e.detail.context_id); if (run) run.cancelled = e.detail; });
  client.addEventListener("started", (e) => { const run = runOf(e.detail.id); if (run) run.startedAt = performance.now(); });
  client.addEventListener("drained", (e) => settle(runOf(e.detail.id), e.detail, false));
  client.addEventListener("stopped", (e) => settle(runOf(e.detail.id), e.detail, true));
  client.addEventListener("error", (e) => {
    showError(`${e.detail.code}: ${e.detail.message}`);
    const run = runOf(e.detail.context_id);
    if (run && run.settle) run.settle();
  });
  client.addEventListener("close", (e) => {
    if (!e.detail.expected) setStatus("disconnected", "bad");
    for (const run of demo.runs) if (run.settle) run.settle();
  });
  demo.client = client;
  return client;
}

function settle(run, detail, stopped) {
  if (!run) return;
  run.drainedAt = performance.now();
  if (stopped) {
    run.stopped = detail;
    run.heard = detail.heard;
    $("heard").textContent = detail.heard && detail.heard.text ? `Heard: “${detail.heard.text}”` : "Heard: nothing yet";
  }
  if (run.settle) run.settle();
}

let shown = null;
let timelineSeconds = 10;

function resetView() {
  shown = null;
  timelineSeconds = 10;
  $("timeline").querySelectorAll(".seg").forEach((n) => n.remove());
  $("spoken").textContent = "";
  $("heard").textContent = "";
  for (const id of ["ttfa", "buffered", "rtf", "played"]) $(id).textContent = "—";
  $("underruns").textContent = "0";
}

/** Show `run`'s segments and captions (the context playing now). */
function show(run) {
  if (shown === run) return;
  shown = run;
  timelineSeconds = 10;
  $("timeline").querySelectorAll(".seg").forEach((n) => n.remove());
  $("spoken").textContent = "";
  for (const segment of run.segments) $("timeline").append(segment.block);
  for (const word of run.words) $("spoken").append(word.gap, word.node);
  if (run.tail) $("spoken").append(run.tail);
  layoutTimeline(run);
}

function addSegment(run, segment) {
  const block = document.createElement("div");
  block.className = "seg";
  block.textContent = segment.text;
  block.title = `${segment.start_s.toFixed(2)} s: ${segment.text}`;
  run.segments.push({ ...segment, block });
  if (shown === run) { $("timeline").append(block); layoutTimeline(run); }
}

/** Captions are the text as sent, each timed word a span: the punctuation between words
 * stays as the person wrote it. */
function addWords(run, words) {
  const text = demo.client.contexts.get(run.id)?.text || "";
  for (const word of words) {
    const node = document.createElement("span");
    node.className = "word";
    node.textContent = word.text;
    const gap = document.createTextNode(text.slice(run.captionedTo || 0, word.char_start));
    run.captionedTo = word.char_end;
    run.words.push({ ...word, node, gap });
    if (shown === run) $("spoken").append(gap, node);
  }
}

function layoutTimeline(run) {
  const segments = run.segments;
  const last = segments[segments.length - 1];
  if (last) timelineSeconds = Math.max(timelineSeconds, last.start_s + 4);
  segments.forEach((s, i) => {
    const end = i + 1 < segments.length ? segments[i + 1].start_s : s.start_s + 3;
    s.block.style.left = `${(100 * s.start_s) / timelineSeconds}%`;
    s.block.style.width = `${(100 * (end - s.start_s)) / timelineSeconds}%`;
  });
}

function updatePlayhead(run, seconds) {
  $("playhead").style.left = `${Math.min(100, (100 * seconds) / timelineSeconds)}%`;
  run.segments.forEach((s, i) => {
    const end = i + 1 < run.segments.length ? run.segments[i + 1].start_s : Infinity;
    s.block.classList.toggle("speaking", seconds >= s.start_s && seconds < end && seconds > 0);
  });
  const sounding = demo.client.wordAt(run.id, seconds);
  for (const word of run.words) {
    word.node.classList.toggle("speaking", Boolean(sounding) && word.char_start === sounding.char_start);
    word.node.classList.toggle("spoken-done", seconds >= word.end_s);
  }
  if (sounding && run.captionLog.at(-1)?.char_start !== sounding.char_start) {
    run.captionLog.push({ text: sounding.text, char_start: sounding.char_start, at_s: seconds, start_s: sounding.start_s, end_s: sounding.end_s });
  }
}

const waveData = new Float32Array(1024);
let lastDraw = 0;
function drawWave(now) {
  requestAnimationFrame(drawWave);
  if (now - lastDraw < 33) return; // 30 fps is plenty, and leaves the CPU to the audio
  lastDraw = now;
  const canvas = $("wave");
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  if (demo.client && demo.client.analyser) {
    demo.client.waveform(waveData);
    g.strokeStyle = "#7fa2ff";
    g.lineWidth = 2;
    g.beginPath();
    for (let i = 0; i < waveData.length; i++) {
      const x = (i / (waveData.length - 1)) * (w - 40);
      const y = h / 2 - waveData[i] * h * 0.9;
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    }
    g.stroke();
    const level = Math.min(1, demo.client.level() * 4);
    g.fillStyle = level > 0.8 ? "#ff6b5b" : "#44d17a";
    g.fillRect(w - 24, h - level * h, 16, level * h);
  }
}

async function speak() {
  clearError();
  const run = {
    id: null, mode: $("llm").checked ? "llm" : "text", format: null, ttfaMs: null, done: null, cancelled: null,
    stopped: null, heard: null, underrunsAfterStart: 0, decodedSamples: 0, segments: [], words: [], captionLog: [],
  };
  const first = !demo.runs.some((r) => !r.finished);
  if (first) resetView();
  demo.current = run;
  demo.runs.push(run);
  try {
    if (!demo.voicesLoaded) await loadVoices();
    const client = wantedClient();
    if (!client.connected) { setStatus("connecting…"); await client.connect(); }
    setStatus(`connected · ${client.format}`, "ok");
    run.format = client.format;
    const finished = new Promise((resolve) => (run.settle = resolve));
    const id = client.begin();
    run.id = id;
    const state = client.contexts.get(id);
    const text = $("text").value;
    if ($("llm").checked) {
      const delay = 1000 / Math.max(1, Number($("wps").value) || 20);
      for (const word of text.split(/(?<=\s)/)) {
        if (run.stopped || state.cancelled || state.stopRequestedAt !== null) break;
        client.sendText(word, id);
        await new Promise((r) => setTimeout(r, delay));
      }
    } else {
      client.sendText(text, id);
    }
    if (state.stopRequestedAt === null) client.end(id);
    await finished;
    run.underrunsAfterStart = state.underruns;
    run.firstDecodedMs = state.firstDecodedMs;
    run.startedMs = state.startedMs;
    run.playedSamples = state.playedSamples;
    run.decodedSamples = state.decodedSamples;
  } catch (error) {
    showError(`${error.code || "error"}: ${error.message}`);
    setStatus("not connected", "bad");
    run.error = error.message;
  } finally {
    run.finished = true;
  }
}

/** Barge-in: everything playing or queued stops, and the page says what was heard. */
function stop() {
  const client = demo.client;
  if (!client || !client.node) return;
  if (demo.current) demo.current.stopClickedAt = performance.now();
  client.cancelAll();
}

$("speak").addEventListener("click", speak);
$("stop").addEventListener("click", stop);
$("retry").addEventListener("click", async () => {
  clearError();
  try {
    await loadVoices();
    setStatus("ready", "ok");
  } catch (error) {
    showError(`server unreachable: ${error.message}`);
  }
});

loadVoices().then(() => setStatus("ready", "ok")).catch((error) => {
  setStatus("server unreachable", "bad");
  showError(`server unreachable: ${error.message}`);
});
requestAnimationFrame(drawWave);
