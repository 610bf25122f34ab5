//! SQL for users and API keys.

use super::sql::{P, Row};
use super::{ReadTx, StoreError, WriteTx};

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

fn from_row(r: &dyn Row) -> Result<ApiKeyRow, StoreError> {
    let scopes = r.text(4)?;
    Ok(ApiKeyRow {
        id: r.text(0)?,
        user_id: r.text(1)?,
        name: r.text(2)?,
        prefix: r.text(3)?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_at: r.int(5)?,
        last_used_at: r.opt_int(6)?,
        revoked_at: r.opt_int(7)?,
        expires_at: r.opt_int(8)?,
    })
}

impl ReadTx<'_> {
    /// Looks a key up by the SHA-256 of its raw form (through the UNIQUE index).
    pub fn api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE hash = ?1");
        self.conn.first(&sql, &[P::Bytes(&hash[..])], from_row)
    }

    /// True while the key exists, is not revoked and has not expired.
    pub fn api_key_active(&self, key_id: &str) -> Result<bool, StoreError> {
        let row =
            self.conn.first("SELECT revoked_at, expires_at FROM api_keys WHERE id = ?1", &[P::Text(key_id)], |r| {
                Ok((r.opt_int(0)?, r.opt_int(1)?))
            })?;
        let now = super::now_ms();
        Ok(matches!(row, Some((None, expires)) if expires.is_none_or(|t| t > now)))
    }

    /// How many keys the user has: (not revoked, all).
    pub fn api_key_counts(&self, user_id: &str) -> Result<(usize, usize), StoreError> {
        let counts = self.conn.first(
            "SELECT count(*), count(revoked_at) FROM api_keys WHERE user_id = ?1",
            &[P::Text(user_id)],
            |r| Ok((r.int(0)?, r.int(1)?)),
        )?;
        let (all, revoked) = counts.unwrap_or((0, 0));
        let n = |v: i64| usize::try_from(v).unwrap_or(usize::MAX);
        Ok((n(all - revoked), n(all)))
    }

    /// The keys of one user, oldest first, revoked ones included.
    pub fn api_keys_of(&self, user_id: &str) -> Result<Vec<ApiKeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE user_id = ?1 ORDER BY created_at, id");
        self.conn.all(&sql, &[P::Text(user_id)], from_row)
    }

    /// One of a user's keys by id.
    pub fn api_key_of(&self, user_id: &str, key_id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1 AND user_id = ?2");
        self.conn.first(&sql, &[P::Text(key_id), P::Text(user_id)], from_row)
    }
}

impl WriteTx<'_> {
    /// Creates the user row if this is the first time the id is seen.
    pub fn ensure_user(&self, user_id: &str, now: i64) -> Result<(), StoreError> {
        self.conn.exec(
            "INSERT INTO users (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
            &[P::Text(user_id), P::Int(now)],
        )?;
        Ok(())
    }

    pub fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRow, StoreError> {
        self.ensure_user(&key.user_id, key.created_at)?;
        let scopes = key.scopes.join(" ");
        self.conn.exec(
            "INSERT INTO api_keys (id, user_id, name, prefix, hash, scopes, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                P::Text(&key.id),
                P::Text(&key.user_id),
                P::Text(&key.name),
                P::Text(&key.prefix),
                P::Bytes(&key.hash[..]),
                P::Text(&scopes),
                P::Int(key.created_at),
                P::OptInt(key.expires_at),
            ],
        )?;
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

    /// Revokes a key; `user_id = None` (the local CLI) may revoke anyone's.
    /// Revoking a revoked key keeps its first revocation time.
    pub fn revoke_api_key(&self, user_id: Option<&str>, key_id: &str, now: i64) -> Result<ApiKeyRow, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1");
        let row = self.conn.first(&sql, &[P::Text(key_id)], from_row)?;
        let Some(mut row) = row.filter(|r| user_id.is_none_or(|u| u == r.user_id)) else {
            return Err(StoreError::NotFound);
        };
        if row.revoked_at.is_none() {
            self.conn.exec("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1", &[P::Text(key_id), P::Int(now)])?;
            row.revoked_at = Some(now);
        }
        Ok(row)
    }

    /// Records when keys were last used; times only ever move forward.
    pub fn touch_api_keys(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        for (id, at) in uses {
            self.conn.exec(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                &[P::Text(id), P::Int(*at)],
            )?;
        }
        Ok(())
    }
}
