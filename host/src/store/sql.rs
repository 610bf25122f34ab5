//! One way to run a statement on either backend: SQL written once with `?N`
//! placeholders (rewritten to `$N` for PostgreSQL), typed parameters both
//! drivers bind, and a row reader both drivers implement. The query modules
//! (records, conflicts, keys, pushlog) are written against this alone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql as PgToSql, Type};
use rusqlite::types::ToSqlOutput;

use super::StoreError;

/// A statement parameter.
#[derive(Clone, Copy, Debug)]
pub enum P<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Bytes(&'a [u8]),
    OptBytes(Option<&'a [u8]>),
}

impl rusqlite::ToSql for P<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            P::Int(v) => rusqlite::ToSql::to_sql(v),
            P::OptInt(v) => rusqlite::ToSql::to_sql(v),
            P::Text(v) => rusqlite::ToSql::to_sql(v),
            P::OptText(v) => rusqlite::ToSql::to_sql(v),
            P::Bytes(v) => rusqlite::ToSql::to_sql(v),
            P::OptBytes(v) => rusqlite::ToSql::to_sql(v),
        }
    }
}

impl PgToSql for P<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            P::Int(v) => PgToSql::to_sql(v, ty, out),
            P::OptInt(v) => PgToSql::to_sql(v, ty, out),
            P::Text(v) => PgToSql::to_sql(v, ty, out),
            P::OptText(v) => PgToSql::to_sql(v, ty, out),
            P::Bytes(v) => PgToSql::to_sql(v, ty, out),
            P::OptBytes(v) => PgToSql::to_sql(v, ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per variant in `to_sql_checked`.
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            P::Int(v) => PgToSql::to_sql_checked(v, ty, out),
            P::OptInt(v) => PgToSql::to_sql_checked(v, ty, out),
            P::Text(v) => PgToSql::to_sql_checked(v, ty, out),
            P::OptText(v) => PgToSql::to_sql_checked(v, ty, out),
            P::Bytes(v) => PgToSql::to_sql_checked(v, ty, out),
            P::OptBytes(v) => PgToSql::to_sql_checked(v, ty, out),
        }
    }
}

/// Reads columns of one result row, by position.
pub trait Row {
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    /// A text column borrowed from the row (no copy).
    fn str(&self, i: usize) -> Result<&str, StoreError>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError>;
    fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Both drivers read a column the same way, only the method's name differs
/// (and how a borrowed text is had: `$str`).
macro_rules! row_getters {
    ($ty:ty, $get:ident, $str:ident) => {
        impl Row for $ty {
            fn str(&self, i: usize) -> Result<&str, StoreError> {
                $str(self, i)
            }
            fn int(&self, i: usize) -> Result<i64, StoreError> {
                Ok(self.$get(i)?)
            }
            fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
                Ok(self.$get(i)?)
            }
            fn text(&self, i: usize) -> Result<String, StoreError> {
                Ok(self.$get(i)?)
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
                Ok(self.$get(i)?)
            }
            fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
                Ok(self.$get(i)?)
            }
            fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
                Ok(self.$get(i)?)
            }
        }
    };
}

fn lite_str<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r str, StoreError> {
    row.get_ref(i)?.as_str().map_err(|e| StoreError::from(rusqlite::Error::from(e)))
}

fn pg_str(row: &postgres::Row, i: usize) -> Result<&str, StoreError> {
    Ok(row.try_get(i)?)
}

