// The storage adapter interface the client keeps its replica in, and the in-memory implementation.
import type { LocalRecord } from "./types.js";

/** Changes written together: all of them or none (one transaction). */
export interface WriteBatch {
  put?: LocalRecord[];
  delete?: { type: string; id: string }[];
  /** Metadata to set; `undefined` deletes the key. */
  meta?: Record<string, unknown>;
}

/**
 * Where a client keeps its records, its pull cursor and its outbox (the push
 * awaiting an answer). One client per storage at a time.
 */
export interface StorageAdapter {
  get(type: string, id: string): Promise<LocalRecord | undefined>;
  /** Every record, or every record of one type (tombstones included). */
  list(type?: string): Promise<LocalRecord[]>;
  /** Up to `limit` records with unpushed edits, oldest edit (`rev`) first. */
  dirty(limit: number): Promise<LocalRecord[]>;
  getMeta<T>(key: string): Promise<T | undefined>;
  /** Applies the whole batch atomically. */
  write(batch: WriteBatch): Promise<void>;
  close?(): void;
}

const key = (type: string, id: string) => `${type}\u0000${id}`;

/** Keeps everything in memory (lost on exit); copies values in and out, as a database would. */
export class MemoryStorage implements StorageAdapter {
  private records = new Map<string, LocalRecord>();
  private meta = new Map<string, unknown>();

  async get(type: string, id: string) {
    const r = this.records.get(key(type, id));
    return r && structuredClone(r);
  }

  async list(type?: string) {
    return [...this.records.values()].filter((r) => type === undefined || r.type === type).map((r) => structuredClone(r));
  }

  async dirty(limit: number) {
    const all = [...this.records.values()].filter((r) => r.dirty).sort((a, b) => a.rev - b.rev);
    return all.slice(0, limit).map((r) => structuredClone(r));
  }

  async getMeta<T>(k: string) {
    const v = this.meta.get(k);
    return v === undefined ? undefined : (structuredClone(v) as T);
  }

  async write(batch: WriteBatch) {
    for (const r of batch.put ?? []) this.records.set(key(r.type, r.id), structuredClone(r));
    for (const d of batch.delete ?? []) this.records.delete(key(d.type, d.id));
    for (const [k, v] of Object.entries(batch.meta ?? {})) {
      if (v === undefined) this.meta.delete(k);
      else this.meta.set(k, structuredClone(v));
    }
  }
}
