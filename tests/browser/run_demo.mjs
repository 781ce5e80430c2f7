// Drives the streamvox web demo in Debian's headless Chromium and prints one JSON object
// with what the page itself measured. Usage: node run_demo.mjs BASE_URL OUT_DIR
// (tests/test_browser.py runs it against a real server and asserts on the result.)
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, outDir] = process.argv.slice(2);
mkdirSync(outDir, { recursive: true });
const LONG = "This is a long passage for the stop test. It keeps going for several sentences so that the stop button " +
  "has something to interrupt. The server should cancel the context, and the page should fall silent at once. " +
  "Nothing after the cut should ever reach the speakers, no matter how much audio was already buffered.";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--autoplay-policy=no-user-gesture-required", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const result = { console: [], scenarios: {} };
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  page.on("console", (m) => result.console.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.message}`));
  await page.goto(base);
  await page.waitForFunction(() => window.streamvoxDemo && window.streamvoxDemo.voicesLoaded, null, { timeout: 20000 });
  // A person takes a moment before pressing Speak; meanwhile a freshly launched Chromium finishes
  // starting its helper processes, which on 2 cores otherwise compete with the first utterance.
  await page.waitForTimeout(2000);
  result.capabilities = await page.evaluate(async () => ({
    audioDecoder: typeof AudioDecoder === "function" &&
      (await AudioDecoder.isConfigSupported({ codec: "opus", sampleRate: 48000, numberOfChannels: 1 })).supported,
    audioWorklet: typeof AudioWorkletNode === "function",
  }));

  const lastRun = () => page.evaluate(() => {
    const r = window.streamvoxDemo.runs.at(-1);
    return JSON.parse(JSON.stringify(r, (k, v) => (k === "block" || k === "node" ? undefined : v)));
  });
  const waitRun = () => page.waitForFunction(() => window.streamvoxDemo.runs.every((r) => r.finished === true), null, { timeout: 60000 });

  async function speakScenario(name, { format = "auto", llm = false, wps = 20, screenshot = false } = {}) {
    await page.selectOption("#format", format);
    await page.setChecked("#llm", llm);
    await page.fill("#wps", String(wps));
    await page.click("#speak");
    if (screenshot) {
      await page.waitForFunction(() => document.querySelectorAll("#timeline .seg").length >= 2, null, { timeout: 30000 });
      await page.waitForTimeout(700);
      await page.screenshot({ path: join(outDir, "demo-mid-stream.png"), fullPage: true });
    }
    await waitRun();
    result.scenarios[name] = await lastRun();
    result.scenarios[name].errorText = await page.textContent("#error-text");
  }

  await speakScenario("opus", { screenshot: true });
  await speakScenario("pcm", { format: "pcm" });
  await speakScenario("llm", { llm: true, wps: 20 });

  // A second context while the first plays: it is generated at once and plays right after.
  await page.fill("#text", "The first reply is still speaking, for a sentence or two, when the next one is asked for. It keeps going a little longer.");
  await page.click("#speak");
  await page.waitForFunction(() => window.streamvoxDemo.client?.stats.playedSamples > 48000 * 0.3, null, { timeout: 30000 });
  await page.fill("#text", "And here is the second reply.");
  await page.click("#speak");
  await waitRun();
  const pair = await page.evaluate(() => window.streamvoxDemo.runs.slice(-2).map((r) =>
    JSON.parse(JSON.stringify(r, (k, v) => (k === "block" || k === "node" ? undefined : v)))));
  result.scenarios.second = { first: pair[0], second: pair[1] };

  // Stop (barge-in): wait until playback has run for a while, then press Stop.
  await page.fill("#text", LONG);
  await page.selectOption("#format", "auto");
  await page.setChecked("#llm", false);
  await page.click("#speak");
  await page.waitForFunction(() => window.streamvoxDemo.client?.stats.playedSamples > 48000 * 0.6, null, { timeout: 30000 });
  await page.click("#stop");
  await waitRun();
  await page.waitForFunction(() => window.streamvoxDemo.runs.at(-1).cancelled !== null, null, { timeout: 10000 });
  const playedAtStop = await page.evaluate(() => window.streamvoxDemo.client.stats.playedSamples);
  await page.waitForTimeout(400);
  const after = await page.evaluate(() => ({
    played: window.streamvoxDemo.client.stats.playedSamples,
    level: window.streamvoxDemo.client.level(),
  }));
  result.scenarios.stop = {
    ...(await lastRun()), playedAtStop, playedAfter: after.played, levelAfter: after.level,
    heardShown: await page.textContent("#heard"), sentText: LONG,
  };

  // An unknown voice: the person sees the server's error.
  await page.evaluate(() => {
    const select = document.getElementById("voice");
    select.add(new Option("nobody", "nobody", false, true));
  });
  await page.fill("#text", "This voice does not exist.");
  await page.click("#speak");
  await waitRun();
  result.scenarios.unknownVoice = { ...(await lastRun()), errorText: await page.textContent("#error-text"),
    errorVisible: await page.isVisible("#error") };

  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(outDir, "demo-phone.png"), fullPage: true });
  result.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
} catch (error) {
  result.failure = String(error && error.stack ? error.stack : error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
