// Drives /explorer in headless Chromium: the page loads, shows the right height, draws
// its charts (blocks per minute, RECORDS records this month), opens a block, checks a
// transaction's proof in the browser, and writes a screenshot.
//
//   node explorer.mjs URL TOKEN HEIGHT TX_ID OUT_DIR RECORDS
//
// Exit 0 when every step passed; otherwise the failing step is printed and the exit is 1.
import { chromium } from "playwright-core";

const [url, token, height, txId, outDir, recordCount] = process.argv.slice(2);
if (!recordCount) { console.error("usage: node explorer.mjs URL TOKEN HEIGHT TX_ID OUT_DIR RECORDS"); process.exit(2); }

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  page.setDefaultTimeout(15000);
  const step = (name) => console.log("step: " + name);

  step("load the page");
  await page.goto(url + "/explorer");
  await page.fill("#token", token);
  await page.click("#use-token");

  step("the chain head shows height " + height);
  await page.waitForFunction((h) => document.getElementById("height").textContent === h, height);

  step("the latest blocks are listed, newest first");
  await page.waitForSelector("#blocks tbody tr");
  const first = await page.textContent("#blocks tbody tr td");
  if (Number(first) !== Number(height) - 1) throw new Error(`newest block is ${first}, expected ${Number(height) - 1}`);

  step("the charts draw the blocks of the last hour and the records of this month");
  // The charts are redrawn every 10 s: wait for the views to have counted them all.
  await page.waitForFunction((n) => {
    const rects = [...document.querySelectorAll("#records-chart rect[data-count]")];
    return rects.length === 24 && rects.reduce((sum, r) => sum + Number(r.dataset.count), 0) === n;
  }, Number(recordCount), { timeout: 25000 }).catch(async () => {
    const shown = await page.$$eval("#records-chart rect[data-count]", (rs) => rs.map((r) => r.dataset.count).join(","));
    throw new Error(`the records chart shows [${shown}], not ${recordCount} records this month`);
  });
  const blocks = await page.$$eval("#activity-chart rect[data-count]", (rs) => rs.reduce((sum, r) => sum + Number(r.dataset.count), 0));
  if (blocks < Number(height) - 1) throw new Error(`the activity chart shows ${blocks} blocks, expected at least ${Number(height) - 1}`);

  step("search for the transaction and check its proof in the browser");
  await page.fill("#search", txId);
  await page.click("#search-form button");
  await page.waitForSelector("#tx-title");
  await page.click("#verify-proof");
  await page.waitForFunction(() => /Proof (checked|FAILED)/.test(document.getElementById("proof-result").textContent));
  const verdict = await page.textContent("#proof-result");
  console.log("proof: " + verdict);
  if (!verdict.startsWith("Proof checked")) throw new Error("the proof did not check: " + verdict);

  step("open the transaction's block");
  await page.click("#tx-block");
  await page.waitForSelector("#block-title");
  const rows = await page.$$("#block-txs tr");
  if (rows.length < 2) throw new Error("the block lists no transactions");
  const ids = await page.$$eval("#block-txs button", (bs) => bs.map((b) => b.textContent));
  if (!ids.includes(txId)) throw new Error("the block does not list " + txId);

  step("screenshot");
  await page.screenshot({ path: outDir + "/explorer.png", fullPage: true });
  console.log("ok");
} catch (e) {
  failed = true;
  console.error("FAILED: " + e.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
