// HTTP plumbing: requests with a timeout, problem documents, back-off that honours Retry-After, and the SSE parser.
import type { Problem } from "./types.js";

/** A refusal from the server: an RFC 9457 problem (or a non-JSON error body). */
export class ProblemError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
    readonly retryAfterMs?: number,
  ) {
    super(`${status} ${problem.title}: ${problem.detail}`);
    this.name = "ProblemError";
  }

  /** 408, 429, 503 and other 5xx: nothing was written, the same request may be retried. */
  get temporary(): boolean {
    return this.status === 408 || this.status === 429 || this.status >= 500 && this.status !== 507;
  }
}

/** The server could not be reached, or the connection broke before an answer. */
export class NetworkError extends Error {
  constructor(readonly cause: unknown) {
    super(`network error: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = "NetworkError";
  }
}

/** Whether a failed request may be retried unchanged. */
export function isTemporary(e: unknown): boolean {
  return e instanceof NetworkError || (e instanceof ProblemError && e.temporary);
}

/** `Retry-After` in milliseconds (seconds or an HTTP date), if present and sane. */
export function retryAfterMs(res: Response): number | undefined {
  const v = res.headers.get("retry-after");
  if (!v) return undefined;
  const secs = Number(v);
  const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(v) - Date.now();
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), 3_600_000) : undefined;
}

/** Reads an error response into a ProblemError. */
export async function problemOf(res: Response): Promise<ProblemError> {
  const text = await res.text().catch(() => "");
  let problem: Problem;
  try {
    problem = JSON.parse(text) as Problem;
    if (typeof problem !== "object" || problem === null) throw new Error("not an object");
  } catch {
    problem = { type: "about:blank", title: res.statusText || "error", status: res.status, detail: text.slice(0, 500) };
  }
  return new ProblemError(res.status, problem, retryAfterMs(res));
}

/** Exponential back-off with full jitter: attempt 0 waits up to `base`, doubling up to `max`. */
export function backoffMs(attempt: number, base: number, max: number): number {
  return Math.random() * Math.min(max, base * 2 ** Math.min(attempt, 30));
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** A signal that aborts when `parent` does or after `ms`; call `clear` when the request is over. */
export function deadline(parent: AbortSignal, ms: number): { signal: AbortSignal; clear: () => void } {
  const ctl = new AbortController();
  const abort = () => ctl.abort(parent.reason);
  if (parent.aborted) abort();
  parent.addEventListener("abort", abort, { once: true });
  const timer = setTimeout(() => ctl.abort(new Error(`no answer within ${ms} ms`)), ms);
  return {
    signal: ctl.signal,
    clear: () => {
      clearTimeout(timer);
      parent.removeEventListener("abort", abort);
    },
  };
}

/** One Server-Sent Event. */
export interface SseEvent {
  event: string;
  data: string;
}

/** Splits an SSE byte stream into events; comments (heartbeats) only count as activity. */
export class SseParser {
  private buffer = "";
  private decoder = new TextDecoder();

  /** Feeds a chunk; returns the events it completed. */
  push(chunk: Uint8Array): SseEvent[] {
    this.buffer += this.decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, "\n");
    const events: SseEvent[] = [];
    let end: number;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length > 0 || event !== "message") events.push({ event, data: data.join("\n") });
    }
    if (this.buffer.length > 1_000_000) throw new Error("event stream: an event over 1 MB");
    return events;
  }
}
