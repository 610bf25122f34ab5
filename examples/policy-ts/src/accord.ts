// Typed helpers for an Accord merge policy in TypeScript: the WIT world
// `accord:merge/policy@0.2.0` (wit/merge.wit) as jco's QuickJS backend
// (componentize-qjs) hands it to JavaScript, plus small parsers.
//
// Mapping: records are objects with camelCase keys, `option<T>` is `T | null`,
// `s64` is a `number` (exact up to 2^53), a `variant` is `{ tag, val }`.

/** One stored version of a record. `data` is a JSON object as text. */
export interface StoredRecord {
  id: string;
  version: number;
  deleted: boolean;
  data: string;
}

/** The change a client pushed. */
export interface IncomingRecord {
  id: string;
  version: number;
  /** The server version the change was made on; 0 means "new to me". */
  baseVersion: number;
  deleted: boolean;
  data: string;
}

/** What the policy is asked to decide on. */
export interface MergeInput {
  entityType: string;
  userId: string;
  /** The server's current record, if it exists (tombstones included). */
  server: StoredRecord | null;
  /** The version the client started from, if history still holds it. */
  base: StoredRecord | null;
  incoming: IncomingRecord;
  /** `policy_settings` of this entity type in config.toml, as JSON object text. */
  settings: string;
  /** Why the host calls: only a `live` decision is written and answered. */
  mode: "live" | "replay" | "shadow";
}

/** A record the policy computed; the host chooses its version. */
export interface MergedRecord {
  deleted: boolean;
  data: string;
}

/** The policy's answer. */
export type Decision =
  | { tag: "accept" }
  | { tag: "merged"; val: MergedRecord }
  | { tag: "conflict"; val: string }
  | { tag: "reject"; val: string }
  | { tag: "fail"; val: string };

/** A JSON object (a record's `data`, the settings). */
export type JsonObject = { [key: string]: unknown };

/** Store the incoming record as sent. */
export const accept = (): Decision => ({ tag: "accept" });

/** Store this record instead (`data` as JSON text or as an object to serialise). */
export const merged = (data: string | JsonObject, deleted = false): Decision => ({
  tag: "merged",
  val: { deleted, data: typeof data === "string" ? data : JSON.stringify(data) },
});

/** Keep the server's record; the incoming one goes to the conflicts table. */
export const conflict = (reason: string): Decision => ({ tag: "conflict", val: reason });

/** The incoming record is invalid in itself: store nothing. */
export const reject = (reason: string): Decision => ({ tag: "reject", val: reason });

/** The server's side failed (bad settings, say): keep the record as a conflict. */
export const policyFailed = (why: unknown): Decision => ({
  tag: "fail",
  val: why instanceof Error ? why.message : String(why),
});

/** Parses a record's `data` (or any JSON object text); `undefined` if it is not a JSON object. */
export function object(data: string): JsonObject | undefined {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return undefined;
  }
  return isObject(value) ? value : undefined;
}

/**
 * Parses `policy_settings` over `defaults`: a setting left out keeps its
 * default, one `defaults` does not name is ignored (as serde does in the Rust
 * SDK). Throws an `Error` naming the setting when the settings are not a JSON
 * object or give a setting a value of another type than its default's.
 */
export function settings<T extends JsonObject>(input: MergeInput, defaults: T): T {
  const given = object(input.settings);
  if (given === undefined) throw new Error("policy_settings must be a JSON object");
  const out: JsonObject = { ...defaults };
  for (const [key, value] of Object.entries(given)) {
    if (!Object.hasOwn(defaults, key)) continue;
    if (typeof value !== typeof defaults[key]) {
      throw new Error(`setting \`${key}\` must be a ${typeof defaults[key]}`);
    }
    out[key] = value;
  }
  return out as T;
}

/** `obj[field]` when it is an integer (a unix-ms time stamp, a counter), else `undefined`. */
export function integer(obj: JsonObject | undefined, field: string): number | undefined {
  const value = obj?.[field];
  return typeof value === "number" && Number.isInteger(value) ? value : undefined;
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
