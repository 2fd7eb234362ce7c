// browser.mjs: the web page on GET / in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core): checks that health and the
// model name show up, uploads an image through the page's file input,
// waits for the predictions and reports what the page shows.
// Usage: node browser.mjs BASE_URL IMAGE_FILE SCREENSHOT_PNG TOP_K [CHROMIUM]
// Prints one JSON object: health text, model text, the labels (raw, from
// data-label) and shown texts, scores, meta line, console errors.
import { chromium } from "playwright-core";

const [base, image, shot, topk, exe] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: exe || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const out = { console_errors: [], outside_requests: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
  page.on("pageerror", (e) => out.console_errors.push(String(e)));
  // Every asset must come from vitserve itself (works with no outside network).
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(base) && !u.startsWith("blob:") && !u.startsWith("data:")) out.outside_requests.push(u);
  });
  await page.goto(base + "/", { waitUntil: "load", timeout: 30000 });
  await page.waitForFunction(() => document.getElementById("health").textContent !== "checking…",
                             null, { timeout: 30000 });
  out.health = await page.textContent("#health");
  out.model = await page.textContent("#model");
  await page.fill("#topk", topk || "5");
  await page.setInputFiles("#file", image);
  await page.waitForSelector("#preds .pred", { timeout: 60000 });
  await page.waitForFunction(() => !document.getElementById("meta").textContent.includes("classifying"),
                             null, { timeout: 60000 });
  out.labels = await page.$$eval("#preds .pred .label span:first-child", (els) => els.map((e) => e.dataset.label));
  out.shown = await page.$$eval("#preds .pred .label span:first-child", (els) => els.map((e) => e.textContent));
  out.scores = await page.$$eval("#preds .pred .label span:last-child", (els) => els.map((e) => e.textContent));
  out.meta = await page.textContent("#meta");
  out.error = await page.textContent("#error");
  // Classify the same image again: now served from the cache.
  await page.click("#go");
  await page.waitForFunction(() => document.getElementById("meta").dataset.cached === "true",
                             null, { timeout: 60000 }).catch(() => {});
  out.meta_again = await page.textContent("#meta");
  await page.screenshot({ path: shot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
