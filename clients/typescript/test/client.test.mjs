// The client against a real accord server: push, pull, paging, live updates, merges, conflicts, rejections, 410, replays.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { AccordClient, MemoryStorage } from "../dist/index.js";
import { metric, serverState, startAccord, startProxy, until } from "./support.mjs";

let server;
let users = 0;
const clients = [];

before(async () => {
  server = await startAccord();
});

after(async () => {
  await Promise.allSettled(clients.map((c) => c.stop()));
  await server?.stop();
});

/** A key for a user of its own, so tests do not see each other's data. */
function newUser() {
  return server.key(`ts-user-${++users}`);
}

/** A client that records every result and change it reports. */
function client(key, options = {}) {
  const c = new AccordClient({ url: server.url, token: key, live: "off", retry: { baseMs: 20, maxMs: 200 }, ...options });
  c.results = [];
  c.changes = [];
  c.on("result", (r) => c.results.push(r));
  c.on("change", (ch) => c.changes.push(ch));
  clients.push(c);
  return c;
}

const byId = (list) => Object.fromEntries(list.map((r) => [r.id, r.data]));

test("push and pull between two devices, deletes included", async () => {
  const key = newUser();
  const a = client(key);
  const b = client(key);
  await a.put("pages", "p1", { title: "one" });
  await a.put("pages", "p2", { title: "two" });
  assert.equal(await a.pendingCount(), 2);
  await a.sync();
  assert.deepEqual(
    a.results.map((r) => [r.id, r.status, r.serverVersion]),
    [["p1", "applied", 1], ["p2", "applied", 1]],
  );
  assert.equal(await a.pendingCount(), 0);
  assert.equal(await a.storage.getMeta("outbox"), undefined, "an answered push leaves no outbox");

  await b.sync();
  assert.deepEqual(byId(await b.list("pages")), { p1: { title: "one" }, p2: { title: "two" } });
  assert.deepEqual(b.changes.map((c) => c.id).sort(), ["p1", "p2"]);

  await a.delete("pages", "p2");
  await a.sync();
  await b.sync();
  assert.deepEqual(byId(await b.list("pages")), { p1: { title: "one" } });
  const tomb = await b.get("pages", "p2");
  assert.equal(tomb.deleted, true);
  assert.equal(tomb.base.version, 2);
  const remote = await serverState(server.url, key);
  assert.equal(remote.get("pages/p2").deleted, true);
});

test("a pull pages until hasMore is false and keeps its cursor", async () => {
  const key = newUser();
  const a = client(key);
  for (let i = 0; i < 7; i++) await a.put("notebooks", `n${i}`, { i });
  await a.sync();
  const pulls = [];
  const counting = (url, init) => {
    if (String(url).includes("/api/sync/pull")) pulls.push(String(url));
    return fetch(url, init);
  };
  const b = client(key, { pullLimit: 2, fetch: counting });
  await b.sync();
  assert.equal((await b.list("notebooks")).length, 7);
  assert.equal(pulls.length, 4, `7 records at 2 a page are 4 pages: ${pulls.join("\n")}`);
  assert.ok(!pulls[0].includes("since="), "the first pull starts from the beginning");
  assert.ok(pulls.slice(1).every((u) => u.includes("since=")), "later pages continue from the cursor");
  const cursor = await b.storage.getMeta("cursor");
  assert.ok(cursor, "the cursor is persisted");
  await b.sync();
  assert.ok(pulls.at(-1).includes(`since=${encodeURIComponent(cursor)}`), "the next sync resumes from the stored cursor");
});

