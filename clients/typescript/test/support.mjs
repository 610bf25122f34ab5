// Test helpers: a real accord server (ACCORD_BIN) on 127.0.0.1 with a temporary database, keys from its CLI, a fault proxy.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createServer, request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BIN = process.env.ACCORD_BIN;
if (!BIN) throw new Error("set ACCORD_BIN to the accord binary to test against (e.g. target/debug/accord)");

/** The environment for accord: none of the caller's ACCORD_* settings, a shared policy cache. */
function accordEnv() {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ACCORD_")));
  env.ACCORD_POLICIES__CACHE_DIR = join(tmpdir(), "accord-test-policy-cache");
  return env;
}

/** A port free right now on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts `accord serve` with a fresh config and database in a temp folder.
 * `extra` is appended to config.toml (e.g. "[auth]\nfailed_per_minute = 60").
 */
export async function startAccord({ port = 0, corsOrigins = [], extra = "", dir } = {}) {
  dir ??= mkdtempSync(join(tmpdir(), "accord-ts-"));
  const config = join(dir, "config.toml");
  writeFileSync(
    config,
    [
      "[server]",
      `bind = "127.0.0.1:${port}"`,
      `cors_origins = ${JSON.stringify(corsOrigins)}`,
      "shutdown_grace_secs = 2",
      "[database]",
      `path = ${JSON.stringify(join(dir, "accord.db"))}`,
      'synchronous = "normal"',
      "[policies]",
      `dir = ${JSON.stringify(join(dir, "policies"))}`,
      "watch = false",
      "[log]",
      'level = "warn,accord::server=info"',
      extra,
    ].join("\n"),
  );
  const child = spawn(BIN, ["--config", config, "serve"], { env: accordEnv(), stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`accord did not start within 20 s:\n${log}`)), 20_000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const m = log.replace(/\x1b\[[0-9;]*m/g, "").match(/addr=(\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`accord exited with ${code} before listening:\n${log}`));
    });
  });
  const server = {
    url: `http://${addr}`,
    port: Number(addr.split(":").pop()),
    dir,
    config,
    log: () => log,
    /** Runs the CLI against this server's config. */
    cli: (...args) => execFileSync(BIN, ["--config", config, ...args], { env: accordEnv(), encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }),
    /** Creates an API key for `user` with the CLI and returns it. */
    key: (user) => server.cli("keys", "create", "--user", user, "--name", "ts-test").trim(),
    /** Stops the server (SIGTERM, then SIGKILL after 10 s); `keep` leaves the folder for a restart. */
    async stop({ keep = false } = {}) {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      if (!keep) rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

/** The value of a counter on /metrics (summed over its labels). */
export async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.split(" ").pop());
  }
  return sum;
}

/** Every record of a user, straight from the server: Map "type/id" → record. */
export async function serverState(url, key) {
  const out = new Map();
  let since = "";
  for (let page = 0; page < 1000; page++) {
    const res = await fetch(`${url}/api/sync/pull?limit=1000${since && `&since=${since}`}`, {
      headers: { authorization: `Bearer ${key}` },
    });
    if (res.status !== 200) throw new Error(`pull: ${res.status} ${await res.text()}`);
    const body = await res.json();
    for (const [type, records] of Object.entries(body.changes)) for (const r of records) out.set(`${type}/${r.id}`, r);
    since = encodeURIComponent(body.cursor);
    if (!body.hasMore) return out;
  }
  throw new Error("pull did not finish");
}

/**
 * A proxy on 127.0.0.1 in front of `target`. `drop(req, body)` deciding true makes it forward the
 * request, wait for the server's whole answer, and then cut the client's connection instead of answering.
 * `refuse(req)` true answers 502 at once, as a proxy that does not pass the request on.
 * `requests` lists what passed through: {method, path, body, dropped, refused}.
 */
export async function startProxy(target, drop = () => false, refuse = () => false) {
  const requests = [];
  const server = createServer((req, res) => {
    if (refuse(req)) {
      requests.push({ method: req.method, path: req.url, body: "", refused: true });
      res.writeHead(502, { "content-type": "text/plain" }).end("bad gateway");
      return;
    }
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const dropped = drop(req, body);
      requests.push({ method: req.method, path: req.url, body, dropped });
      const up = httpRequest(`${target}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
        if (dropped) {
          answer.resume();
          answer.on("end", () => req.socket.destroy());
          return;
        }
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      });
      up.on("error", () => req.socket.destroy());
      up.end(body);
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

/** Resolves when `check()` is true, polling every 50 ms; rejects after `ms`. */
export async function until(check, ms = 10_000, what = "condition") {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}
