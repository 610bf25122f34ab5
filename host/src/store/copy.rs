//! `accord migrate-store`: copies a SQLite database into an empty PostgreSQL
//! database at the same schema version, so that clients notice nothing: keys
//! authenticate, cursors continue (the epoch and every user's sequence are
//! kept), conflicts keep their order and `pushId`s replay.
//!
//! The source is migrated first (what `Store::open` does) and then read in one
//! transaction, so the copy is one snapshot of it. The target is migrated, its
//! data tables are locked against writers, checked empty, filled with binary
//! `COPY` (streamed, not held in memory) and committed in one transaction:
//! a failed copy leaves the target as empty as it was.

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{IsNull, ToSql, Type};
use rusqlite::{Connection, OpenFlags};

use super::{StoreError, migrate, pg};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Int,
    Text,
    Bytes,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Ty)],
    order: &'static str,
}

use Ty::{Bytes, Int, Text};

/// Every data table with every column, in copy order (users before their
/// keys). `sync_state` is not copied row by row: the target keeps its row
/// and takes the source's epoch. A test checks this list against the schema.
const TABLES: &[Table] = &[
    Table { name: "users", columns: &[("id", Text), ("created_at", Int)], order: "id" },
    Table {
        name: "api_keys",
        columns: &[
            ("id", Text),
            ("user_id", Text),
            ("name", Text),
            ("prefix", Text),
            ("hash", Bytes),
            ("scopes", Text),
            ("created_at", Int),
            ("last_used_at", Int),
            ("revoked_at", Int),
            ("expires_at", Int),
        ],
        order: "id",
    },
    Table {
        name: "user_state",
        columns: &[
            ("user_id", Text),
            ("last_seq", Int),
            ("records", Int),
            ("bytes", Int),
            ("open_conflicts", Int),
            ("purged_seq", Int),
        ],
        order: "user_id",
    },
    Table {
        name: "records",
        columns: &[
            ("user_id", Text),
            ("entity", Text),
            ("id", Text),
            ("version", Int),
            ("deleted", Int),
            ("data", Text),
            ("updated_at", Int),
            ("seq", Int),
            ("policy", Text),
            ("policy_sha256", Text),
        ],
        order: "user_id, seq",
    },
    Table {
        name: "record_history",
        columns: &[
            ("user_id", Text),
            ("entity", Text),
            ("id", Text),
            ("version", Int),
            ("deleted", Int),
            ("data", Text),
            ("updated_at", Int),
            ("policy", Text),
            ("policy_sha256", Text),
        ],
        order: "user_id, entity, id, version",
    },
    Table {
        name: "conflicts",
        columns: &[
            ("n", Int),
            ("id", Text),
            ("user_id", Text),
            ("entity", Text),
            ("record_id", Text),
            ("incoming", Text),
            ("server_version", Int),
            ("reason", Text),
            ("status", Text),
            ("created_at", Int),
            ("resolved_at", Int),
            ("client_id", Text),
            ("policy", Text),
            ("policy_sha256", Text),
            ("base", Text),
        ],
        order: "n",
    },
    Table {
        name: "push_log",
        columns: &[
            ("user_id", Text),
            ("push_id", Text),
            ("body_hash", Bytes),
            ("response", Text),
            ("packed", Bytes),
            ("splices", Text),
            ("stored_bytes", Int),
            ("created_at", Int),
        ],
        order: "user_id, push_id",
    },
    // Blob rows only: the objects stay where `[blobs]` keeps them (see docs/operations.md).
    Table {
        name: "blobs",
        columns: &[
            ("user_id", Text),
            ("sha256", Text),
            ("size", Int),
            ("object_key", Text),
            ("created_at", Int),
            ("touched_at", Int),
        ],
        order: "user_id, sha256",
    },
    Table {
        name: "blob_refs",
        columns: &[("user_id", Text), ("sha256", Text), ("entity", Text), ("record_id", Text)],
        order: "user_id, sha256, entity, record_id",
    },
    Table { name: "blob_garbage", columns: &[("object_key", Text), ("since", Int)], order: "object_key" },
];

/// What `sqlite_to_postgres` copied.
#[derive(Debug)]
pub struct Copied {
    /// Rows per table, in copy order.
    pub tables: Vec<(&'static str, u64)>,
    /// The source's epoch, now the target's (cursors stay valid).
    pub epoch: String,
    /// The target URL without its password.
    pub target: String,
}

/// One value on its way from SQLite to PostgreSQL (NULL allowed in any column
/// here; the target's constraints have the last word).
#[derive(Debug)]
enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl ToSql for Cell {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Int(v) => v.to_sql(ty, out),
            Cell::Text(v) => v.to_sql(ty, out),
            Cell::Bytes(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per variant in `to_sql_checked`.
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Int(v) => v.to_sql_checked(ty, out),
            Cell::Text(v) => v.to_sql_checked(ty, out),
            Cell::Bytes(v) => v.to_sql_checked(ty, out),
        }
    }
}

fn refuse(message: String) -> StoreError {
    StoreError::Other(message)
}

