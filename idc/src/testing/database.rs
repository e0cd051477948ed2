//! A fresh database per test: SQLite in a temporary directory, or a new PostgreSQL
//! database on the server that `SLUICE_TEST_POSTGRES` names (an admin URL, as
//! `deploy/postgres/pg-local.sh start` prints). Each is removed on drop.
//!
//! Without `SLUICE_TEST_POSTGRES` the PostgreSQL cases are skipped with a note, unless
//! `SLUICE_REQUIRE_POSTGRES=1` (CI sets it), which makes them fail instead.

use std::sync::atomic::{AtomicU32, Ordering};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use crate::store::Database;

pub const POSTGRES_ENV: &str = "SLUICE_TEST_POSTGRES";
pub const REQUIRE_POSTGRES_ENV: &str = "SLUICE_REQUIRE_POSTGRES";

pub struct TestDatabase {
    pub database: Database,
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the admin URL and the database's name, to drop it.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().expect("a temporary directory");
        TestDatabase {
            database: Database::Sqlite {
                dir: dir.path().to_path_buf(),
            },
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A new, empty PostgreSQL database; `None` (skip) if no server is configured.
    pub fn postgres() -> Option<TestDatabase> {
        let admin = match std::env::var(POSTGRES_ENV) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => {
                assert!(
                    std::env::var(REQUIRE_POSTGRES_ENV).as_deref() != Ok("1"),
                    "{REQUIRE_POSTGRES_ENV}=1 but {POSTGRES_ENV} is not set"
                );
                eprintln!(
                    "skipped on PostgreSQL: set {POSTGRES_ENV} (deploy/postgres/pg-local.sh start DIR prints it)"
                );
                return None;
            }
        };
        Some(TestDatabase::postgres_on(&admin))
    }

    /// A new, empty database on the PostgreSQL server `admin` names (benchmarks).
    pub fn postgres_on(admin: &str) -> TestDatabase {
        let admin = admin.to_string();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "sluice_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut conn = PgConnection::establish(&admin)
            .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={admin}: cannot connect: {e}"));
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        TestDatabase {
            database: Database::Postgres {
                url: with_database(&admin, &name),
            },
            _dir: None,
            postgres: Some((admin, name)),
        }
    }

    /// The URL a server option takes (`--database`), or `None` for SQLite.
    pub fn url(&self) -> Option<String> {
        match &self.database {
            Database::Postgres { url } => Some(url.clone()),
            Database::Sqlite { .. } => None,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres
            && let Ok(mut conn) = PgConnection::establish(admin)
            && let Err(e) =
                conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        {
            eprintln!("could not drop test database {name}: {e}");
        }
    }
}

/// `postgres://u@h:p/admin?x` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_of_a_url_is_replaced() {
        use super::with_database;
        assert_eq!(
            with_database("postgres://sluice@127.0.0.1:5/postgres", "t1"),
            "postgres://sluice@127.0.0.1:5/t1"
        );
        assert_eq!(
            with_database("postgres://u@h:5/db?sslmode=disable", "t2"),
            "postgres://u@h:5/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "t3"), "postgres://u@h/t3");
    }
}