row_getters!(rusqlite::Row<'_>, get, lite_str);
row_getters!(postgres::Row, try_get, pg_str);

/// A PostgreSQL connection with its prepared statements.
pub struct PgConn {
    pub client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

impl PgConn {
    pub fn new(client: postgres::Client) -> PgConn {
        PgConn { client, statements: HashMap::new() }
    }

    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(&pg_dialect(sql))?;
        if self.statements.len() >= 256 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }
}

/// `?N` placeholders become `$N`.
fn pg_dialect(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// The driver connection underneath.
pub enum Db<'c> {
    Lite(&'c rusqlite::Connection),
    Pg(RefCell<&'c mut PgConn>),
}

/// A record waiting to be inserted: (user, row).
type Insert = (String, super::RecordRow);

/// Multi-row insert sizes: a batch is cut greedily into these.
const INSERT_BATCHES: [usize; 4] = [256, 64, 8, 1];

/// The connection a transaction runs on. Inserts of new records are held
/// back and written many rows per statement, before any other statement
/// runs and when the job ends (`flush`), so what a job reads always
/// includes what it wrote.
pub struct Conn<'c> {
    db: Db<'c>,
    inserts: RefCell<Vec<Insert>>,
}

impl<'c> Conn<'c> {
    pub fn lite(conn: &'c rusqlite::Connection) -> Conn<'c> {
        Conn { db: Db::Lite(conn), inserts: RefCell::new(Vec::new()) }
    }

    pub fn pg(conn: &'c mut PgConn) -> Conn<'c> {
        Conn { db: Db::Pg(RefCell::new(conn)), inserts: RefCell::new(Vec::new()) }
    }
}

impl Conn<'_> {
    /// Queues a new record for insertion (see `flush`).
    pub fn insert_record(&self, user: &str, row: &super::RecordRow) {
        self.inserts.borrow_mut().push((user.to_string(), row.clone()));
    }

    /// Writes the queued inserts, many rows per statement.
    pub fn flush(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *self.inserts.borrow_mut());
        let mut rest = pending.as_slice();
        while !rest.is_empty() {
            let size = INSERT_BATCHES.iter().copied().find(|s| *s <= rest.len()).unwrap_or(1);
            let (batch, tail) = rest.split_at(size);
            let values: Vec<String> = (0..size)
                .map(|i| {
                    let b = i * 8;
                    format!(
                        "(?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7,
                        b + 8
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO records (user_id, entity, id, version, deleted, data, updated_at, seq) VALUES {}",
                values.join(", ")
            );
            let mut params = Vec::with_capacity(size * 8);
            for (user, r) in batch {
                params.extend(super::records::record_params(user, r));
            }
            self.run(&sql, &params)?;
            rest = tail;
        }
        Ok(())
    }

    /// Runs a statement; returns the number of rows it changed.
    pub fn exec(&self, sql: &str, params: &[P<'_>]) -> Result<usize, StoreError> {
        self.flush()?;
        self.run(sql, params)
    }

    fn run(&self, sql: &str, params: &[P<'_>]) -> Result<usize, StoreError> {
        match &self.db {
            Db::Lite(c) => Ok(c.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params))?),
            Db::Pg(c) => {
                let mut c = c.borrow_mut();
                let stmt = c.prepare(sql)?;
                let refs: Vec<&(dyn PgToSql + Sync)> = params.iter().map(|p| p as &(dyn PgToSql + Sync)).collect();
                Ok(usize::try_from(c.client.execute(&stmt, &refs)?).unwrap_or(usize::MAX))
            }
        }
    }

    /// Calls `f` for each row until it returns `false` or the rows end.
    pub fn each(
        &self,
        sql: &str,
        params: &[P<'_>],
        mut f: impl FnMut(&dyn Row) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.flush()?;
        match &self.db {
            Db::Lite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                while let Some(row) = rows.next()? {
                    if !f(row)? {
                        break;
                    }
                }
                Ok(())
            }
            Db::Pg(c) => {
                let mut c = c.borrow_mut();
                let stmt = c.prepare(sql)?;
                let refs: Vec<&(dyn PgToSql + Sync)> = params.iter().map(|p| p as &(dyn PgToSql + Sync)).collect();
                // Every statement that can return many rows has a LIMIT, so reading all is bounded.
                for row in c.client.query(&stmt, &refs)? {
                    if !f(&row)? {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// One page: at most `limit` rows and, past the first, about `max_bytes`
    /// (as `size` counts a row). The statement must fetch one row more than
    /// `limit` (`LIMIT limit + 1`) so the page knows whether more follow.
    pub fn page<T>(
        &self,
        sql: &str,
        params: &[P<'_>],
        (limit, max_bytes): (usize, usize),
        read: impl Fn(&dyn Row) -> Result<T, StoreError>,
        size: impl Fn(&T) -> usize,
    ) -> Result<(Vec<T>, bool), StoreError> {
        let (mut out, mut bytes, mut more) = (Vec::new(), 0usize, false);
        self.each(sql, params, |row| {
            if out.len() >= limit || (!out.is_empty() && bytes >= max_bytes) {
                more = true;
                return Ok(false);
            }
            let item = read(row)?;
            bytes += size(&item);
            out.push(item);
            Ok(true)
        })?;
        Ok((out, more))
    }

    /// Every row, each read by `f`.
    pub fn all<T>(
        &self,
        sql: &str,
        params: &[P<'_>],
        mut f: impl FnMut(&dyn Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        self.each(sql, params, |row| {
            out.push(f(row)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The first row, if any, read by `f`.
    pub fn first<T>(
        &self,
        sql: &str,
        params: &[P<'_>],
        f: impl FnOnce(&dyn Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut f = Some(f);
        let mut out = None;
        self.each(sql, params, |row| {
            if let Some(f) = f.take() {
                out = Some(f(row)?);
            }
            Ok(false)
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            super::pg_dialect("SELECT a FROM t WHERE x = ?1 AND y = ?12 AND z = '?'"),
            "SELECT a FROM t WHERE x = $1 AND y = $12 AND z = '?'"
        );
    }
}
