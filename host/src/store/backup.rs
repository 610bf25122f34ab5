//! Online backups of a SQLite database, and restoring one.
//!
//! `backup` runs beside a live server: `VACUUM INTO` copies one read
//! snapshot (WAL lets the server keep writing meanwhile) into a new, compact
//! file, which is then checked with `PRAGMA integrity_check`. `restore` (the
//! server stopped) checks a backup, puts it in place of the database — the
//! old file's `-wal` and `-shm` go too, so nothing of the old database is
//! replayed onto the restored one — and gives it a new epoch, so every client
//! cursor is answered `410` and clients pull again instead of skipping the
//! changes made after the backup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// What a backup or restore did.
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Open { path: path.to_path_buf(), source }
}

/// "ok", or the first problems `PRAGMA integrity_check` names.
fn integrity(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let verdict: Vec<String> =
        conn.prepare("PRAGMA integrity_check")?.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?;
    if verdict == ["ok"] {
        Ok(())
    } else {
        Err(StoreError::Other(format!("{}: integrity check failed: {}", path.display(), verdict.join("; "))))
    }
}

/// Copies the live database at `db` into the new file `dest`, and checks the copy.
pub fn backup(db: &Path, dest: &Path, busy_timeout_ms: u64) -> Result<BackupReport, StoreError> {
    if dest.exists() {
        return Err(StoreError::Other(format!("{} exists already; choose a new file", dest.display())));
    }
    if !db.exists() {
        return Err(StoreError::Other(format!("no database at {}", db.display())));
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_millis(busy_timeout_ms))?;
    let target = dest.to_str().ok_or_else(|| StoreError::Other("the backup path is not UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    drop(conn);
    integrity(dest)?;
    let bytes = std::fs::metadata(dest).map_err(|e| io(dest, e))?.len();
    Ok(BackupReport { path: dest.to_path_buf(), bytes })
}

/// Puts the backup `from` in place of the database at `db` (server stopped).
/// The caller then opens the store and gives it a new epoch.
pub fn restore(from: &Path, db: &Path) -> Result<BackupReport, StoreError> {
    integrity(from)?;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    // Copy next to the database, make it durable, then swap it in at once.
    let staged = db.with_extension("restoring");
    std::fs::copy(from, &staged).map_err(|e| io(&staged, e))?;
    std::fs::File::open(&staged).and_then(|f| f.sync_all()).map_err(|e| io(&staged, e))?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&side, e)),
        }
    }
    std::fs::rename(&staged, db).map_err(|e| io(db, e))?;
    let bytes = std::fs::metadata(db).map_err(|e| io(db, e))?.len();
    Ok(BackupReport { path: db.to_path_buf(), bytes })
}
