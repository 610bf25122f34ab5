//! SQL for users and API keys.

use rusqlite::{OptionalExtension, Row};

use super::{StoreError, Tx};

/// An API key as stored, minus its hash.
#[derive(Clone, Debug)]
pub struct ApiKeyRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// When the key stops working (unix ms); `None` never.
    pub expires_at: Option<i64>,
}

/// What is needed to insert a key; the raw key itself never reaches the store.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    pub hash: [u8; 32],
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

const COLUMNS: &str = "id, user_id, name, prefix, scopes, created_at, last_used_at, revoked_at, expires_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRow> {
    let scopes: String = r.get(4)?;
    Ok(ApiKeyRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
        revoked_at: r.get(7)?,
        expires_at: r.get(8)?,
    })
}

impl Tx<'_> {
    /// Creates the user row if this is the first time the id is seen.
    pub fn ensure_user(&self, user_id: &str, now: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO users (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")?
            .execute((user_id, now))?;
        Ok(())
    }

    pub fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRow, StoreError> {
        self.ensure_user(&key.user_id, key.created_at)?;
        self.conn
            .prepare_cached(
                "INSERT INTO api_keys (id, user_id, name, prefix, hash, scopes, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute((
                &key.id,
                &key.user_id,
                &key.name,
                &key.prefix,
                &key.hash[..],
                key.scopes.join(" "),
                key.created_at,
                key.expires_at,
            ))?;
        Ok(ApiKeyRow {
            id: key.id.clone(),
            user_id: key.user_id.clone(),
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            scopes: key.scopes.clone(),
            created_at: key.created_at,
            last_used_at: None,
            revoked_at: None,
            expires_at: key.expires_at,
        })
    }

    /// Looks a key up by the SHA-256 of its raw form (through the UNIQUE index).
    pub fn api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE hash = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([&hash[..]], from_row).optional()?)
    }

    /// True while the key exists, is not revoked and has not expired.
    pub fn api_key_active(&self, key_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2) FROM api_keys WHERE id = ?1",
            )?
            .query_row((key_id, super::now_ms()), |r| r.get::<_, bool>(0))
            .optional()?
            .unwrap_or(false))
    }

    /// The keys of one user, oldest first, revoked ones included.
    pub fn api_keys_of(&self, user_id: &str) -> Result<Vec<ApiKeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE user_id = ?1 ORDER BY created_at, id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([user_id], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One of a user's keys by id.
    pub fn api_key_of(&self, user_id: &str, key_id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1 AND user_id = ?2");
        Ok(self.conn.prepare_cached(&sql)?.query_row((key_id, user_id), from_row).optional()?)
    }

    /// Revokes a key; `user_id = None` (the local CLI) may revoke anyone's.
    /// Revoking a revoked key keeps its first revocation time.
    pub fn revoke_api_key(&self, user_id: Option<&str>, key_id: &str, now: i64) -> Result<ApiKeyRow, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1");
        let row = self.conn.prepare_cached(&sql)?.query_row([key_id], from_row).optional()?;
        let Some(mut row) = row.filter(|r| user_id.is_none_or(|u| u == r.user_id)) else {
            return Err(StoreError::NotFound);
        };
        if row.revoked_at.is_none() {
            self.conn.prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1")?.execute((key_id, now))?;
            row.revoked_at = Some(now);
        }
        Ok(row)
    }

    /// Records when keys were last used; times only ever move forward.
    pub fn touch_api_keys(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
        )?;
        for (id, at) in uses {
            stmt.execute((id, at))?;
        }
        Ok(())
    }
}
