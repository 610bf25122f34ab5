// Example policy: last writer wins by a client-side timestamp — the rule of
// examples/custom-policy (Rust), so the same cases.json passes.
//
// The record whose `data.<field>` (default `editedAt`, unix ms) is greater
// wins; on a tie the incoming record wins. Records without the field are
// rejected, so clients that forget it hear about it.

import { type Decision, type MergeInput, accept, integer, merged, object, policyFailed, reject, settings } from "./accord.js";

export function decide(input: MergeInput): Decision {
  // New records need no parsing at all.
  const server = input.server;
  if (server === null || server === undefined) return accept();
  let field: string;
  try {
    field = settings(input, { field: "editedAt" }).field;
  } catch (e) {
    // A configuration mistake is the server's, not the client's: keep the record as a conflict.
    return policyFailed(e);
  }
  const mine = integer(object(input.incoming.data), field);
  if (mine === undefined) return reject(`data.${field} must be a number (unix ms)`);
  const theirs = integer(object(server.data), field);
  // The server's copy is newer: the client adopts it.
  if (theirs !== undefined && theirs > mine) return merged(server.data, server.deleted);
  return accept();
}
