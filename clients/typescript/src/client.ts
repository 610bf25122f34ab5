// The sync client: local edits, the durable push queue, the pull loop, live updates and conflict helpers.
import {
  NetworkError,
  ProblemError,
  SseParser,
  backoffMs,
  deadline,
  isTemporary,
  problemOf,
  sleep,
} from "./http.js";
import { MemoryStorage, type StorageAdapter, type WriteBatch } from "./storage.js";
import type {
  Conflict,
  Data,
  LocalRecord,
  Outbox,
  PushRecord,
  RecordResult,
  Resolution,
  ServerRecord,
  WireResult,
} from "./types.js";

export interface ClientOptions {
  /** The server's base URL, e.g. `https://sync.example.com`. */
  url: string;
  /** An API key (`ka_…`) or JWT, or a function returning the current one. */
  token: string | (() => string | Promise<string>);
  /** Where the replica lives; default in memory. */
  storage?: StorageAdapter;
  /** Identifies this device to the server (superseding its own stale conflicts); default generated once and stored. */
  clientId?: string;
  /** Records per push (default 500). */
  batchSize?: number;
  /** Records per pull page (default 1000). */
  pullLimit?: number;
  /** How long after a local edit `start()`ed clients push, to batch edits together (default 25 ms). */
  pushDelayMs?: number;
  /** Live updates after `start()`: server-sent events, long polls, SSE falling back to long polls (default), or none. */
  live?: "sse" | "poll" | "auto" | "off";
  /** `wait` of a long poll, in seconds (default 25). */
  pollWaitSecs?: number;
  /** Attempts per request before a sync round gives up for now (default 8), and the back-off bounds. */
  retry?: { attempts?: number; baseMs?: number; maxMs?: number };
  /** A request without an answer for this long is abandoned and retried (default 60 s). */
  requestTimeoutMs?: number;
  /** An event stream silent for this long (no event, no heartbeat) is reopened (default 45 s). */
  heartbeatTimeoutMs?: number;
  /** The `fetch` to use (default the platform's). */
  fetch?: typeof fetch;
}

/** What the client reports; `on(name, listener)` subscribes. */
export interface ClientEvents {
  /** The server's answer for each pushed record. Conflicts and rejections are always reported here. */
  result: RecordResult;
  /** A local record changed because of sync (pull, merge, conflict, rejection); `record` null when removed. */
  change: { type: string; id: string; record: LocalRecord | null };
  /** A sync round or the live connection failed; sync is retried later. */
  error: Error;
  /** The server refused the pull cursor (410): local sync state was discarded and a full pull started. */
  resync: { reason: string };
  /** The live connection opened (`true`) or closed (`false`). */
  live: boolean;
}

type Listener<K extends keyof ClientEvents> = (value: ClientEvents[K]) => void;

/** One answer of `GET /api/sync/pull`. */
type PullPage = { changes: Record<string, ServerRecord[]>; cursor: string; hasMore: boolean };

/** Kept at most, oldest dropped: rejected records awaiting the app (`client.rejected()`). */
const MAX_REJECTED = 1000;
/** Pages one pull may take before it stops (a bound on the loop, far above any real data set). */
const MAX_PAGES = 100_000;

function randomId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** `onto` plus every field the app changed after the push (`local` differs from `pushed`). */
function rebase(onto: Data | null, pushed: Data | undefined, local: Data | null): Data {
  const out: Data = { ...(onto ?? {}) };
  for (const field of new Set([...Object.keys(pushed ?? {}), ...Object.keys(local ?? {})])) {
    const mine = local?.[field];
    if (!sameJson(pushed?.[field], mine)) {
      if (mine === undefined) delete out[field];
      else out[field] = mine;
    }
  }
  return out;
}

export class AccordClient {
  readonly storage: StorageAdapter;
  private opts: Required<Omit<ClientOptions, "storage" | "clientId" | "fetch" | "retry">>;
  private retry: { attempts: number; baseMs: number; maxMs: number };
  private fetchFn: typeof fetch;
  private clientId?: string;
  private listeners = new Map<string, Set<(v: never) => void>>();
  private stopper = new AbortController();
  private started = false;
  private lastRev = 0;
  /** Serialises every read-modify-write of records (app edits and applying sync answers). */
  private lock: Promise<unknown> = Promise.resolve();
  private round: Promise<void> | null = null;
  private again = false;
  private roundError: Error | null = null;
  private failedRounds = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private onOnline = () => void this.requestRound();
  private pushTimer: ReturnType<typeof setTimeout> | undefined;
  private liveTask: Promise<void> | null = null;

