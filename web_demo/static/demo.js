// The demo page: wires the StreamvoxClient to the controls, figures, waveform and timeline.
// window.streamvoxDemo exposes its state (the headless-browser tests read it).
import { StreamvoxClient } from "./streamvox-client.js";

const $ = (id) => document.getElementById(id);
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`;
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
  const response = await fetch("/v1/voices");
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

function wantedClient() {
  if (demo.client) {
    demo.client.configure({ voice: $("voice").value, format: $("format").value });
    return demo.client;
  }
  const client = new StreamvoxClient({ url: wsUrl, voice: $("voice").value, format: $("format").value });
  client.addEventListener("ttfa", (e) => { $("ttfa").textContent = `${e.detail.ms.toFixed(0)} ms`; if (demo.current) demo.current.ttfaMs = e.detail.ms; });
  client.addEventListener("buffered", (e) => ($("buffered").textContent = `${e.detail.ms.toFixed(0)} ms`));
  client.addEventListener("stats", (e) => {
    $("underruns").textContent = e.detail.underruns;
    $("played").textContent = `${(e.detail.playedSamples / 48000).toFixed(2)} s`;
    updatePlayhead(e.detail.playedSamples / 48000);
  });
  client.addEventListener("segment", (e) => addSegment(e.detail));
  client.addEventListener("underrun", (e) => { if (demo.current) (demo.current.underrunLog ||= []).push(e.detail); });
  client.addEventListener("done", (e) => { $("rtf").textContent = e.detail.rtf == null ? "—" : e.detail.rtf.toFixed(3); });
  client.addEventListener("error", (e) => showError(`${e.detail.code}: ${e.detail.message}`));
  client.addEventListener("close", (e) => { if (!e.detail.expected) setStatus("disconnected", "bad"); });
  demo.client = client;
  return client;
}

let segments = [];
let timelineSeconds = 10;

function resetView() {
  segments = [];
  timelineSeconds = 10;
  $("timeline").querySelectorAll(".seg").forEach((n) => n.remove());
  $("spoken").textContent = "";
  for (const id of ["ttfa", "buffered", "rtf", "played"]) $(id).textContent = "—";
  $("underruns").textContent = "0";
}

function addSegment(segment) {
  const block = document.createElement("div");
  block.className = "seg";
  block.textContent = segment.text;
  block.title = `${segment.start_s.toFixed(2)} s: ${segment.text}`;
  $("timeline").append(block);
  const word = document.createElement("span");
  word.textContent = `${segment.text} `;
  $("spoken").append(word);
  segments.push({ ...segment, block, word });
  layoutTimeline();
}

function layoutTimeline() {
  const last = segments[segments.length - 1];
  if (last) timelineSeconds = Math.max(timelineSeconds, last.start_s + 4);
  segments.forEach((s, i) => {
    const end = i + 1 < segments.length ? segments[i + 1].start_s : s.start_s + 3;
    s.block.style.left = `${(100 * s.start_s) / timelineSeconds}%`;
    s.block.style.width = `${(100 * (end - s.start_s)) / timelineSeconds}%`;
  });
}

function updatePlayhead(seconds) {
  $("playhead").style.left = `${Math.min(100, (100 * seconds) / timelineSeconds)}%`;
  segments.forEach((s, i) => {
    const end = i + 1 < segments.length ? segments[i + 1].start_s : Infinity;
    const speaking = seconds >= s.start_s && seconds < end && seconds > 0;
    s.block.classList.toggle("speaking", speaking);
    s.word.classList.toggle("speaking", speaking);
    s.word.classList.toggle("spoken-done", seconds >= end);
  });
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
  resetView();
  $("speak").disabled = true;
  const run = { mode: $("llm").checked ? "llm" : "text", format: null, ttfaMs: null, done: null, cancelled: null, stopped: null, underrunsAfterStart: 0, decodedSamples: 0 };
  demo.current = run;
  demo.runs.push(run);
  try {
    if (!demo.voicesLoaded) await loadVoices();
    const client = wantedClient();
    if (!client.connected) { setStatus("connecting…"); await client.connect(); }
    setStatus(`connected · ${client.format}`, "ok");
    run.format = client.format;
    const id = client.begin();
    const finished = new Promise((resolve) => {
      const settle = () => resolve();
      client.addEventListener("drained", settle, { once: true });
      client.addEventListener("stopped", (e) => { run.stopped = e.detail; settle(); }, { once: true });
      client.addEventListener("error", settle, { once: true });
      client.addEventListener("close", settle, { once: true });
    });
    client.addEventListener("done", (e) => { run.done = e.detail; run.decodedSamples = client.stats.decodedSamples; }, { once: true });
    client.addEventListener("cancelled", (e) => (run.cancelled = e.detail), { once: true });
    const text = $("text").value;
    if ($("llm").checked) {
      const delay = 1000 / Math.max(1, Number($("wps").value) || 20);
      for (const word of text.split(/(?<=\s)/)) {
        if (run.stopped || client.stats.cancelled || client.stopRequestedAt !== null) break;
        client.sendText(word, id);
        await new Promise((r) => setTimeout(r, delay));
      }
    } else {
      client.sendText(text, id);
    }
    if (client.stopRequestedAt === null) client.end(id);
    await finished;
    run.underrunsAfterStart = client.stats.underruns;
    run.firstDecodedMs = client.stats.firstDecodedMs;
    run.startedMs = client.stats.startedMs;
    run.playedSamples = client.stats.playedSamples;
    run.decodedSamples = client.stats.decodedSamples;
  } catch (error) {
    showError(`${error.code || "error"}: ${error.message}`);
    setStatus("not connected", "bad");
    run.error = error.message;
  } finally {
    run.finished = true;
    $("speak").disabled = false;
  }
}

function stop() {
  const client = demo.client;
  if (!client || !client.node) return;
  if (demo.current) demo.current.stopClickedAt = performance.now();
  client.cancel();
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
