//! The two SQL databases a study lives in, behind one small interface: statements with `$N`
//! placeholders and rows of plain values, in or out of a transaction. The study's logic
//! (`super`) is written once over it; what differs between SQLite and PostgreSQL (row locks,
//! how a transaction takes its write lock) is asked of the [`Db`].

use std::path::Path;

/// One value bound to a statement or read from a row. The schema uses three column types
/// (`BIGINT`, `DOUBLE PRECISION`, `TEXT`), which both databases read as these.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A `BIGINT`.
    Int(i64),
    /// A `DOUBLE PRECISION`, or its `NULL`.
    Real(Option<f64>),
    /// A `TEXT`, or its `NULL`.
    Text(Option<String>),
}

impl Value {
    pub(crate) fn text(s: impl Into<String>) -> Value {
        Value::Text(Some(s.into()))
    }

    pub(crate) fn as_int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            Value::Real(Some(r)) => *r as i64,
            _ => 0,
        }
    }

    pub(crate) fn as_real(&self) -> Option<f64> {
        match self {
            Value::Real(r) => *r,
            Value::Int(i) => Some(*i as f64),
            Value::Text(_) => None,
        }
    }

    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(Some(s)) => Some(s),
            _ => None,
        }
    }
}

/// A database error, as text (the study wraps it with the study's address).
pub(crate) type DbError = String;

/// Statements on a connection or inside a transaction.
pub(crate) trait Sql {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    /// Runs a query; its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError>;
}

/// A study database.
pub(crate) trait Db: Send {
    /// Runs `f` in one transaction, committed when it returns `Ok`. SQLite's takes the
    /// database's write lock at once (`BEGIN IMMEDIATE`), so two processes never interleave
    /// their read-then-write; PostgreSQL's relies on row locks (`FOR UPDATE SKIP LOCKED`).
    fn transaction(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), DbError>,
    ) -> Result<(), DbError>;
    /// Statements outside a transaction.
    fn sql(&mut self) -> &mut dyn Sql;
    /// The clause that locks the rows a `SELECT` returns and skips rows others hold.
    fn skip_locked(&self) -> &'static str;
    /// A statement that serialises schema migrations between processes, run first in the
    /// migration transaction (SQLite's write lock already does).
    fn migration_lock(&self) -> Option<&'static str>;
    /// Whether the connection to the server is gone (the server restarted, the network
    /// dropped it), so that [`Db::reconnect`] is worth trying.
    fn is_closed(&self) -> bool {
        false
    }
    /// Connects again.
    fn reconnect(&mut self) -> Result<(), DbError> {
        Ok(())
    }
}

// ---------------------------------------------------------------- SQLite

/// `study.sqlite`: the embedded default, also shared by the workers of one machine.
pub(crate) struct Sqlite {
    conn: rusqlite::Connection,
}

struct SqliteSql<'a>(&'a rusqlite::Connection);

/// SQLite reads `?N` where PostgreSQL reads `$N`.
fn sqlite_text(sql: &str) -> String {
    sql.replace('$', "?")
}

fn sqlite_param(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Int(i) => V::Integer(*i),
        Value::Real(Some(r)) => V::Real(*r),
        Value::Text(Some(s)) => V::Text(s.clone()),
        Value::Real(None) | Value::Text(None) => V::Null,
    }
}

impl Sql for SqliteSql<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let params: Vec<rusqlite::types::Value> = params.iter().map(sqlite_param).collect();
        self.0
            .execute(&sqlite_text(sql), rusqlite::params_from_iter(params))
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        use rusqlite::types::ValueRef;
        let params: Vec<rusqlite::types::Value> = params.iter().map(sqlite_param).collect();
        let mut stmt = self
            .0
            .prepare(&sqlite_text(sql))
            .map_err(|e| e.to_string())?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), |row| {
                (0..n)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Integer(v) => Value::Int(v),
                            ValueRef::Real(v) => Value::Real(Some(v)),
                            ValueRef::Text(t) => {
                                Value::text(String::from_utf8_lossy(t).into_owned())
                            }
                            ValueRef::Blob(_) | ValueRef::Null => Value::Text(None),
                        })
                    })
                    .collect::<Result<Vec<_>, rusqlite::Error>>()
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }
}

