"""Example policy: last writer wins by a client-side timestamp.

The rule of examples/custom-policy (Rust), so the same cases.json passes:
the record whose ``data.<field>`` (default ``editedAt``, unix ms) is greater
wins; on a tie the incoming record wins. Records without the field are
rejected, so clients that forget it hear about it.
"""

import wit_world

from accord import (
    Decision,
    MergeInput,
    SettingsError,
    accept,
    integer,
    merged,
    obj,
    policy_failed,
    reject,
    settings,
)


def decide(input: MergeInput) -> Decision:
    # New records need no parsing at all.
    server = input.server
    if server is None:
        return accept()
    try:
        field = settings(input, {"field": "editedAt"})["field"]
    except SettingsError as e:
        # A configuration mistake is the server's, not the client's: keep the record as a conflict.
        return policy_failed(e)
    mine = integer(obj(input.incoming.data), field)
    if mine is None:
        return reject(f"data.{field} must be a number (unix ms)")
    theirs = integer(obj(server.data), field)
    # The server's copy is newer: the client adopts it.
    if theirs is not None and theirs > mine:
        return merged(server.data, server.deleted)
    return accept()


class WitWorld(wit_world.WitWorld):
    """The component's export: componentize-py calls this class's ``decide``."""

    def decide(self, input: MergeInput) -> Decision:
        return decide(input)
