// Two headless Chromium devices (the system's chromium, via playwright-core) use the built client with IndexedDB
// from a page on another loopback origin (CORS), edit, go offline, reload, come back, and converge with the server.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serverState, startAccord, until } from "./support.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };

/** Serves test/page at / and the built client at /dist/ on 127.0.0.1 (the app's origin). */
async function startStatic() {
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const file = path.startsWith("/dist/")
      ? normalize(join(root, path))
      : normalize(join(root, "test/page", path === "/" ? "index.html" : path));
    if (!file.startsWith(root) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": TYPES[file.slice(file.lastIndexOf("."))] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { origin: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

const cleanup = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => {});
});

/** Every live record the server holds for `key`, "type/id" → data, sorted like the page's state(). */
async function remote(url, key) {
  const out = {};
  for (const [k, r] of await serverState(url, key)) if (!r.deleted) out[k] = r.data;
  return Object.fromEntries(Object.entries(out).sort());
}

test("two browser devices edit offline, reload, come back and converge with the server", { timeout: 120_000 }, async () => {
  assert.ok(existsSync(CHROMIUM), `no chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_BIN)`);
  const site = await startStatic();
  cleanup.push(site.close);
  const accord = await startAccord({ corsOrigins: [site.origin] });
  cleanup.push(() => accord.stop());
  assert.notEqual(new URL(accord.url).origin, site.origin, "the API is cross-origin for the page");
  const key = accord.key("browser-user");

  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  cleanup.push(() => browser.close());
  const appUrl = `${site.origin}/?server=${encodeURIComponent(accord.url)}&token=${encodeURIComponent(key)}`;
  const device = async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(String(e)));
    await page.goto(appUrl);
    await page.waitForFunction(() => window.app !== undefined, null, { timeout: 10_000 });
    return { context, page, problems };
  };
  const a = await device();
  const b = await device();
  const state = (d) => d.page.evaluate(() => window.app.state());
  const pending = (d) => d.page.evaluate(() => window.app.pending());
  const put = (d, type, id, data) => d.page.evaluate(([t, i, x]) => window.app.put(t, i, x), [type, id, data]);

  // Online: A's edits reach B through the server (push, then B's event stream and pull).
  await put(a, "pages", "p1", { title: "t0", body: "b0" });
  await put(a, "pages", "p2", { title: "doomed" });
  await put(a, "notebooks", "n1", { name: "shared" });
  await until(async () => Object.keys(await state(b)).length === 3, 10_000, "B to receive A's records");
  assert.deepEqual(await state(b), await state(a));
  assert.equal(await b.page.evaluate(() => window.app.liveOpens()), 1, "B's event stream is open (cross-origin SSE over fetch)");

  // The page can read the response headers it needs across origins (Retry-After, X-Request-Id: exposed).
  const headers = await a.page.evaluate(async ([url, token]) => {
    const res = await fetch(`${url}/api/sync/pull?since=not-a-cursor`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, requestId: res.headers.get("x-request-id"), body: await res.json() };
  }, [accord.url, key]);
  assert.equal(headers.status, 400);
  assert.equal(headers.requestId, headers.body.requestId, "X-Request-Id is readable cross-origin");

  // Offline: A's requests to the API are blocked (its page still loads), B's context is offline.
  await a.context.route(`${accord.url}/**`, (route) => route.abort("internetdisconnected"));
  await b.context.setOffline(true);
  await put(a, "pages", "p1", { title: "t-A", body: "b0" });
  await a.page.evaluate(() => window.app.delete("pages", "p2"));
  await put(a, "pages", "p3", { by: "A" });
  await put(a, "notebooks", "n1", { name: "A's name" });
  await put(b, "pages", "p1", { title: "t0", body: "b-B" });
  await put(b, "pages", "p4", { by: "B" });
  await put(b, "notebooks", "n1", { name: "B's name" });
  await new Promise((r) => setTimeout(r, 500)); // let both try, and fail, to push
  assert.equal(await pending(a), 4);
  assert.equal(await pending(b), 3);

  // A reloads while offline: its unpushed edits (and any stored outbox) come back from IndexedDB.
  await a.page.reload();
  await a.page.waitForFunction(() => window.app !== undefined, null, { timeout: 10_000 });
  assert.equal(await pending(a), 4, "edits survive the reload");
  assert.deepEqual((await state(a))["pages/p1"], { title: "t-A", body: "b0" });
  assert.equal((await remote(accord.url, key))["pages/p3"], undefined, "nothing reached the server while offline");

  // A comes back first, then B: B's edit of another field merges, its edit of the same field conflicts.
  await a.context.unrouteAll();
  await until(async () => (await pending(a)) === 0, 20_000, "A to push after coming back");
  await b.context.setOffline(false);
  await until(async () => (await pending(b)) === 0, 20_000, "B to push after coming back");
  const server = await remote(accord.url, key);
  await until(
    async () => JSON.stringify(await state(a)) === JSON.stringify(server) && JSON.stringify(await state(b)) === JSON.stringify(server),
    20_000,
    "both devices to equal the server",
  );
  assert.deepEqual(server, {
    "notebooks/n1": { name: "A's name" },
    "pages/p1": { title: "t-A", body: "b-B" },
    "pages/p3": { by: "A" },
    "pages/p4": { by: "B" },
  });
  const bResults = await b.page.evaluate(() => window.app.results);
  const merged = bResults.find((r) => r.id === "p1");
  assert.equal(merged.status, "merged");
  const conflict = bResults.find((r) => r.id === "n1");
  assert.equal(conflict.status, "conflict");
  assert.deepEqual(conflict.local.data, { name: "B's name" }, "the losing edit is handed to the app");

  // B resolves the conflict for its own edit; both devices converge on it.
  await b.page.evaluate((id) => window.app.resolve(id, { take: "incoming" }), conflict.conflictId);
  const resolved = await remote(accord.url, key);
  assert.deepEqual(resolved["notebooks/n1"], { name: "B's name" });
  await until(async () => JSON.stringify(await state(a)) === JSON.stringify(resolved), 10_000, "A to receive the resolution");
  assert.deepEqual(await state(b), resolved);
  assert.deepEqual(await b.page.evaluate(() => window.app.openConflicts()), []);
  assert.ok((await a.page.evaluate(() => window.app.liveOpens())) >= 1, "A's event stream reconnected after the block");
  assert.deepEqual([...a.problems, ...b.problems], [], "no uncaught errors in the pages");
});
