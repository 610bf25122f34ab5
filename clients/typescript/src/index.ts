// Public entry point of @accord-sync/client.
export { AccordClient, type ClientOptions, type ClientEvents } from "./client.js";
export { MemoryStorage, type StorageAdapter, type WriteBatch } from "./storage.js";
export { IndexedDbStorage } from "./indexeddb.js";
export { ProblemError, NetworkError } from "./http.js";
export type * from "./types.js";
