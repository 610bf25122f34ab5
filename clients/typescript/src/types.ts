// The shapes the Accord HTTP API exchanges (docs/api.md), and the results the client reports to the app.

/** A JSON object: a record's `data`. */
export type Data = { [field: string]: unknown };

/** A record as the server stores it and pull returns it. */
export interface ServerRecord {
  id: string;
  version: number;
  deleted: boolean;
  data: Data | null;
  updatedAt?: number;
}

/** A record as this replica holds it. */
export interface LocalRecord {
  type: string;
  id: string;
  /** What the app sees: the local state, edited or not. */
  data: Data | null;
  deleted: boolean;
  /** The last server state this replica knows (the base of a local edit); null when the server never had it. */
  base: ServerRecord | null;
  /** Counts local edits; a push answer only marks the record clean when no edit came after the pushed one. */
  rev: number;
  /** True while a local edit has not been accepted by the server. */
  dirty: boolean;
  /** Set by a resync after `410`: cleared when the full pull returns the record, else the clean record is removed. */
  stale?: boolean;
}

/** One record of a push body. */
export interface PushRecord {
  id: string;
  version: number;
  baseVersion: number;
  deleted: boolean;
  data?: Data;
}

/** A push waiting for its answer: stored before it is sent, resent as-is (same pushId) until answered. */
export interface Outbox {
  pushId: string;
  body: { clientId: string; pushId: string; changes: Record<string, PushRecord[]> };
  /** `rev` of each record when it was put in the batch, by type then id. */
  revs: Record<string, Record<string, number>>;
  createdAt: number;
}

/** The server's answer for one record of a push. */
export interface WireResult {
  id: string;
  status: "applied" | "unchanged" | "merged" | "conflict" | "rejected";
  serverVersion?: number;
  record?: ServerRecord;
  conflictId?: string;
  reason?: string;
}

/** What happened to one pushed record, as reported to the app (`client.on("result", …)`). */
export type RecordResult =
  | { type: string; id: string; status: "applied" | "unchanged"; serverVersion: number }
  | { type: string; id: string; status: "merged"; serverVersion: number; record: ServerRecord }
  | {
      type: string;
      id: string;
      status: "conflict";
      conflictId: string;
      reason: string;
      /** The server's record, kept by the server (absent when the server has none). */
      record?: ServerRecord;
      serverVersion?: number;
      /** What this replica pushed; it is kept in the server's conflicts table. */
      local: PushRecord;
    }
  | {
      type: string;
      id: string;
      status: "rejected";
      reason: string;
      /** What this replica pushed; the server stored nothing. The local record is reverted to the server's state. */
      local: PushRecord;
    };

/** An open (or resolved) conflict as listed by the server. */
export interface Conflict {
  id: string;
  entity: string;
  recordId: string;
  incoming: PushRecord;
  server: ServerRecord | null;
  reason: string;
  status: "open" | "resolved" | "superseded";
  createdAt: number;
  resolvedAt: number | null;
  /** The policy that decided (its name and component SHA-256); null for conflicts recorded before schema 7. */
  decidedBy: { policy: string; sha256: string } | null;
}

/** How to resolve a conflict. */
export type Resolution = { take: "server" } | { take: "incoming" } | { record: { data: Data; deleted?: boolean } };

/** An RFC 9457 problem document from the server. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  requestId?: string;
}