/// Copies the SQLite database at `source` into the empty PostgreSQL database
/// at `url` (see the module documentation). Blocking: call it off the async runtime.
pub fn sqlite_to_postgres(source: &Path, url: &str) -> Result<Copied, StoreError> {
    let latest = migrate::latest_version();
    if !source.is_file() {
        return Err(refuse(format!("{}: no such SQLite database", source.display())));
    }
    let mut src = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    src.busy_timeout(Duration::from_secs(5))?;
    migrate::migrate(&mut src)?;
    let version: u32 = src.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != latest {
        return Err(refuse(format!(
            "{} is at schema version {version}, this binary at {latest}; copy with the matching release",
            source.display()
        )));
    }

    let target = pg::describe(url);
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| {
        StoreError::Unavailable(format!("cannot connect to PostgreSQL at {target}: {}", pg::with_causes(&e)))
    })?;
    client.batch_execute("SET client_min_messages TO warning")?;
    migrate::migrate_pg(&mut client)?;
    let pg_version: Option<i64> = client.query_one("SELECT max(version) FROM schema_migrations", &[])?.get(0);
    if pg_version != Some(i64::from(latest)) {
        return Err(refuse(format!(
            "{target} is at schema version {}, this binary at {latest}",
            pg_version.unwrap_or(0)
        )));
    }

    // One snapshot of the source (a deferred transaction reads one snapshot from its first SELECT).
    let snapshot = src.transaction()?;
    let epoch: String = snapshot.query_row("SELECT epoch FROM sync_state WHERE id = 1", [], |r| r.get(0))?;
    let mut tx = client.transaction()?;
    // Writers (a server already started on the target, a second migrate-store) wait until we commit.
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    tx.batch_execute(&format!("LOCK TABLE {}, sync_state IN SHARE ROW EXCLUSIVE MODE", names.join(", ")))?;
    let mut occupied = Vec::new();
    for t in TABLES {
        if tx.query_opt(&format!("SELECT 1 FROM {} LIMIT 1", t.name), &[])?.is_some() {
            occupied.push(t.name);
        }
    }
    if !occupied.is_empty() {
        return Err(refuse(format!(
            "{target} is not empty ({} hold rows): migrate-store copies only into an empty database",
            occupied.join(", ")
        )));
    }

    let mut copied = Vec::new();
    for t in TABLES {
        let columns: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
        let columns = columns.join(", ");
        let types: Vec<Type> = t
            .columns
            .iter()
            .map(|(_, ty)| match ty {
                Int => Type::INT8,
                Text => Type::TEXT,
                Bytes => Type::BYTEA,
            })
            .collect();
        let sink = tx.copy_in(&format!("COPY {} ({columns}) FROM STDIN (FORMAT binary)", t.name))?;
        let mut writer = BinaryCopyInWriter::new(sink, &types);
        let mut stmt = snapshot.prepare(&format!("SELECT {columns} FROM {} ORDER BY {}", t.name, t.order))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let mut cells = Vec::with_capacity(t.columns.len());
            for (i, (_, ty)) in t.columns.iter().enumerate() {
                cells.push(match ty {
                    Int => Cell::Int(row.get(i)?),
                    Text => Cell::Text(row.get(i)?),
                    Bytes => Cell::Bytes(row.get(i)?),
                });
            }
            let values: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            writer.write(&values)?;
        }
        copied.push((t.name, writer.finish()?));
    }
    // Conflicts kept their `n`; new ones continue after the largest.
    tx.query_one(
        "SELECT setval(pg_get_serial_sequence('conflicts', 'n'), coalesce((SELECT max(n) FROM conflicts), 0) + 1, false)",
        &[],
    )?;
    tx.execute("UPDATE sync_state SET epoch = $1 WHERE id = 1", &[&epoch])?;
    tx.commit()?;
    drop(snapshot);
    Ok(Copied { tables: copied, epoch, target })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table and column of the current SQLite schema is copied (or is
    /// bookkeeping: `schema_migrations`, `sync_state`); a migration that adds
    /// one fails here until `TABLES` knows it.
    #[test]
    fn the_copy_knows_every_column_of_the_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate::migrate(&mut conn).unwrap();
        let mut tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables.retain(|t| t != "schema_migrations" && t != "sync_state");
        let mut known: Vec<String> = TABLES.iter().map(|t| t.name.to_string()).collect();
        known.sort();
        assert_eq!(tables, known);
        for t in TABLES {
            let mut columns: Vec<(String, String)> = conn
                .prepare(&format!("SELECT name, type FROM pragma_table_info('{}') ORDER BY name", t.name))
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            columns.sort();
            let mut expected: Vec<(String, String)> = t
                .columns
                .iter()
                .map(|(c, ty)| {
                    let ty = match ty {
                        Int => "INTEGER",
                        Text => "TEXT",
                        Bytes => "BLOB",
                    };
                    (c.to_string(), ty.to_string())
                })
                .collect();
            expected.sort();
            assert_eq!(columns, expected, "table {}", t.name);
        }
        let sync_state: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('sync_state') ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sync_state, ["epoch", "id"], "sync_state holds only the epoch");
    }
}
