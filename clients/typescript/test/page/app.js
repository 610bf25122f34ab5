// The test app: opens the built client on IndexedDB against ?server=…&token=…, and exposes it as window.app.
import { AccordClient, IndexedDbStorage } from "/dist/index.js";

const params = new URLSearchParams(location.search);
const storage = await IndexedDbStorage.open("accord-test-app");
const client = new AccordClient({
  url: params.get("server"),
  token: params.get("token"),
  storage,
  live: "sse",
  retry: { baseMs: 50, maxMs: 500 },
});
const results = [];
const errors = [];
client.on("result", (r) => results.push(r));
client.on("error", (e) => errors.push(String(e)));
let liveOpens = 0;
client.on("live", (up) => up && liveOpens++);
client.start();

window.app = {
  client,
  results,
  errors,
  put: (type, id, data) => client.put(type, id, data),
  delete: (type, id) => client.delete(type, id),
  pending: () => client.pendingCount(),
  /** How often the event stream opened. */
  liveOpens: () => liveOpens,
  /** Every live record, "type/id" → data, sorted. */
  async state() {
    const out = {};
    for (const r of await storage.list()) if (!r.deleted) out[`${r.type}/${r.id}`] = r.data;
    return Object.fromEntries(Object.entries(out).sort());
  },
  async resolve(conflictId, resolution) {
    const open = await client.openConflicts();
    const conflict = open.find((c) => c.id === conflictId);
    return client.resolveConflict(conflict, resolution);
  },
  openConflicts: () => client.openConflicts(),
};
