//! One way to run SQL on either backend, so each store method is written
//! once: parameters are [`Value`]s, rows are read by column into Rust types,
//! and statements are written with SQLite's `?N` placeholders (turned into
//! PostgreSQL's `$N`). Where the dialects differ, a method asks
//! [`Tx::is_postgres`] and writes each form; that is the exception (the
//! claim's `FOR UPDATE SKIP LOCKED`, `max(a, b)`, the pragmas).

use std::borrow::Cow;
use std::cell::RefCell;

use postgres::types::{IsNull, ToSql, Type};
use rusqlite::types::ValueRef;

use crate::error::{pg_error, sqlite};
use crate::{Error, Location};

/// A parameter or a column's value. A parameter borrows its text or bytes
/// (an epoch's state, a data manifest: megabytes, not copied to be bound);
/// a column's value owns them (`Value<'static>`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Int(v as i64)
    }
}
impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}
impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Text(Cow::Owned(v))
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}
impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Bytes(Cow::Borrowed(v))
    }
}
impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `args![a, b, …]`: a statement's parameters, `?1`, `?2`, … in order.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::sql::Value::from($v)),*] };
}
pub(crate) use args;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput::Borrowed;
        Ok(match self {
            Value::Null => Borrowed(ValueRef::Null),
            Value::Int(i) => Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => Borrowed(ValueRef::Blob(b)),
        })
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => Err(format!("an integer where the statement takes {ty}").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(format!("a real where the statement takes {ty}").into()),
            },
            Value::Text(s) => s.as_ref().to_sql(ty, out),
            Value::Bytes(b) => b.as_ref().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// One row of a query's result.