test("the next page is requested while a page is being stored, and nothing is lost when storing fails", async () => {
  const key = newUser();
  const a = client(key);
  for (let i = 0; i < 9; i++) await a.put("notebooks", `n${i}`, { i });
  await a.sync();
  let stored = 0; // pages written to storage (a write that moves the cursor)
  let failNext = false;
  class SlowStorage extends MemoryStorage {
    async write(batch) {
      await new Promise((r) => setTimeout(r, 30));
      if (failNext) {
        failNext = false;
        throw new Error("disk full");
      }
      await super.write(batch);
      if (batch.meta && "cursor" in batch.meta) stored++;
    }
  }
  const storedAtPull = [];
  const watching = (url, init) => {
    if (String(url).includes("/api/sync/pull")) storedAtPull.push(stored);
    return fetch(url, init);
  };
  const b = client(key, { pullLimit: 2, fetch: watching, storage: new SlowStorage() });
  await b.sync();
  assert.equal((await b.list("notebooks")).length, 9);
  assert.equal(stored, 5, "9 records at 2 a page are 5 pages");
  // Page k + 1 is asked for before page k is stored (one after another, it would be k).
  assert.deepEqual(storedAtPull, [0, 0, 1, 2, 3], "pages stored when each page was asked for");

  // A failed write ends the round; the next round resumes from the last stored cursor.
  for (let i = 9; i < 15; i++) await a.put("notebooks", `n${i}`, { i });
  await a.sync();
  failNext = true;
  await assert.rejects(b.sync(), /disk full/);
  await b.sync();
  assert.equal((await b.list("notebooks")).length, 15, "every record arrives after the failed round");
});

test("a 410 on a page asked for ahead discards sync state and pulls from the beginning", async () => {
  const key = newUser();
  const a = client(key);
  for (let i = 0; i < 5; i++) await a.put("notebooks", `n${i}`, { i });
  await a.sync();
  // A cursor that another database issued: this server answers it with a real 410.
  const other = await startAccord();
  let foreign;
  try {
    const o = new AccordClient({ url: other.url, token: other.key("someone-else"), live: "off" });
    await o.put("notebooks", "x", {});
    await o.sync();
    foreign = await o.storage.getMeta("cursor");
  } finally {
    await other.stop();
  }
  assert.ok(foreign, "the other server issued a cursor");
  let pulls = 0;
  const spoiling = (url, init) => {
    const u = new URL(String(url));
    if (u.pathname === "/api/sync/pull" && ++pulls === 2) u.searchParams.set("since", foreign);
    return fetch(u, init);
  };
  const b = client(key, { pullLimit: 2, fetch: spoiling });
  const resyncs = [];
  b.on("resync", (r) => resyncs.push(r));
  await b.sync();
  assert.equal(resyncs.length, 1, "the second page (asked for ahead) was refused once");
  assert.deepEqual(Object.keys(byId(await b.list("notebooks"))).sort(), ["n0", "n1", "n2", "n3", "n4"]);
  assert.equal(await b.storage.getMeta("resyncing"), undefined, "the full pull finished the resync");
});

test("edits of different fields on two devices merge; both adopt the merged record", async () => {
  const key = newUser();
  const a = client(key);
  const b = client(key);
  await a.put("pages", "p", { title: "t0", body: "b0" });
  await a.sync();
  await b.sync();
  await a.put("pages", "p", { title: "t1", body: "b0" });
  await b.put("pages", "p", { title: "t0", body: "b1" });
  await a.sync();
  await b.sync();
  const merged = b.results.find((r) => r.id === "p");
  assert.equal(merged.status, "merged");
  assert.deepEqual(merged.record.data, { title: "t1", body: "b1" });
  assert.equal(merged.serverVersion, 3);
  await a.sync();
  assert.deepEqual((await a.get("pages", "p")).data, { title: "t1", body: "b1" });
  assert.deepEqual((await b.get("pages", "p")).data, { title: "t1", body: "b1" });
  assert.equal((await serverState(server.url, key)).get("pages/p").version, 3);
});

