//! The two databases behind one connection type, and where a store lives.

use std::path::{Path, PathBuf};

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;

use super::StoreError;

/// A connection to either database. Queries are written once against it; the few
/// statements that differ (locks, transaction start) match on the variant.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

/// Where a domain's store lives: SQLite in its data directory (one IDC process), or a
/// PostgreSQL database that several replicas of the domain's IDC can share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite { dir: PathBuf },
    Postgres { url: String },
}

impl Database {
    /// `url` (`postgres://…` or `postgresql://…`) if given, else SQLite in `data_dir`.
    pub fn choose(data_dir: &Path, url: Option<&str>) -> Result<Database, StoreError> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(Database::Sqlite {
                dir: data_dir.to_path_buf(),
            }),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Database::Postgres { url: u.to_string() })
            }
            Some(u) if u.starts_with("sqlite://") => Ok(Database::Sqlite {
                dir: PathBuf::from(&u["sqlite://".len()..]),
            }),
            Some(u) => Err(StoreError::Open {
                path: redact(u),
                message: "a database URL starts with postgres:// (or sqlite://DIR)".into(),
            }),
        }
    }

    /// For messages and logs: the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite { dir } => dir.join(super::DB_FILE).display().to_string(),
            Database::Postgres { url } => redact(url),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Database::Postgres { .. })
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            )
        }
        _ => url.to_string(),
    }
}

/// Makes the pool's connections of the right kind (diesel's own manager would try each
/// database in turn on the URL).
#[derive(Debug)]
pub struct Manager(pub Database);

impl diesel::r2d2::ManageConnection for Manager {
    type Connection = DbConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConn, Self::Error> {
        use diesel::Connection;
        match &self.0 {
            Database::Sqlite { dir } => {
                let path = dir.join(super::DB_FILE);
                SqliteConnection::establish(&path.to_string_lossy()).map(DbConn::Sqlite)
            }
            Database::Postgres { url } => PgConnection::establish(url).map(DbConn::Pg),
        }
        .map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), Self::Error> {
        use diesel::r2d2::R2D2Connection;
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        use diesel::r2d2::R2D2Connection;
        conn.is_broken()
    }
}

/// Runs `f` in a write transaction: `BEGIN IMMEDIATE` on SQLite (the database's write
/// lock from the start, so two writers never deadlock upgrading), READ COMMITTED on
/// PostgreSQL, where admission takes its own locks. A PostgreSQL deadlock or
/// serialization failure rolls back and runs `f` again, a few times.
pub fn write_tx<T>(
    conn: &mut DbConn,
    mut f: impl FnMut(&mut DbConn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match conn {
            DbConn::Sqlite(c) => {
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?
            }
            // READ COMMITTED whatever the server's default: each statement after a lock
            // must see what the lock's last holder committed.
            DbConn::Pg(c) => AnsiTransactionManager::begin_transaction_sql(
                c,
                "BEGIN ISOLATION LEVEL READ COMMITTED",
            )?,
        }
        let result = f(conn);
        let result = match result {
            // A failed commit is rolled back by diesel itself.
            Ok(v) => commit(conn).map(|()| v).map_err(StoreError::Db),
            Err(e) => {
                rollback(conn);
                Err(e)
            }
        };
        match result {
            Err(StoreError::Db(e)) if attempt < 5 && retryable(&e) => {
                tracing::debug!(error = %e, attempt, "write transaction retried");
                continue;
            }
            other => return other,
        }
    }
}

fn commit(conn: &mut DbConn) -> diesel::QueryResult<()> {
    match conn {
        DbConn::Sqlite(c) => AnsiTransactionManager::commit_transaction(c),
        DbConn::Pg(c) => AnsiTransactionManager::commit_transaction(c),
    }
}

fn rollback(conn: &mut DbConn) {
    // A failed rollback leaves diesel's transaction state broken; the next begin says so.
    let r = match conn {
        DbConn::Sqlite(c) => AnsiTransactionManager::rollback_transaction(c),
        DbConn::Pg(c) => AnsiTransactionManager::rollback_transaction(c),
    };
    if let Err(e) = r {
        tracing::error!(error = %e, "rollback failed");
    }
}

/// PostgreSQL aborted the transaction only because of another one: running it again
/// can succeed.
fn retryable(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        Error::DatabaseError(_, info) => info.message().contains("deadlock detected"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_chooses_the_database_and_hides_its_password() {
        let dir = Path::new("/var/lib/sluice");
        assert_eq!(
            Database::choose(dir, None).unwrap(),
            Database::Sqlite { dir: dir.into() }
        );
        let pg = Database::choose(dir, Some("postgres://idc:s3cret@db:5432/sluice")).unwrap();
        assert!(pg.is_shared());
        assert_eq!(pg.describe(), "postgres://idc:***@db:5432/sluice");
        let err = Database::choose(dir, Some("mysql://x")).unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");
    }
}
