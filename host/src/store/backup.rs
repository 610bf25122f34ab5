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
//!
//! Blobs kept in a local folder travel with the database: a backup copies
//! the objects its snapshot names into `<backup>.blobs/`, and a restore copies
//! them back. Objects are written once and never change, so a copy taken
//! after the snapshot holds every object the snapshot names (unless the
//! server collected it meanwhile: then it is reported missing).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// What a backup or restore did.
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Blob objects copied (into `<backup>.blobs/`, or back into the blob folder).
    pub blobs: usize,
    /// Blob objects the snapshot names that were not in the blob folder.
    pub missing_blobs: usize,
}

/// The folder a backup's blob objects go in: `<backup>.blobs`.
pub fn blobs_beside(backup: &Path) -> PathBuf {
    PathBuf::from(format!("{}.blobs", backup.display()))
}

/// Copies object `key` from folder `from` to folder `to` unless it is there already.
fn copy_object(from: &Path, to: &Path, key: &str) -> Result<bool, StoreError> {
    let (src, dst) = (from.join(key), to.join(key));
    if !src.is_file() {
        return Ok(false);
    }
    if dst.is_file() {
        return Ok(true);
    }
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    std::fs::copy(&src, &dst).map_err(|e| io(&dst, e))?;
    Ok(true)
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

/// Copies the live database at `db` into the new file `dest`, and checks the
/// copy; then copies the blob objects it names from the folder `blobs` (if
/// blobs are kept in one) into `<dest>.blobs/`.
pub fn backup(db: &Path, dest: &Path, busy_timeout_ms: u64, blobs: Option<&Path>) -> Result<BackupReport, StoreError> {
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
    let (mut copied, mut missing) = (0, 0);
    if let Some(folder) = blobs {
        let keys: Vec<String> = {
            let conn = Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let mut stmt = conn.prepare("SELECT object_key FROM blobs ORDER BY object_key")?;
            stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?
        };
        let beside = blobs_beside(dest);
        for key in &keys {
            if copy_object(folder, &beside, key)? {
                copied += 1;
            } else {
                missing += 1;
            }
        }
    }
    Ok(BackupReport { path: dest.to_path_buf(), bytes, blobs: copied, missing_blobs: missing })
}

/// Puts the backup `from` in place of the database at `db` (server stopped).
/// The caller then opens the store and gives it a new epoch.
/// Blob objects in `<from>.blobs/` are copied into the folder `blobs`.
pub fn restore(from: &Path, db: &Path, blobs: Option<&Path>) -> Result<BackupReport, StoreError> {
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
    let beside = blobs_beside(from);
    let mut copied = 0;
    if let Some(folder) = blobs.filter(|_| beside.is_dir()) {
        for key in object_keys(&beside, &beside)? {
            copied += usize::from(copy_object(&beside, folder, &key)?);
        }
    }
    Ok(BackupReport { path: db.to_path_buf(), bytes, blobs: copied, missing_blobs: 0 })
}

/// The object keys of every file under `dir`, relative to `root`.
fn object_keys(root: &Path, dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.is_dir() {
            out.extend(object_keys(root, &path)?);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(out)
}