test("a conflict is reported with the server record and conflict id, listed, and resolved", async () => {
  const key = newUser();
  const a = client(key);
  const b = client(key);
  await a.put("pages", "p", { title: "base" });
  await a.sync();
  await b.sync();
  await a.put("pages", "p", { title: "from a" });
  await b.put("pages", "p", { title: "from b" });
  await a.sync();
  await b.sync();
  const c = b.results.find((r) => r.id === "p");
  assert.equal(c.status, "conflict");
  assert.match(c.conflictId, /^[0-9a-f]+$/);
  assert.match(c.reason, /title/);
  assert.deepEqual(c.record.data, { title: "from a" });
  assert.deepEqual(c.local.data, { title: "from b" }, "the losing edit is handed to the app");
  assert.deepEqual((await b.get("pages", "p")).data, { title: "from a" }, "the replica holds the server's record");

  const open = await b.openConflicts();
  assert.equal(open.length, 1);
  assert.equal(open[0].id, c.conflictId);
  assert.deepEqual(open[0].incoming.data, { title: "from b" });

  const resolved = await b.resolveConflict(open[0], { take: "incoming" });
  assert.deepEqual(resolved.data, { title: "from b" });
  assert.deepEqual((await b.get("pages", "p")).data, { title: "from b" });
  await a.sync();
  assert.deepEqual((await a.get("pages", "p")).data, { title: "from b" });
  assert.equal((await b.openConflicts()).length, 0);
  await assert.rejects(b.resolveConflict(open[0], { take: "server" }), (e) => e.status === 409);
});

test("a rejected record is reported with its reason, kept for the app, and reverted locally", async () => {
  const key = newUser();
  const a = client(key);
  await a.put("contexts", "c1", { name: "work" });
  await a.put("topics", "t1", { contextId: "c1" });
  await a.put("topics", "t2", { contextId: "nowhere" });
  await a.sync();
  const status = Object.fromEntries(a.results.map((r) => [r.id, r.status]));
  assert.deepEqual(status, { c1: "applied", t1: "applied", t2: "rejected" });
  const rej = a.results.find((r) => r.id === "t2");
  assert.match(rej.reason, /contextId/);
  assert.deepEqual(rej.local.data, { contextId: "nowhere" });
  assert.equal(await a.get("topics", "t2"), undefined, "a new record the server refused is removed locally");
  assert.deepEqual((await a.rejected()).map((r) => r.id), ["t2"]);
  await a.clearRejected();
  assert.deepEqual(await a.rejected(), []);
  assert.equal(await a.pendingCount(), 0, "a rejected record is not pushed again");
});

test("an edit made while its push is in flight is kept and pushed next", async () => {
  const key = newUser();
  let a;
  let edited = false;
  const slow = async (url, init) => {
    const res = await fetch(url, init);
    if (String(url).endsWith("/api/sync/push") && !edited) {
      edited = true;
      await a.put("pages", "p", { title: "second" });
    }
    return res;
  };
  a = client(key, { fetch: slow });
  await a.put("pages", "p", { title: "first" });
  await a.sync();
  assert.deepEqual(a.results.map((r) => [r.status, r.serverVersion]), [["applied", 1], ["applied", 2]]);
  assert.deepEqual((await serverState(server.url, key)).get("pages/p").data, { title: "second" });
  assert.deepEqual((await a.get("pages", "p")).data, { title: "second" });
});

test("live updates: a started client pulls on server-sent events, and on long polls", async () => {
  const key = newUser();
  const writer = client(key);
  const sse = client(key, { live: "sse" });
  const poll = client(key, { live: "poll", pollWaitSecs: 5 });
  const opened = new Promise((r) => sse.on("live", (up) => up && r()));
  sse.start();
  poll.start();
  await opened;
  await until(async () => (await poll.storage.getMeta("cursor")) !== undefined, 5000, "the poller's first round");
  await writer.put("pages", "live", { n: 1 });
  await writer.sync();
  await until(async () => (await sse.get("pages", "live"))?.data?.n === 1, 5000, "the SSE client to pull");
  await until(async () => (await poll.get("pages", "live"))?.data?.n === 1, 8000, "the long-polling client to pull");
  // And the other way: a started client pushes its edits by itself.
  await sse.put("pages", "back", { n: 2 });
  await until(async () => (await serverState(server.url, key)).has("pages/back"), 5000, "the started client to push");
  await sse.stop();
  await poll.stop();
});