  constructor(options: ClientOptions) {
    this.storage = options.storage ?? new MemoryStorage();
    this.clientId = options.clientId;
    this.fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.retry = { attempts: 8, baseMs: 250, maxMs: 30_000, ...options.retry };
    this.opts = {
      url: options.url.replace(/\/+$/, ""),
      token: options.token,
      batchSize: options.batchSize ?? 500,
      pullLimit: options.pullLimit ?? 1000,
      pushDelayMs: options.pushDelayMs ?? 25,
      live: options.live ?? "auto",
      pollWaitSecs: options.pollWaitSecs ?? 25,
      requestTimeoutMs: options.requestTimeoutMs ?? 60_000,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 45_000,
    };
  }

  // ---- events ----

  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof ClientEvents>(name: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(listener as (v: never) => void);
    return () => set!.delete(listener as (v: never) => void);
  }

  private emit<K extends keyof ClientEvents>(name: K, value: ClientEvents[K]) {
    for (const l of this.listeners.get(name) ?? []) {
      try {
        (l as Listener<K>)(value);
      } catch (e) {
        console.error(`accord client: a "${name}" listener threw`, e);
      }
    }
  }

  // ---- local data ----

  /** The record `type`/`id` as this replica has it (tombstones included), or undefined. */
  get(type: string, id: string): Promise<LocalRecord | undefined> {
    return this.storage.get(type, id);
  }

  /** The live (not deleted) records of a type: `{id, data}` each. */
  async list(type: string): Promise<{ id: string; data: Data }[]> {
    const all = await this.storage.list(type);
    return all.filter((r) => !r.deleted).map((r) => ({ id: r.id, data: r.data ?? {} }));
  }

  /** Creates or replaces a record locally; it is pushed by the next sync. */
  put(type: string, id: string, data: Data): Promise<void> {
    return this.edit(type, id, data, false);
  }

  /** Deletes a record locally (a tombstone is pushed). */
  delete(type: string, id: string): Promise<void> {
    return this.edit(type, id, null, true);
  }

