// The demo page on a server with API keys: opened without a token it says a key is needed;
// opened as /?token=<browser token> it lists the voices and speaks. Prints one JSON object.
// Usage: node run_token.mjs BASE_URL TOKEN
import { chromium } from "playwright-core";

const [base, token] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--autoplay-policy=no-user-gesture-required", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = { console: [] };
try {
  const page = await (await browser.newContext()).newPage();
  page.on("console", (m) => result.console.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.message}`));

  await page.goto(base);
  await page.waitForFunction(() => window.streamvoxDemo && window.streamvoxDemo.errors.length > 0, null, { timeout: 20000 });
  result.withoutToken = { errorText: await page.textContent("#error-text"),
    voicesLoaded: await page.evaluate(() => window.streamvoxDemo.voicesLoaded) };

  await page.goto(`${base}?token=${encodeURIComponent(token)}`);
  await page.waitForFunction(() => window.streamvoxDemo && window.streamvoxDemo.voicesLoaded, null, { timeout: 20000 });
  await page.fill("#text", "A page with a browser token may speak.");
  await page.click("#speak");
  await page.waitForFunction(() => window.streamvoxDemo.runs.length > 0 && window.streamvoxDemo.runs.every((r) => r.finished === true),
    null, { timeout: 60000 });
  const run = await page.evaluate(() => {
    const r = window.streamvoxDemo.runs.at(-1);
    return { done: r.done, decodedSamples: r.decodedSamples };
  });
  result.withToken = { ...run, errorText: await page.textContent("#error-text"),
    voices: await page.evaluate(() => document.getElementById("voice").options.length) };
} catch (error) {
  result.failure = String(error && error.stack ? error.stack : error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