test("a dropped answer is retried with the same pushId and applied exactly once, also across a restart", async () => {
  const key = newUser();
  let dropNext = 1;
  const proxy = await startProxy(server.url, (req) => req.url === "/api/sync/push" && dropNext-- > 0);
  try {
    const replays0 = await metric(server.url, "accord_push_replays_total");
    const a = client(key, { url: proxy.url });
    await a.put("pages", "once", { n: 1 });
    await a.sync();
    const pushes = proxy.requests.filter((r) => r.path === "/api/sync/push");
    assert.equal(pushes.length, 2);
    assert.equal(pushes[0].dropped, true);
    assert.equal(pushes[0].body, pushes[1].body, "the retry sends the same body");
    assert.match(JSON.parse(pushes[0].body).pushId, /^[0-9a-f]{32}$/);
    assert.deepEqual(a.results.map((r) => r.status), ["applied"], "the replayed answer is the original one");
    assert.equal(await metric(server.url, "accord_push_replays_total"), replays0 + 1, "the server replayed, not re-applied");

    // A push whose answer never arrives stays in storage; a new client on it (a reload) resends it.
    dropNext = 1000;
    const storage = new MemoryStorage();
    const crashed = client(key, { url: proxy.url, storage, retry: { attempts: 2, baseMs: 10, maxMs: 10 } });
    await crashed.put("pages", "twice", { n: 2 });
    await assert.rejects(crashed.sync());
    const outbox = await storage.getMeta("outbox");
    assert.ok(outbox, "the unanswered push is kept");
    const reloaded = client(key, { storage });
    await reloaded.put("pages", "later", { n: 3 }); // a newer edit goes in a later push, not into the stored one
    await reloaded.sync();
    const sent = proxy.requests.filter((r) => JSON.parse(r.body || "{}").pushId === outbox.pushId);
    assert.equal(sent.length, 2, "the crashed client sent it twice, both answers dropped");
    assert.deepEqual(reloaded.results.map((r) => [r.id, r.status]), [["twice", "applied"], ["later", "applied"]]);
    assert.equal(await metric(server.url, "accord_push_replays_total"), replays0 + 3, "each resend was a replay");
    const remote = await serverState(server.url, key);
    assert.equal(remote.get("pages/twice").version, 1, "applied once");
    assert.equal(await storage.getMeta("outbox"), undefined);
  } finally {
    await proxy.close();
  }
});

test("410 from a cursor of another database: local sync state is discarded and rebuilt from the server", async () => {
  const key = newUser();
  const storage = new MemoryStorage();
  const a = client(key, { storage });
  await a.put("pages", "old", { from: "first server" });
  await a.sync();
  const other = await startAccord();
  try {
    const otherKey = other.key(`ts-user-${users}`);
    const seed = new AccordClient({ url: other.url, token: otherKey, live: "off" });
    await seed.put("pages", "new", { from: "second server" });
    await seed.sync();

    const moved = client(otherKey, { url: other.url, storage });
    const resyncs = [];
    moved.on("resync", (r) => resyncs.push(r));
    await moved.put("pages", "mine", { pending: true }); // an unpushed edit survives the resync
    await moved.sync();
    assert.equal(resyncs.length, 1);
    assert.match(resyncs[0].reason, /cursor|database|pull/i);
    assert.deepEqual(byId(await moved.list("pages")), { new: { from: "second server" }, mine: { pending: true } });
    assert.ok(moved.changes.some((c) => c.id === "old" && c.record === null), "the removal is reported");
    assert.deepEqual([...(await serverState(other.url, otherKey)).keys()].sort(), ["pages/mine", "pages/new"]);
  } finally {
    await other.stop();
  }
});

test("410 after reset-cursors (a restored backup): the client pulls from the beginning", async () => {
  const own = await startAccord();
  let restarted;
  try {
    const key = own.key("restore-user");
    const a = new AccordClient({ url: own.url, token: key, live: "off" });
    await a.put("pages", "p", { v: 1 });
    await a.sync();
    const port = own.port;
    await own.stop({ keep: true });
    own.cli("reset-cursors");
    restarted = await startAccord({ dir: own.dir, port });
    const resyncs = [];
    a.on("resync", (r) => resyncs.push(r));
    await a.sync();
    assert.equal(resyncs.length, 1, "the old cursor was refused with 410");
    assert.deepEqual(byId(await a.list("pages")), { p: { v: 1 } });
    await a.sync();
    assert.equal(resyncs.length, 1, "the new cursor is accepted");
  } finally {
    await (restarted ?? own).stop();
  }
});