  private async edit(type: string, id: string, data: Data | null, deleted: boolean) {
    await this.locked(async () => {
      const old = await this.storage.get(type, id);
      this.lastRev = Math.max(Date.now() * 1000, this.lastRev + 1);
      const record: LocalRecord = { type, id, data, deleted, base: old?.base ?? null, rev: this.lastRev, dirty: true };
      await this.storage.write({ put: [record] });
    });
    if (this.started) {
      clearTimeout(this.pushTimer);
      this.pushTimer = setTimeout(() => void this.requestRound(), this.opts.pushDelayMs);
    }
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  // ---- sync rounds ----

  /** Pushes every local edit, then pulls every server change. Rejects if the round failed (it is retried later when started). */
  async sync(): Promise<void> {
    await this.requestRound();
    if (this.roundError) throw this.roundError;
  }

  /** Runs a round (push, then pull) now or right after the one in progress; rounds never overlap. */
  private requestRound(): Promise<void> {
    this.again = true;
    if (!this.round) {
      this.round = (async () => {
        for (let i = 0; this.again && i < 1000 && !this.stopper.signal.aborted; i++) {
          this.again = false;
          this.roundError = null;
          try {
            await this.pushAll();
            await this.pullAll();
          } catch (e) {
            this.roundError = e as Error;
            this.emit("error", e as Error);
          }
        }
        // A started client retries a failed round by itself, backing off (offline, server down).
        this.failedRounds = this.roundError ? this.failedRounds + 1 : 0;
        clearTimeout(this.retryTimer);
        if (this.roundError && this.started) {
          const wait = backoffMs(this.failedRounds, this.retry.baseMs * 4, this.retry.maxMs);
          this.retryTimer = setTimeout(() => void this.requestRound(), wait);
        }
      })().finally(() => (this.round = null));
    }
    return this.round;
  }

  /** Starts syncing by itself: a round now, after local edits, and on live updates from the server. */
  start(): void {
    if (this.started) return;
    this.started = true;
    void this.requestRound();
    if (this.opts.live !== "off") this.liveTask = this.liveLoop();
    (globalThis as { addEventListener?: typeof addEventListener }).addEventListener?.("online", this.onOnline);
  }

  /** Stops syncing and closes the live connection; an unanswered push stays in storage for the next start. */
  async stop(): Promise<void> {
    this.started = false;
    clearTimeout(this.pushTimer);
    clearTimeout(this.retryTimer);
    (globalThis as { removeEventListener?: typeof removeEventListener }).removeEventListener?.("online", this.onOnline);
    this.stopper.abort(new Error("client stopped"));
    await Promise.allSettled([this.round, this.liveTask, this.lock]);
    this.stopper = new AbortController();
  }

  // ---- HTTP ----

  private async token(): Promise<string> {
    const t = this.opts.token;
    return typeof t === "function" ? await t() : t;
  }

  /** One request with a timeout; a non-2xx answer is a ProblemError, no answer a NetworkError. */
  private async request(method: string, path: string, body?: unknown, timeoutMs = this.opts.requestTimeoutMs) {
    const headers: Record<string, string> = { authorization: `Bearer ${await this.token()}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const { signal, clear } = deadline(this.stopper.signal, timeoutMs);
    try {
      let res: Response;
      try {
        res = await this.fetchFn(this.opts.url + path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal,
        });
      } catch (e) {
        throw new NetworkError(e);
      }
      if (!res.ok) throw await problemOf(res);
      try {
        return await res.json();
      } catch (e) {
        throw new NetworkError(e); // the body was cut short
      }
    } finally {
      clear();
    }
  }

  /** `request`, retried with back-off (honouring Retry-After) while the failure is temporary. */
  private async requestRetrying(method: string, path: string, body?: unknown, timeoutMs?: number) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.request(method, path, body, timeoutMs);
      } catch (e) {
        if (!isTemporary(e) || attempt + 1 >= this.retry.attempts || this.stopper.signal.aborted) throw e;
        const hinted = e instanceof ProblemError ? e.retryAfterMs : undefined;
        await sleep(hinted ?? backoffMs(attempt, this.retry.baseMs, this.retry.maxMs), this.stopper.signal);
      }
    }
  }

  private async getClientId(): Promise<string> {
    if (this.clientId) return this.clientId;
    let id = await this.storage.getMeta<string>("clientId");
    if (!id) {
      id = randomId();
      await this.storage.write({ meta: { clientId: id } });
    }
    return (this.clientId = id);
  }

  // ---- push ----

  /** Pushes until no edit is left: the stored outbox first (same pushId), then new batches. */
  private async pushAll() {
    let batchSize = this.opts.batchSize;
    for (let i = 0; i < 100_000; i++) {
      const outbox = (await this.storage.getMeta<Outbox>("outbox")) ?? (await this.newOutbox(batchSize));
      if (!outbox) return;
      let answer: { results: Record<string, WireResult[]> };
      try {
        answer = await this.requestRetrying("POST", "/api/sync/push", outbox.body);
      } catch (e) {
        // Nothing was written for these; split the batch to find the record the server refuses.
        const refused = e instanceof ProblemError && (e.status === 413 || e.status === 422);
        if (!refused && !(e instanceof ProblemError && e.status === 507)) throw e; // the outbox stays for a retry
        const size = Object.values(outbox.body.changes).reduce((n, rs) => n + rs.length, 0);
        if (refused && size === 1) {
          const [type, [rec]] = Object.entries(outbox.body.changes)[0];
          const result: WireResult = { id: rec.id, status: "rejected", reason: e.problem.detail };
          await this.applyResults(outbox, { [type]: [result] });
          continue;
        }
        await this.storage.write({ meta: { outbox: undefined } });
        if (!refused) throw e; // 507: over quota; the edits stay dirty
        batchSize = Math.max(1, Math.floor(Math.min(batchSize, size) / 2));
        continue;
      }
      await this.applyResults(outbox, answer.results);
    }
  }

  /** Stores a batch of dirty records as the outbox, with a new pushId, before anything is sent. */
  private async newOutbox(limit: number): Promise<Outbox | undefined> {
    const clientId = await this.getClientId();
    return this.locked(async () => {
      const dirty = await this.storage.dirty(limit);
      if (dirty.length === 0) return undefined;
      const pushId = randomId();
      const outbox: Outbox = { pushId, body: { clientId, pushId, changes: {} }, revs: {}, createdAt: Date.now() };
      for (const r of dirty) {
        const baseVersion = r.base?.version ?? 0;
        const rec: PushRecord = { id: r.id, version: baseVersion + 1, baseVersion, deleted: r.deleted };
        if (!r.deleted) rec.data = r.data ?? {};
        (outbox.body.changes[r.type] ??= []).push(rec);
        (outbox.revs[r.type] ??= {})[r.id] = r.rev;
      }
      await this.storage.write({ meta: { outbox } });
      return outbox;
    });
  }

  /** Applies a push answer to the replica and clears the outbox in one write; reports each record. */
  private async applyResults(outbox: Outbox, results: Record<string, WireResult[]>) {
    const reports: RecordResult[] = [];
    const changes: { type: string; id: string; record: LocalRecord | null }[] = [];
    await this.locked(async () => {
      const batch: Required<WriteBatch> = { put: [], delete: [], meta: { outbox: undefined } };
      const rejected = (await this.storage.getMeta<RecordResult[]>("rejected")) ?? [];
      for (const [type, list] of Object.entries(results)) {
        const pushed = new Map(outbox.body.changes[type]?.map((r) => [r.id, r]));
        for (const res of list) {
          const sent = pushed.get(res.id);
          if (!sent) continue;
          const local = await this.storage.get(type, res.id);
          const later = local !== undefined && local.rev !== outbox.revs[type]?.[res.id];
          const report = this.report(type, res, sent);
          reports.push(report);
          if (report.status === "rejected") rejected.push(report);
          const next = this.afterPush(local, type, res, sent, later);
          if (next === null) {
            if (local) {
              batch.delete.push({ type, id: res.id });
              changes.push({ type, id: res.id, record: null });
            }
          } else {
            batch.put.push(next);
            if (!sameJson([next.data, next.deleted], [local?.data, local?.deleted])) {
              changes.push({ type, id: res.id, record: next });
            }
          }
        }
      }
      if (reports.some((r) => r.status === "rejected")) batch.meta.rejected = rejected.slice(-MAX_REJECTED);
      await this.storage.write(batch);
    });
    for (const r of reports) this.emit("result", r);
    for (const c of changes) this.emit("change", c);
  }

  private report(type: string, res: WireResult, local: PushRecord): RecordResult {
    const { id } = res;
    switch (res.status) {
      case "applied":
      case "unchanged":
        return { type, id, status: res.status, serverVersion: res.serverVersion! };
      case "merged":
        return { type, id, status: "merged", serverVersion: res.serverVersion!, record: res.record! };
      case "conflict":
        return {
          type,
          id,
          status: "conflict",
          conflictId: res.conflictId!,
          reason: res.reason ?? "",
          record: res.record,
          serverVersion: res.serverVersion,
          local,
        };
      default:
        return { type, id, status: "rejected", reason: res.reason ?? "rejected", local };
    }
  }

  /** The local record after the server's answer for it (null: remove it). `later`: the app edited it after the push. */
  private afterPush(
    local: LocalRecord | undefined,
    type: string,
    res: WireResult,
    sent: PushRecord,
    later: boolean,
  ): LocalRecord | null {
    const rev = local?.rev ?? 0;
    const localData = local?.data ?? null;
    const localDeleted = local?.deleted ?? false;
    // The server's record after the push, when the answer tells it.
    let server: ServerRecord | null;
    if (res.status === "applied" || res.status === "unchanged") {
      server = { id: res.id, version: res.serverVersion!, deleted: sent.deleted, data: sent.data ?? null };
    } else if (res.status === "merged" || res.status === "conflict") {
      server = res.record ?? null;
    } else {
      server = local?.base ?? null; // rejected: the server kept what it had
    }
    if (later) {
      // Keep the newer edit, carried onto the server's record.
      const data = localDeleted || !server ? localData : rebase(server.data, sent.data, localData);
      return { type, id: res.id, data, deleted: localDeleted, base: server, rev, dirty: true };
    }
    if (!server) return null; // the server has no such record (rejected new record, or conflict without one)
    return { type, id: res.id, data: server.data, deleted: server.deleted, base: server, rev, dirty: false };
  }

  // ---- pull ----

  /**
   * Pulls pages until `hasMore` is false; on 410 discards sync state and pulls from the beginning.
   * The next page is requested as soon as a page has arrived, while that page is written to storage
   * (the request only needs the page's cursor), so a first sync waits for the network or for
   * storage, not for both in turn.
   */
  private async pullAll() {
    let resets = 0;
    let next: Promise<PullPage> | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      let body: PullPage;
      try {
        body = await (next ?? this.pullPage(await this.storage.getMeta<string>("cursor")));
      } catch (e) {
        next = undefined;
        if (!(e instanceof ProblemError && e.status === 410) || resets++ > 0) throw e;
        await this.beginResync(e.problem.detail);
        continue;
      }
      const done = !body.hasMore;
      next = done ? undefined : this.pullPage(body.cursor);
      // If storing this page fails, the page asked for ahead is dropped, and so is its error.
      next?.catch(() => {});
      const finishing = done && (await this.storage.getMeta<boolean>("resyncing")) === true;
      await this.applyPage(body.changes, body.cursor, finishing);
      if (done) return;
    }
    throw new Error(`pull did not finish within ${MAX_PAGES} pages`);
  }

  /** One page of changes after `cursor` (from the beginning without one). */
  private pullPage(cursor: string | undefined): Promise<PullPage> {
    const query = new URLSearchParams({ limit: String(this.opts.pullLimit) });
    if (cursor) query.set("since", cursor);
    return this.requestRetrying("GET", `/api/sync/pull?${query}`);
  }

  /** After a 410: forget the cursor and mark every clean record stale until the full pull confirms it. */
  private async beginResync(reason: string) {
    await this.locked(async () => {
      const stale = (await this.storage.list()).filter((r) => !r.dirty).map((r) => ({ ...r, stale: true }));
      await this.storage.write({ put: stale, meta: { cursor: undefined, resyncing: true } });
    });
    this.emit("resync", { reason });
  }

  private async applyPage(changes: Record<string, ServerRecord[]>, cursor: string, finishResync: boolean) {
    const emitted: { type: string; id: string; record: LocalRecord | null }[] = [];
    await this.locked(async () => {
      const batch: Required<WriteBatch> = { put: [], delete: [], meta: { cursor } };
      const seen = new Set<string>();
      for (const [type, records] of Object.entries(changes)) {
        for (const rec of records) {
          seen.add(`${type}\u0000${rec.id}`);
          const local = await this.storage.get(type, rec.id);
          if (local?.dirty) {
            // A pending edit stays; the server merges it against its base when it is pushed.
            if (local.stale) batch.put.push({ ...local, stale: false });
            continue;
          }
          const next: LocalRecord = {
            type,
            id: rec.id,
            data: rec.data ?? null,
            deleted: rec.deleted,
            base: rec,
            rev: local?.rev ?? 0,
            dirty: false,
          };
          batch.put.push(next);
          if (!local || !sameJson([local.data, local.deleted], [next.data, next.deleted])) {
            emitted.push({ type, id: rec.id, record: next });
          }
        }
      }
      if (finishResync) {
        for (const r of await this.storage.list()) {
          if (r.stale && !r.dirty && !seen.has(`${r.type}\u0000${r.id}`)) {
            batch.delete.push({ type: r.type, id: r.id });
            emitted.push({ type: r.type, id: r.id, record: null });
          }
        }
        batch.meta.resyncing = undefined;
      }
      await this.storage.write(batch);
    });
    for (const c of emitted) this.emit("change", c);
  }

  // ---- live updates ----

  /** Keeps a live connection while started: SSE (reconnecting), or long polls when SSE keeps failing or is not wanted. */
  private async liveLoop() {
    let mode = this.opts.live;
    let failures = 0;
    const signal = this.stopper.signal;
    while (!signal.aborted) {
      let delay: number | undefined;
      try {
        if (mode === "poll") await this.pollOnce();
        else await this.streamOnce();
        failures = 0;
      } catch (e) {
        if (signal.aborted) break;
        failures++;
        if (e instanceof ProblemError && !e.temporary && e.status !== 404) this.emit("error", e);
        if (e instanceof ProblemError) delay = e.retryAfterMs;
        if (mode === "auto" && failures >= 3) mode = "poll";
      }
      await sleep(delay ?? backoffMs(failures, this.retry.baseMs * 4, this.retry.maxMs), signal);
    }
  }

  /** One event stream, until it ends or goes silent; each `change` or `resync` starts a round. */
  private async streamOnce() {
    const ctl = new AbortController();
    const stop = () => ctl.abort();
    this.stopper.signal.addEventListener("abort", stop, { once: true });
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(stop, this.opts.heartbeatTimeoutMs);
    };
    let open = false;
    let received = false;
    try {
      arm();
      let res: Response;
      try {
        res = await this.fetchFn(`${this.opts.url}/api/sync/events`, {
          headers: { authorization: `Bearer ${await this.token()}`, accept: "text/event-stream" },
          signal: ctl.signal,
        });
      } catch (e) {
        throw new NetworkError(e);
      }
      if (!res.ok) throw await problemOf(res);
      if (!res.body) throw new Error("event stream: no response body");
      open = true;
      this.emit("live", true);
      void this.requestRound(); // catch up with what happened while disconnected
      const reader = res.body.getReader();
      const parser = new SseParser();
      for (;;) {
        const { done, value } = await reader.read().catch((e) => {
          if (ctl.signal.aborted) return { done: true as const, value: undefined };
          throw new NetworkError(e);
        });
        if (done) break;
        received = true;
        arm();
        for (const ev of parser.push(value)) {
          if (ev.event === "change") void this.requestRound();
          else if (ev.event === "resync") {
            this.emit("resync", { reason: "the event stream fell behind" });
            void this.requestRound();
          }
        }
      }
      // Not even a heartbeat: e.g. a proxy that buffers the stream. Counts as a failure (towards long polls).
      if (!received && !this.stopper.signal.aborted) throw new Error("the event stream ended without data");
    } finally {
      clearTimeout(watchdog);
      this.stopper.signal.removeEventListener("abort", stop);
      if (open) this.emit("live", false);
    }
  }

  /** One long poll from the current cursor; when it returns changes, a round pulls them. */
  private async pollOnce() {
    const cursor = await this.storage.getMeta<string>("cursor");
    const query = new URLSearchParams({ limit: "1", wait: String(this.opts.pollWaitSecs) });
    if (cursor) query.set("since", cursor);
    const timeout = (this.opts.pollWaitSecs + 30) * 1000;
    const body = await this.request("GET", `/api/sync/pull?${query}`, undefined, timeout).catch((e) => {
      if (e instanceof ProblemError && e.status === 410) return { changes: { gone: [1] } };
      throw e;
    });
    if (Object.values(body.changes as Record<string, unknown[]>).some((l) => l.length > 0)) await this.requestRound();
  }

  // ---- conflicts and dead letters ----

  /** One page of the server's conflicts (default: open ones). Pass `cursor` of a page as `after` for the next. */
  async listConflicts(
    query: { status?: "open" | "resolved" | "superseded" | "all"; entity?: string; limit?: number; after?: string } = {},
  ): Promise<{ conflicts: Conflict[]; cursor: string | null; hasMore: boolean }> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
    return this.requestRetrying("GET", `/api/sync/conflicts?${q}`);
  }

  /** Every open conflict (pages through the list). */
  async openConflicts(entity?: string): Promise<Conflict[]> {
    const out: Conflict[] = [];
    let after: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const res = await this.listConflicts({ status: "open", entity, limit: 1000, after });
      out.push(...res.conflicts);
      if (!res.hasMore || !res.cursor) return out;
      after = res.cursor;
    }
    return out;
  }

  /**
   * Resolves a conflict on the server (as a new version) and takes the result into the replica,
   * unless the app edited that record meanwhile (then the next push carries the edit).
   */
  async resolveConflict(conflict: Pick<Conflict, "id" | "entity">, resolution: Resolution): Promise<ServerRecord> {
    const res: { record: ServerRecord } = await this.requestRetrying(
      "POST",
      `/api/sync/conflicts/${encodeURIComponent(conflict.id)}/resolve`,
      resolution,
    );
    const type = conflict.entity;
    const rec = res.record;
    let changed: LocalRecord | null = null;
    await this.locked(async () => {
      const local = await this.storage.get(type, rec.id);
      if (local?.dirty || (local?.base && local.base.version >= rec.version)) return;
      changed = { type, id: rec.id, data: rec.data, deleted: rec.deleted, base: rec, rev: local?.rev ?? 0, dirty: false };
      await this.storage.write({ put: [changed] });
    });
    if (changed) this.emit("change", { type, id: rec.id, record: changed });
    return rec;
  }

  /** Records the server rejected (kept until `clearRejected`), oldest first. */
  async rejected(): Promise<RecordResult[]> {
    return (await this.storage.getMeta<RecordResult[]>("rejected")) ?? [];
  }

  async clearRejected(): Promise<void> {
    await this.locked(() => this.storage.write({ meta: { rejected: undefined } }));
  }

  /** Edits not yet accepted by the server (including an unanswered push). */
  async pendingCount(): Promise<number> {
    return (await this.storage.dirty(1_000_000)).length;
  }
}