impl Sqlite {
    pub(crate) fn open(path: &Path) -> Result<Sqlite, DbError> {
        let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
        // Several processes (workers) may share the file: wait for the write lock instead of
        // failing, and let readers go on while one writes.
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        // Switching to WAL takes the file's exclusive lock and answers "database is locked"
        // at once, without the busy handler, while another process opens it: try again.
        let start = std::time::Instant::now();
        loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())) {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && start.elapsed() < std::time::Duration::from_secs(30) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(Sqlite { conn })
    }
}

impl Db for Sqlite {
    fn transaction(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        f(&mut SqliteSql(&tx))?;
        tx.commit().map_err(|e| e.to_string())
    }

    fn sql(&mut self) -> &mut dyn Sql {
        self
    }

    fn skip_locked(&self) -> &'static str {
        ""
    }

    fn migration_lock(&self) -> Option<&'static str> {
        None
    }
}

impl Sql for Sqlite {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        SqliteSql(&self.conn).execute(sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        SqliteSql(&self.conn).query(sql, params)
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// A PostgreSQL database shared by workers on many machines.
pub(crate) struct Postgres {
    client: postgres::Client,
    url: String,
}

fn pg_params(params: &[Value]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync> {
            match v {
                Value::Int(i) => Box::new(*i),
                Value::Real(r) => Box::new(*r),
                Value::Text(s) => Box::new(s.clone()),
            }
        })
        .collect()
}

fn pg_rows(rows: Vec<postgres::Row>) -> Result<Vec<Vec<Value>>, DbError> {
    use postgres::types::Type;
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let ty = row.columns()[i].type_().clone();
                    let e = |e: postgres::Error| e.to_string();
                    Ok(if ty == Type::INT8 {
                        Value::Int(row.try_get::<_, Option<i64>>(i).map_err(e)?.unwrap_or(0))
                    } else if ty == Type::INT4 {
                        Value::Int(i64::from(
                            row.try_get::<_, Option<i32>>(i).map_err(e)?.unwrap_or(0),
                        ))
                    } else if ty == Type::FLOAT8 {
                        Value::Real(row.try_get(i).map_err(e)?)
                    } else {
                        Value::Text(row.try_get(i).map_err(e)?)
                    })
                })
                .collect()
        })
        .collect()
}

macro_rules! pg_sql {
    ($t:ty) => {
        impl Sql for $t {
            fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
                let owned = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    owned.iter().map(|b| b.as_ref()).collect();
                postgres::GenericClient::execute(self, sql, &refs).map_err(|e| pg_error(&e))
            }

            fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
                let owned = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    owned.iter().map(|b| b.as_ref()).collect();
                pg_rows(postgres::GenericClient::query(self, sql, &refs).map_err(|e| pg_error(&e))?)
            }
        }
    };
}

pg_sql!(postgres::Client);
pg_sql!(postgres::Transaction<'_>);

/// The server's own message where there is one ("relation ... does not exist"), not only
/// "db error".
fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

impl Postgres {
    pub(crate) fn connect(url: &str) -> Result<Postgres, DbError> {
        let mut config: postgres::Config =
            url.parse().map_err(|e: postgres::Error| e.to_string())?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(20));
        }
        config.application_name("autodl");
        let client = config.connect(postgres::NoTls).map_err(|e| pg_error(&e))?;
        Ok(Postgres {
            client,
            url: url.to_owned(),
        })
    }
}

impl Db for Postgres {
    fn transaction(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let mut tx = self.client.transaction().map_err(|e| pg_error(&e))?;
        f(&mut tx)?;
        tx.commit().map_err(|e| pg_error(&e))
    }

    fn sql(&mut self) -> &mut dyn Sql {
        &mut self.client
    }

    fn skip_locked(&self) -> &'static str {
        "FOR UPDATE SKIP LOCKED"
    }

    fn migration_lock(&self) -> Option<&'static str> {
        // Any fixed key: every autodl process migrating this database takes the same one.
        Some("SELECT pg_advisory_xact_lock(2026120620)")
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn reconnect(&mut self) -> Result<(), DbError> {
        *self = Postgres::connect(&self.url)?;
        Ok(())
    }
}