test("429 with Retry-After (failed-authentication limit) is waited out, then the push succeeds", async () => {
  const own = await startAccord({ extra: "[auth]\nfailed_per_minute = 60" });
  try {
    const key = own.key("limited");
    for (let i = 0; i < 60; i++) {
      await fetch(`${own.url}/api/sync/pull`, { headers: { authorization: "Bearer ka_wrong" } }).then((r) => r.text());
    }
    const seen = [];
    const logging = async (url, init) => {
      const res = await fetch(url, init);
      seen.push({ status: res.status, retryAfter: res.headers.get("retry-after"), at: Date.now() });
      return res;
    };
    const a = new AccordClient({ url: own.url, token: key, live: "off", fetch: logging, retry: { baseMs: 10, maxMs: 20 } });
    const results = [];
    a.on("result", (r) => results.push(r));
    await a.put("pages", "p", { v: 1 });
    await a.sync();
    assert.equal(seen[0].status, 429);
    assert.ok(Number(seen[0].retryAfter) >= 1, `Retry-After: ${seen[0].retryAfter}`);
    const ok = seen.find((s) => s.status === 200);
    assert.ok(ok.at - seen[0].at >= Number(seen[0].retryAfter) * 1000 - 50, "waited as long as Retry-After said");
    assert.deepEqual(results.map((r) => r.status), ["applied"]);
  } finally {
    await own.stop();
  }
});

test("a started client's event stream reconnects after the server restarts", async () => {
  const own = await startAccord();
  let restarted;
  try {
    const key = own.key("restart-user");
    const live = new AccordClient({ url: own.url, token: key, live: "sse", retry: { baseMs: 20, maxMs: 200 } });
    clients.push(live);
    let opens = 0;
    live.on("live", (up) => up && opens++);
    live.start();
    await until(() => opens === 1, 5000, "the stream to open");
    const port = own.port;
    await own.stop({ keep: true });
    restarted = await startAccord({ dir: own.dir, port });
    await until(() => opens === 2, 10_000, "the stream to reopen");
    const writer = new AccordClient({ url: restarted.url, token: key, live: "off" });
    await writer.put("pages", "after-restart", { ok: true });
    await writer.sync();
    await until(async () => (await live.get("pages", "after-restart")) !== undefined, 5000, "the change to arrive");
    await live.stop();
  } finally {
    await (restarted ?? own).stop();
  }
});

test("live: \"auto\" falls back to long polls when the event stream keeps failing", async () => {
  const key = newUser();
  const proxy = await startProxy(server.url, () => false, (req) => req.url.startsWith("/api/sync/events"));
  try {
    const c = client(key, { url: proxy.url, live: "auto", pollWaitSecs: 5 });
    c.start();
    await until(() => proxy.requests.some((r) => r.path.includes("wait=5")), 10_000, "a long poll");
    assert.equal(proxy.requests.filter((r) => r.refused).length, 3, "three failed streams, then long polls");
    const writer = client(key);
    await writer.put("pages", "polled", { n: 1 });
    await writer.sync();
    await until(async () => (await c.get("pages", "polled")) !== undefined, 8000, "the long poll to bring the change");
    await c.stop();
  } finally {
    await proxy.close();
  }
});

test("a push the server refuses whole (422) is split until the invalid record is rejected alone", async () => {
  const key = newUser();
  const a = client(key);
  let deep = { leaf: true };
  for (let i = 0; i < 70; i++) deep = { deep }; // deeper than sync.max_json_depth (64)
  await a.put("pages", "ok1", { n: 1 });
  await a.put("pages", "bad", deep);
  await a.put("pages", "ok2", { n: 2 });
  await a.sync();
  const status = Object.fromEntries(a.results.map((r) => [r.id, r.status]));
  assert.deepEqual(status, { ok1: "applied", bad: "rejected", ok2: "applied" });
  assert.match(a.results.find((r) => r.id === "bad").reason, /depth|nest/i);
  assert.deepEqual([...(await serverState(server.url, key)).keys()].sort(), ["pages/ok1", "pages/ok2"]);
  assert.equal(await a.pendingCount(), 0);
});
