import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import puppeteer, { type Page } from "puppeteer-core";
import { statusPage } from "../src/observe/page.js";
import { ROOT, startCluster, tmpDir, waitFor } from "./helpers/cluster.js";

const CHROMIUM = "/usr/bin/chromium";
const DEAD_AFTER = 3;
const CHUNK = 1024 * 1024;
const ARTIFACTS = path.join(ROOT, "test-artifacts");

/** The trimmed text of every element `selector` matches, in document order. */
const texts = (page: Page, selector: string): Promise<string[]> => page.$$eval(selector, (els) => els.map((e) => (e.textContent ?? "").trim()));
/** The text of the first element `selector` matches, or null when none does. */
const text = async (page: Page, selector: string): Promise<string | null> => (await texts(page, selector))[0] ?? null;

test("the status page shows the nodes, browses the namespace, and turns a killed node red", async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: the status page test drives Debian's chromium; run 'bash scripts/ensure-packages.sh chromium=/usr/bin/chromium' (as root) to install it`);
  const cluster = await startCluster(t, { deadAfter: DEAD_AFTER, directoryArgs: ["--http", "127.0.0.1:0", "--chunk-size", String(CHUNK)] });
  const base = await cluster.directory.http();
  const { directory } = await cluster.status();

  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--headless=new", "--disable-dev-shm-usage"] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1000 });
  const pageErrors: string[] = [];
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  const requests: string[] = [];
  page.on("request", (req) => requests.push(req.url()));
  fs.mkdirSync(ARTIFACTS, { recursive: true });

  try {
    await page.goto(`${base}/`, { waitUntil: "load" });
    await waitFor(async () => (await page.$$('#nodes tr[data-state="up"]')).length >= 4, "three storage nodes and the lock service up in the page");
    const storageRows = await page.$$eval("#nodes tr", (rows) => rows.filter((r) => r.children[0]?.textContent === "storage").map((r) => [r.getAttribute("data-url"), r.getAttribute("data-state")]));
    assert.deepEqual(storageRows.sort(), cluster.storage.map((p) => [p.url, "up"]).sort(), "every storage node is listed, up");
    assert.equal(await text(page, "#cluster"), directory.clusterId);
    assert.equal(await text(page, "#deadafter"), `${DEAD_AFTER} s`);

    // Two and a half chunks of random bytes, so that the file shows more than one chunk.
    const local = path.join(tmpDir(t), "a.txt");
    const data = crypto.randomBytes(CHUNK * 2 + CHUNK / 2);
    fs.writeFileSync(local, data);
    const sha256 = crypto.createHash("sha256").update(data).digest("hex");
    const w = await cluster.client(["write", "/docs/a.txt", local]);
    assert.equal(w.code, 0, w.stderr);

    // The root folder is refreshed by itself: /docs/ shows up without a reload.
    await page.waitForSelector('#ls tr[data-path="/docs/"] a', { timeout: 20_000 });
    await page.click('#ls tr[data-path="/docs/"] a');
    await page.waitForSelector('#ls tr[data-path="/docs/a.txt"] a', { timeout: 20_000 });
    assert.deepEqual(await texts(page, "#crumbs a"), ["/", "docs"]);
    await page.click('#ls tr[data-path="/docs/a.txt"] a');
    await page.waitForSelector("#file-sha256", { timeout: 20_000 });
    assert.equal(await text(page, "#file-sha256"), sha256);
    assert.match((await text(page, "#file-size")) ?? "", new RegExp(`\\(${data.length.toLocaleString("en")} bytes\\)`));
    const chunks: { hash: string | null; where: string[] }[] = await page.$$eval("#chunks tbody tr", (rows) => rows.map((r) => ({ hash: r.getAttribute("data-hash"), where: [...r.querySelectorAll(".replica")].map((e) => e.textContent) })));
    assert.equal(chunks.length, 3, "2.5 MiB in 1 MiB chunks");
    const storageUrls = new Set(cluster.storage.map((p) => p.url));
    for (const c of chunks) {
      assert.match(c.hash ?? "", /^[0-9a-f]{64}$/);
      assert.ok(c.where.length >= 1 && c.where.every((u) => storageUrls.has(u)), `chunk ${c.hash} lives on storage nodes, not on ${JSON.stringify(c.where)}`);
    }
    await waitFor(async () => (await text(page, "#t-files")) === "1", "the totals counting the file");
    // Both charts drawn from samples: two lines of throughput, one of under-replicated chunks.
    await waitFor(async () => (await page.$$(".charts svg polyline")).length >= 3, "the charts drawn");

    const victim = cluster.storage[0]!;
    const killedAt = Date.now();
    await victim.kill();
    // Down within --dead-after, plus a refresh of the page and the slack of a busy machine.
    await page.waitForSelector(`#nodes tr[data-url="${victim.url}"][data-state="down"]`, { timeout: DEAD_AFTER * 1000 + 10_000 });
    t.diagnostic(`the killed node turned red ${Date.now() - killedAt} ms after the kill`);
    const red = await page.$eval(`#nodes tr[data-url="${victim.url}"] .state`, (e) => e.ownerDocument.defaultView!.getComputedStyle(e).backgroundColor);
    assert.equal(red, "rgb(207, 34, 46)", "a down node's state is red");
    const others = await page.$$eval('#nodes tr[data-state="up"]', (rows) => rows.map((r) => r.getAttribute("data-url")));
    for (const p of cluster.storage.slice(1)) assert.ok(others.includes(p.url), `${p.url} is still up`);
    assert.equal(await text(page, "#error"), "", "no fetch failed");

    await page.screenshot({ path: path.join(ARTIFACTS, "status-page.png"), fullPage: true });
    assert.ok(fs.statSync(path.join(ARTIFACTS, "status-page.png")).size > 10_000, "the screenshot has something in it");
    assert.deepEqual(pageErrors, [], "the page's script threw no error");
    const elsewhere = requests.filter((u) => !u.startsWith(`${base}/`) && !u.startsWith("data:"));
    assert.deepEqual(elsewhere, [], "the page asks for nothing but its own server");
    assert.ok(requests.some((u) => u.startsWith(`${base}/api/history`)), "the page read the history");
  } catch (err) {
    // What the page showed when it went wrong says more than the assertion alone.
    await page.screenshot({ path: path.join(ARTIFACTS, "status-page-failure.png"), fullPage: true }).catch(() => {});
    throw err;
  }
});

test("the status page is one document that reads its APIs by relative URL and puts no API text in as HTML", () => {
  const html = statusPage();
  assert.match(html, /^<!doctype html>/);
  assert.doesNotMatch(html, /\b(?:src|href)\s*=\s*["']?(?:[a-z]+:)?\/\//i, "nothing loaded from another host");
  assert.doesNotMatch(html, /<script[^>]*\bsrc=|<link[^>]*stylesheet/i, "style and script are inline");
  assert.doesNotMatch(html, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/, "text goes in through textContent");
  const urls = [...html.matchAll(/getJson\("([^"]+)"/g)].map((m) => m[1]).sort();
  assert.deepEqual(urls, ["api/file?path=", "api/history", "api/ls?prefix=", "api/status"]);
});