#[derive(Debug)]
pub(crate) struct Row(Vec<Value<'static>>);

impl Row {
    /// Column `i` as a `T`.
    pub(crate) fn get<T: FromValue>(&self, i: usize) -> Result<T, Error> {
        let value = self.0.get(i).cloned().unwrap_or(Value::Null);
        T::from_value(value).map_err(|found| Error::Value { column: i, found })
    }
}

/// What a column's value converts into.
pub(crate) trait FromValue: Sized {
    /// The value, or what it was when it does not convert.
    fn from_value(v: Value<'static>) -> Result<Self, String>;
}

impl FromValue for i64 {
    fn from_value(v: Value<'static>) -> Result<i64, String> {
        match v {
            Value::Int(i) => Ok(i),
            other => Err(format!("{other:?} for an integer")),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: Value<'static>) -> Result<f64, String> {
        match v {
            Value::Real(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            other => Err(format!("{other:?} for a real")),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: Value<'static>) -> Result<bool, String> {
        match v {
            Value::Int(i) => Ok(i != 0),
            other => Err(format!("{other:?} for a boolean")),
        }
    }
}
impl FromValue for String {
    fn from_value(v: Value<'static>) -> Result<String, String> {
        match v {
            Value::Text(s) => Ok(s.into_owned()),
            other => Err(format!("{other:?} for text")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: Value<'static>) -> Result<Vec<u8>, String> {
        match v {
            Value::Bytes(b) => Ok(b.into_owned()),
            other => Err(format!("{other:?} for bytes")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value<'static>) -> Result<Option<T>, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A connection of either backend. PostgreSQL's client needs `&mut` for
/// every call while the store's reads take `&self`, hence the `RefCell`
/// (a store is used by one thread at a time; no method calls another's
/// `read` or `write` from inside its closure).
pub(crate) enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(RefCell<PgClient>),
}

/// The postgres client, used only through [`off_runtime`]: it blocks on a
/// runtime of its own, which tokio forbids on a thread that drives async
/// tasks (the scheduler calls the store from one), so every call, and the
/// client's closing when dropped, runs on a thread of its own.
pub(crate) struct PgClient(Option<postgres::Client>);

impl PgClient {
    pub(crate) fn new(client: postgres::Client) -> PgClient {
        PgClient(Some(client))
    }

    pub(crate) fn get(&mut self) -> &mut postgres::Client {
        self.0.as_mut().expect("taken only when dropped")
    }
}

impl Drop for PgClient {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            off_runtime(move || drop(client));
        }
    }
}

/// Runs `f` on a thread of its own and waits for it (a panic goes on in the
/// caller): the postgres client may block there whatever the caller's
/// thread is. A thread costs tens of microseconds; a round trip to the
/// server costs more.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// What a method's SQL runs on: an SQLite connection (in a transaction for
/// writes), or a PostgreSQL transaction.
pub(crate) enum Tx<'a, 'c> {
    Sqlite(&'a rusqlite::Connection, &'a Location),
    Postgres(&'a mut postgres::Transaction<'c>, &'a Location),
}

impl Tx<'_, '_> {
    /// Whether the statements run on PostgreSQL.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(..))
    }

    /// Runs a statement; returns how many rows it changed.
    pub(crate) fn exec(&mut self, sql: &str, args: &[Value<'_>]) -> Result<usize, Error> {
        match self {
            Tx::Sqlite(conn, at) => {
                let mut stmt = conn.prepare_cached(sql).map_err(|e| sqlite(*at, e))?;
                stmt.execute(rusqlite::params_from_iter(args)).map_err(|e| sqlite(*at, e))
            }
            Tx::Postgres(tx, at) => {
                let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                tx.execute(dollars(sql).as_str(), &params).map(|n| n as usize).map_err(|e| pg_error(at, e))
            }
        }
    }

    /// Runs a query; returns its rows.
    pub(crate) fn query(&mut self, sql: &str, args: &[Value<'_>]) -> Result<Vec<Row>, Error> {
        match self {
            Tx::Sqlite(conn, at) => {
                let mut stmt = conn.prepare_cached(sql).map_err(|e| sqlite(*at, e))?;
                let columns = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(args)).map_err(|e| sqlite(*at, e))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(|e| sqlite(*at, e))? {
                    let mut values = Vec::with_capacity(columns);
                    for i in 0..columns {
                        values.push(match row.get_ref(i).map_err(|e| sqlite(*at, e))? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(i) => Value::Int(i),
                            ValueRef::Real(f) => Value::Real(f),
                            ValueRef::Text(t) => Value::Text(Cow::Owned(String::from_utf8_lossy(t).into_owned())),
                            ValueRef::Blob(b) => Value::Bytes(Cow::Owned(b.to_vec())),
                        });
                    }
                    out.push(Row(values));
                }
                Ok(out)
            }
            Tx::Postgres(tx, at) => {
                let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                let rows = tx.query(dollars(sql).as_str(), &params).map_err(|e| pg_error(at, e))?;
                rows.iter().map(|row| pg_row(row).map_err(|e| pg_error(at, e))).collect()
            }
        }
    }

    /// The first row of a query, if any.
    pub(crate) fn query_opt(&mut self, sql: &str, args: &[Value<'_>]) -> Result<Option<Row>, Error> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The first column of the first row of a query, which must return one.
    pub(crate) fn value<T: FromValue>(&mut self, sql: &str, args: &[Value<'_>]) -> Result<T, Error> {
        match self.query_opt(sql, args)? {
            Some(row) => row.get(0),
            None => T::from_value(Value::Null).map_err(|found| Error::Value { column: 0, found }),
        }
    }
}

/// A PostgreSQL row as [`Value`]s, by each column's type.
fn pg_row(row: &postgres::Row) -> Result<Row, postgres::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(|v| Value::Int(v.into())),
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(|v| Value::Int(v.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(|v| Value::Int(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map(|v| Value::Real(v.into())),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(|b| Value::Bytes(Cow::Owned(b))),
            // Text, and anything else PostgreSQL can give as text (a query
            // that returned another type fails here, naming it).
            _ => row.try_get::<_, Option<String>>(i)?.map(|t| Value::Text(Cow::Owned(t))),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// SQLite's `?N` placeholders as PostgreSQL's `$N` (outside quoted text).
pub(crate) fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(super::dollars("SELECT ?1, '?2', ?12 || '?'"), "SELECT $1, '?2', $12 || '?'");
    }
}
