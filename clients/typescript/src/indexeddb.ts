// A storage adapter on the browser's IndexedDB: records, metadata and the outbox survive reloads and crashes.
import type { LocalRecord } from "./types.js";
import type { StorageAdapter, WriteBatch } from "./storage.js";

const RECORDS = "records";
const META = "meta";

/** A stored record: `_dirty` (the edit's rev) exists only while the record is dirty, so the index lists dirty ones in edit order. */
type Row = LocalRecord & { _dirty?: number };

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

function strip(row: Row | undefined): LocalRecord | undefined {
  if (!row) return undefined;
  const { _dirty, ...record } = row;
  return record;
}

export class IndexedDbStorage implements StorageAdapter {
  private constructor(private db: IDBDatabase) {}

  /** Opens (creating if needed) the database `name` in this origin. */
  static async open(name = "accord-sync", factory: IDBFactory = indexedDB): Promise<IndexedDbStorage> {
    const req = factory.open(name, 1);
    req.onupgradeneeded = () => {
      const db = req.result;
      const records = db.createObjectStore(RECORDS, { keyPath: ["type", "id"] });
      records.createIndex("type", "type");
      records.createIndex("dirty", "_dirty");
      db.createObjectStore(META);
    };
    return new IndexedDbStorage(await request(req));
  }

  async get(type: string, id: string) {
    const tx = this.db.transaction(RECORDS, "readonly");
    return strip(await request<Row | undefined>(tx.objectStore(RECORDS).get([type, id])));
  }

  async list(type?: string) {
    const store = this.db.transaction(RECORDS, "readonly").objectStore(RECORDS);
    const rows: Row[] = await request(type === undefined ? store.getAll() : store.index("type").getAll(type));
    return rows.map((r) => strip(r)!);
  }

  async dirty(limit: number) {
    const index = this.db.transaction(RECORDS, "readonly").objectStore(RECORDS).index("dirty");
    const rows: Row[] = await request(index.getAll(null, limit));
    return rows.map((r) => strip(r)!);
  }

  async getMeta<T>(key: string) {
    const tx = this.db.transaction(META, "readonly");
    return (await request(tx.objectStore(META).get(key))) as T | undefined;
  }

  async write(batch: WriteBatch) {
    const tx = this.db.transaction([RECORDS, META], "readwrite");
    const records = tx.objectStore(RECORDS);
    const meta = tx.objectStore(META);
    for (const r of batch.put ?? []) {
      const row: Row = { ...r };
      if (r.dirty) row._dirty = r.rev;
      records.put(row);
    }
    for (const d of batch.delete ?? []) records.delete([d.type, d.id]);
    for (const [k, v] of Object.entries(batch.meta ?? {})) {
      if (v === undefined) meta.delete(k);
      else meta.put(v, k);
    }
    await done(tx);
  }

  close() {
    this.db.close();
  }
}
