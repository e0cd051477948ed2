//! The store: reservations, what they occupy, and their event log, in SQLite or
//! PostgreSQL (diesel), chosen by the database URL ([`Database`]).
//!
//! **Architecture invariant:** the only module that knows SQL. Callers see model types
//! and a handful of row structs; nothing of either database leaks out.
//!
//! Writes go through a [`Writer`]: on SQLite one per process at a time (a mutex around
//! the write connection), on PostgreSQL one of a few pooled connections. Every
//! admission re-checks capacity and labels inside its transaction, so the in-memory
//! index can be stale without over-booking. Several
//! processes (IDC replicas on one PostgreSQL) agree through the database:
//!
//! - SQLite writes in `BEGIN IMMEDIATE` transactions: one writer at a time, outright.
//! - On PostgreSQL the re-check first takes a transaction lock on each resource it
//!   reads, in sorted order (no deadlocks), so two admissions on one link run one after
//!   the other while admissions on different links run at once.
//! - Event sequence numbers are taken under one more lock, held to commit and taken
//!   last: events become visible in sequence order, so a reader that has seen `n` has
//!   seen everything before it (Watch and the other replicas rely on this).
//! - Every reservation row carries a `row_version`. A save names the version its
//!   writer loaded; if another process saved in between, the save fails with
//!   [`StoreError::Stale`] and changes nothing, and the caller starts again from the
//!   stored row. So a timer that two replicas find due fires once.
//!
//! SQLite durability is a group commit. Transactions commit in WAL mode with
//! `synchronous = NORMAL`: written to the WAL (so they survive a killed process) but not
//! yet fsynced. [`Store::sync`] then makes everything committed so far durable with one
//! fsync of the WAL that concurrent callers share. Callers sync before answering when the
//! answer promises durability (commit, modify, terminate).
//!
//! Queries avoid `.first()`: its `LIMIT ?` makes SQLite re-prepare the statement at
//! every execution (a re-bound LIMIT variable expires it), which costs more than the query.

mod audit;
mod conn;
mod measurements;
mod nodes;
mod rows;
mod schema;
mod segments;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{CustomizeConnection, Pool};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use sluice_model::{Change, Direction, Mbps, Reservation, Series, TimeWindow, Vlan};

pub use audit::{AuditFilter, AuditRecord};
pub use conn::Database;
use conn::{DbConn, write_tx};
pub use nodes::{NodeStateRecord, NodeUpdate};
pub use rows::{BandwidthRow, LabelRow};
use rows::{EventRow, ReservationRow, SeriesRow, from_ms, ms};
use schema::{bookings, events, meta, reservations, series};
pub use segments::SegmentRecord;

/// Reservation, provision and lifecycle state, whether the data plane is active, and how
/// many reservations are so.
pub type StateCount = (String, String, String, bool, i64);

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// The database file inside the data directory.
pub const DB_FILE: &str = "sluice.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("cannot open the database {path}: {message}")]
    Open { path: String, message: String },
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("the data directory belongs to domain {found:?}, not {expected:?}")]
    WrongDomain { found: String, expected: String },
    /// Admission found less room than the caller's plan assumed.
    #[error("{0}")]
    Conflict(Conflict),
    /// Another writer (another replica) saved the reservation after this writer loaded
    /// it; nothing was written. Load it again and redo the change.
    #[error("reservation {0} was changed by another writer; load it again")]
    Stale(String),
}

/// What the re-check inside the transaction found taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    Bandwidth {
        resource: String,
        direction: Direction,
        requested: Mbps,
        available: Mbps,
    },
    Label {
        resource: String,
        vlan: Vlan,
    },
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::Bandwidth {
                resource,
                direction,
                requested,
                available,
            } => write!(
                f,
                "{resource} ({direction}): requested {}, available {}",
                requested.0, available.0
            ),
            Conflict::Label { resource, vlan } => write!(f, "VLAN {vlan} on {resource} is taken"),
        }
    }
}

/// One resource direction a reservation occupies, with the capacity it must fit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthBooking {
    pub resource: String,
    pub direction: Direction,
    pub bw: Mbps,
    pub capacity: Mbps,
}

/// A VLAN a reservation uses on a resource: an end port (`port:node:port`) or a link
/// (`link:id`, whose two ports carry the same VLAN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelBooking {
    pub resource: String,
    pub vlan: Vlan,
}

/// Everything one version of a reservation occupies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bookings {
    pub window: TimeWindow,
    pub hold_until: Option<DateTime<Utc>>,
    pub bandwidth: Vec<BandwidthBooking>,
    pub labels: Vec<LabelBooking>,
}

/// What a save does to the reservation's bookings. (A commit needs nothing here: a
/// hold's expiry lives on the reservation row, which the same save clears.)
#[derive(Debug, Clone, Copy)]
pub enum BookingChange<'a> {
    Keep,
    /// It no longer counts (abort, timeout, terminate).
    Delete,
    /// A new version: re-checked without the old one, then swapped in.
    Replace(&'a Bookings),
    /// A hold becoming a booking: its own bookings, re-checked without themselves and
    /// kept. Where several processes write, another may have found the hold expired by
    /// its clock and booked the room; the commit then fails instead of over-booking.
    Confirm(&'a Bookings),
}

/// A recorded state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub seq: u64,
    pub reservation_id: String,
    pub change: Change,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub owner: Option<String>,
    /// Reservations whose window overlaps this one.
    pub window: Option<TimeWindow>,
    /// A full STP: reservations that start or end there.
    pub stp: Option<String>,
}

#[derive(Debug)]
struct ReaderPragmas;

impl CustomizeConnection<DbConn, diesel::r2d2::Error> for ReaderPragmas {
    fn on_acquire(&self, conn: &mut DbConn) -> Result<(), diesel::r2d2::Error> {
        match conn {
            DbConn::Sqlite(c) => c
                .batch_execute("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                .map_err(diesel::r2d2::Error::QueryError),
            DbConn::Pg(_) => Ok(()),
        }
    }
}

pub struct Store {
    writers: Writers,
    readers: Pool<conn::Manager>,
    database: Database,
    /// Counts write transactions; on SQLite it also makes them durable on demand.
    committed: AtomicU64,
    /// SQLite only: PostgreSQL commits durably by itself.
    sqlite: Option<SqliteDurability>,
}

/// Where writers get their connection.
enum Writers {
    /// SQLite takes one writer at a time anyway: one connection behind a mutex.
    Sqlite(Mutex<DbConn>),
    /// PostgreSQL: a few connections, so that transactions that touch different links
    /// run (and commit) at once; a broken one is replaced.
    Postgres(Pool<conn::Manager>),
}

/// How many write transactions one process runs at once on PostgreSQL.
const POSTGRES_WRITERS: u32 = 8;

/// A writer's connection, held for as long as the writer.
enum WriterConn<'a> {
    Sqlite(MutexGuard<'a, DbConn>),
    Postgres(diesel::r2d2::PooledConnection<conn::Manager>),
}

impl std::ops::Deref for WriterConn<'_> {
    type Target = DbConn;
    fn deref(&self) -> &DbConn {
        match self {
            WriterConn::Sqlite(c) => c,
            WriterConn::Postgres(c) => c,
        }
    }
}

impl std::ops::DerefMut for WriterConn<'_> {
    fn deref_mut(&mut self) -> &mut DbConn {
        match self {
            WriterConn::Sqlite(c) => c,
            WriterConn::Postgres(c) => c,
        }
    }
}

struct SqliteDurability {
    path: PathBuf,
    group_commit: GroupCommit,
    checkpointer: Checkpointer,
}

/// Ask for a checkpoint after this many write transactions (~100-200 WAL frames).
const CHECKPOINT_EVERY: u64 = 16;

/// Folds the WAL into the database on its own thread and connection, so no request
/// pays for a checkpoint, and the WAL stays small and is rewritten from its start: an
/// fsync of overwritten blocks costs about half that of appended ones here. The
/// writer's own autocheckpoint (4000 pages) is only a safety net.
struct Checkpointer {
    signal: Arc<(Mutex<CheckpointState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct CheckpointState {
    requested: bool,
    stop: bool,
}

impl Checkpointer {
    fn start(url: &str) -> Result<Checkpointer, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: url.to_string(),
            message,
        };
        let mut conn = SqliteConnection::establish(url).map_err(|e| open_err(e.to_string()))?;
        conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL;")?;
        let signal = Arc::new((Mutex::new(CheckpointState::default()), Condvar::new()));
        let shared = signal.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || {
                let (lock, wake) = &*shared;
                loop {
                    let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
                    if !state.requested && !state.stop {
                        // Idle: still checkpoint once a second.
                        state = wake
                            .wait_timeout(state, std::time::Duration::from_secs(1))
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    if state.stop {
                        return;
                    }
                    state.requested = false;
                    drop(state);
                    if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::warn!(error = %e, "WAL checkpoint failed; the writer's own will take over");
                    }
                }
            })
            .map_err(|e| open_err(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            signal,
            thread: Some(thread),
        })
    }

    fn request(&self) {
        let (lock, wake) = &*self.signal;
        lock.lock().unwrap_or_else(|p| p.into_inner()).requested = true;
        wake.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.signal;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counts committed write transactions and how many of them are known to be on disk.
struct GroupCommit {
    wal: PathBuf,
    db: PathBuf,
    /// Transactions up to this count are fsynced; the mutex serialises the fsyncs.
    synced: Mutex<u64>,
}

impl GroupCommit {
    fn sync(&self, committed: &AtomicU64) -> Result<(), StoreError> {
        let target = committed.load(Ordering::Acquire);
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= target {
            // Someone else's fsync, made while we waited, covered us.
            return Ok(());
        }
        let upto = committed.load(Ordering::Acquire);
        // fsync flushes the file whichever descriptor wrote it. Without a WAL file (a
        // checkpoint folded it into the database) the database file holds the data.
        let file = std::fs::File::open(&self.wal).or_else(|_| std::fs::File::open(&self.db));
        file.and_then(|f| f.sync_data())
            .map_err(|e| StoreError::Open {
                path: self.wal.display().to_string(),
                message: format!("fsync failed: {e}"),
            })?;
        *synced = upto;
        Ok(())
    }
}

/// Exclusive access to the write connection. Hold it across a read-check-write sequence
/// so nothing else writes in between.
pub struct Writer<'a> {
    conn: WriterConn<'a>,
    committed: &'a AtomicU64,
    checkpointer: Option<&'a Checkpointer>,
    /// The `row_version` of each reservation this writer loaded: its saves of them
    /// succeed only if nobody else saved them since.
    loaded: HashMap<String, i64>,
}

impl Store {
    /// Opens (creating if needed) the SQLite database in `data_dir`, applies pending
    /// migrations, and checks that it belongs to `domain`.
    pub fn open(data_dir: &Path, domain: &str) -> Result<Store, StoreError> {
        Store::open_database(
            &Database::Sqlite {
                dir: data_dir.to_path_buf(),
            },
            domain,
        )
    }

    /// Opens `database` (creating a SQLite one if needed), applies pending migrations,
    /// and checks that it belongs to `domain`.
    pub fn open_database(database: &Database, domain: &str) -> Result<Store, StoreError> {
        let (mut writer, url) = connect(database)?;
        let open_err = |message: String| StoreError::Open {
            path: database.describe(),
            message,
        };
        if let DbConn::Sqlite(c) = &mut writer {
            c.batch_execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA wal_autocheckpoint = 4000; \
                 PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
            )
            .map_err(|e| open_err(e.to_string()))?;
        }
        run_migrations(&mut writer)?;
        // Two replicas starting at once on a new database both find no domain: the
        // insert of the second fails on the key, and it reads the first's.
        let found = write_tx(&mut writer, |conn| {
            let found: Option<String> = meta::table
                .filter(meta::key.eq("domain"))
                .select(meta::value)
                .get_result(conn)
                .optional()?;
            if found.is_none() {
                diesel::insert_into(meta::table)
                    .values((meta::key.eq("domain"), meta::value.eq(domain)))
                    .execute(conn)?;
            }
            Ok(found)
        });
        let found = match found {
            Err(StoreError::Db(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            ))) => meta::table
                .filter(meta::key.eq("domain"))
                .select(meta::value)
                .get_result(&mut writer)
                .optional()?,
            other => other?,
        };
        if let Some(found) = found
            && found != domain
        {
            return Err(StoreError::WrongDomain {
                found,
                expected: domain.to_string(),
            });
        }
        let readers = Pool::builder()
            .max_size(8)
            .connection_customizer(Box::new(ReaderPragmas))
            .build(conn::Manager(database.clone()))
            .map_err(|e| open_err(e.to_string()))?;
        let sqlite = match database {
            Database::Sqlite { dir } => {
                let path = dir.join(DB_FILE);
                Some(SqliteDurability {
                    group_commit: GroupCommit {
                        wal: dir.join(format!("{DB_FILE}-wal")),
                        db: path.clone(),
                        synced: Mutex::new(0),
                    },
                    checkpointer: Checkpointer::start(&url)?,
                    path,
                })
            }
            Database::Postgres { .. } => None,
        };
        let writers = match database {
            Database::Sqlite { .. } => Writers::Sqlite(Mutex::new(writer)),
            Database::Postgres { .. } => Writers::Postgres(
                Pool::builder()
                    .max_size(POSTGRES_WRITERS)
                    .min_idle(Some(1))
                    .connection_timeout(std::time::Duration::from_secs(10))
                    .build(conn::Manager(database.clone()))
                    .map_err(|e| open_err(e.to_string()))?,
            ),
        };
        Ok(Store {
            writers,
            readers,
            database: database.clone(),
            committed: AtomicU64::new(0),
            sqlite,
        })
    }

    /// Applies pending migrations to the SQLite database in `data_dir` and returns the
    /// names of those applied.
    pub fn migrate(data_dir: &Path) -> Result<Vec<String>, StoreError> {
        Store::migrate_database(&Database::Sqlite {
            dir: data_dir.to_path_buf(),
        })
    }

    /// Applies pending migrations to `database` and returns the names of those applied.
    pub fn migrate_database(database: &Database) -> Result<Vec<String>, StoreError> {
        let (mut conn, _) = connect(database)?;
        if let DbConn::Sqlite(c) = &mut conn {
            c.batch_execute("PRAGMA journal_mode = WAL;")?;
        }
        run_migrations(&mut conn)
    }

    /// The SQLite database file; `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        self.sqlite.as_ref().map(|s| s.path.as_path())
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// A writer: on SQLite the only one (others wait), on PostgreSQL one of a few. It
    /// fails only if PostgreSQL gives no connection within 10 s.
    pub fn writer(&self) -> Result<Writer<'_>, StoreError> {
        let conn = match &self.writers {
            // A panic while writing poisons the mutex; the connection itself is still
            // sound (the transaction rolled back), so carry on with it.
            Writers::Sqlite(m) => WriterConn::Sqlite(m.lock().unwrap_or_else(|p| p.into_inner())),
            Writers::Postgres(pool) => {
                WriterConn::Postgres(pool.get().map_err(|e| StoreError::Open {
                    path: self.database.describe(),
                    message: e.to_string(),
                })?)
            }
        };
        Ok(Writer {
            conn,
            committed: &self.committed,
            checkpointer: self.sqlite.as_ref().map(|s| &s.checkpointer),
            loaded: HashMap::new(),
        })
    }

    /// Makes every transaction committed so far durable (on SQLite one fsync, shared
    /// by concurrent callers; PostgreSQL's commits are durable already).
    pub fn sync(&self) -> Result<(), StoreError> {
        match &self.sqlite {
            Some(s) => s.group_commit.sync(&self.committed),
            None => Ok(()),
        }
    }

    fn reader(&self) -> Result<diesel::r2d2::PooledConnection<conn::Manager>, StoreError> {
        self.readers.get().map_err(|e| StoreError::Open {
            path: self.database.describe(),
            message: e.to_string(),
        })
    }

    /// A series and its occurrences, in order.
    pub fn get_series(&self, id: &str) -> Result<Option<(Series, Vec<Reservation>)>, StoreError> {
        let mut conn = self.reader()?;
        Ok(load_series(&mut conn, id)?
            .map(|(series, all)| (series, all.into_iter().map(|(r, _)| r).collect())))
    }

    pub fn get(&self, id: &str) -> Result<Option<Reservation>, StoreError> {
        let mut conn = self.reader()?;
        Ok(load(&mut conn, id)?.map(|(r, _)| r))
    }

    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Reservation>, StoreError> {
        let mut conn = self.reader()?;
        let mut q = reservations::table.into_boxed();
        if let Some(owner) = &filter.owner {
            q = q.filter(reservations::owner.eq(owner.clone()));
        }
        if let Some(w) = &filter.window {
            q = q
                .filter(reservations::start_ms.lt(ms(w.end)))
                .filter(reservations::end_ms.gt(ms(w.start)));
        }
        if let Some(stp) = &filter.stp {
            q = q.filter(
                reservations::src_stp
                    .eq(stp.clone())
                    .or(reservations::dst_stp.eq(stp.clone())),
            );
        }
        let rows: Vec<ReservationRow> = q
            .order((reservations::created_ms.asc(), reservations::id.asc()))
            .select(ReservationRow::as_select())
            .load(&mut conn)?;
        rows.into_iter().map(ReservationRow::into_model).collect()
    }

    /// Events after `seq`, oldest first, optionally of one reservation.
    pub fn events_after(
        &self,
        seq: u64,
        reservation_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut conn = self.reader()?;
        let mut q = events::table
            .filter(events::seq.gt(seq as i64))
            .into_boxed();
        if let Some(id) = reservation_id {
            q = q.filter(events::reservation_id.eq(id.to_string()));
        }
        let rows: Vec<EventRow> = q
            .order(events::seq.asc())
            .limit(limit)
            .select(EventRow::as_select())
            .load(&mut conn)?;
        rows.into_iter().map(EventRow::into_model).collect()
    }

    pub fn last_event_seq(&self) -> Result<u64, StoreError> {
        let mut conn = self.reader()?;
        let max: Option<i64> = events::table
            .select(diesel::dsl::max(events::seq))
            .get_result(&mut conn)?;
        Ok(max.unwrap_or(0) as u64)
    }

    /// Ids of reservations whose next deadline is at or before `now`.
    pub fn due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.reader()?;
        Ok(reservations::table
            .filter(reservations::next_deadline_ms.le(ms(now)))
            .order(reservations::next_deadline_ms.asc())
            .limit(limit)
            .select(reservations::id)
            .load(&mut conn)?)
    }

    /// The earliest deadline of any reservation.
    pub fn next_deadline(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut conn = self.reader()?;
        let next: Option<i64> = reservations::table
            .select(diesel::dsl::min(reservations::next_deadline_ms))
            .get_result(&mut conn)?;
        next.map(from_ms).transpose()
    }

    /// Bookings that still count at `now` (or later): to build the in-memory index.
    pub fn live_bookings(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<BandwidthRow>, Vec<LabelRow>), StoreError> {
        let mut conn = self.reader()?;
        let now = ms(now);
        let rows = bookings::table
            .inner_join(reservations::table)
            .filter(bookings::end_ms.gt(now))
            .filter(counts_at(now))
            .select(JoinedBooking::as_select())
            .load(&mut conn)?;
        Ok(split_rows(rows))
    }

    /// Calls `f` with every booking row that still counts at `now` (or later), one at a
    /// time, without collecting them: to rebuild the index at start.
    pub fn for_each_live_booking(
        &self,
        now: DateTime<Utc>,
        mut f: impl FnMut(LiveBooking),
    ) -> Result<(), StoreError> {
        let mut conn = self.reader()?;
        let now = ms(now);
        // Holds are few: read them first, and scan the bookings alone. (Joining every
        // booking row to its reservation costs a B-tree lookup per row: seconds for a
        // million rows.)
        let holds: std::collections::HashMap<String, i64> = reservations::table
            .filter(reservations::hold_expires_ms.is_not_null())
            .select((reservations::id, reservations::hold_expires_ms))
            .load::<(String, Option<i64>)>(&mut conn)?
            .into_iter()
            .filter_map(|(id, h)| h.map(|h| (id, h)))
            .collect();
        let rows = bookings::table
            .filter(bookings::end_ms.gt(now))
            .select((
                bookings::reservation_id,
                bookings::resource,
                bookings::start_ms,
                bookings::end_ms,
                bookings::bw_fwd_mbps,
                bookings::bw_rev_mbps,
                bookings::vlan,
            ))
            .load_iter::<(String, String, i64, i64, i64, i64, Option<i32>), diesel::connection::DefaultLoadingMode>(&mut conn)?;
        for row in rows {
            let (reservation_id, resource, start_ms, end_ms, fwd, rev, vlan) = row?;
            let hold = holds.get(&reservation_id).copied();
            if hold.is_some_and(|h| h <= now) {
                continue; // an expired hold no longer counts
            }
            f(LiveBooking {
                reservation_id,
                resource,
                start: from_ms(start_ms)?,
                end: from_ms(end_ms)?,
                bw: [fwd.max(0) as u64, rev.max(0) as u64],
                vlan: vlan.and_then(|v| u16::try_from(v).ok()).and_then(Vlan::new),
                hold_until: hold.map(from_ms).transpose()?,
            });
        }
        Ok(())
    }

    /// Every row of the reservations that have a booking counting at `now` (or later) on
    /// one of `resources`: to bring the index up to date where it was found stale.
    pub fn live_bookings_on(
        &self,
        resources: &[String],
        now: DateTime<Utc>,
    ) -> Result<(Vec<BandwidthRow>, Vec<LabelRow>), StoreError> {
        let ids: Vec<String> = bookings::table
            .filter(bookings::resource.eq_any(resources))
            .filter(bookings::end_ms.gt(ms(now)))
            .select(bookings::reservation_id)
            .distinct()
            .load(&mut self.reader()?)?;
        // Every row of a reservation has its window, so they all end after `now` too.
        self.live_bookings_of(&ids, now)
    }

    /// Every row of `ids` that still counts at `now` (or later): to bring the index up
    /// to date with what another replica wrote.
    pub fn live_bookings_of(
        &self,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(Vec<BandwidthRow>, Vec<LabelRow>), StoreError> {
        let mut conn = self.reader()?;
        let now = ms(now);
        let rows = bookings::table
            .inner_join(reservations::table)
            .filter(bookings::reservation_id.eq_any(ids))
            .filter(bookings::end_ms.gt(now))
            .filter(counts_at(now))
            .select(JoinedBooking::as_select())
            .load(&mut conn)?;
        Ok(split_rows(rows))
    }

    /// How many reservations are in each combination of states: (reservation,
    /// provision, lifecycle, data plane active, count). For the metrics.
    pub fn count_by_states(&self) -> Result<Vec<StateCount>, StoreError> {
        use diesel::dsl::count_star;
        let mut conn = self.reader()?;
        Ok(reservations::table
            .group_by((
                reservations::reservation_state,
                reservations::provision_state,
                reservations::lifecycle_state,
                reservations::data_plane_active,
            ))
            .select((
                reservations::reservation_state,
                reservations::provision_state,
                reservations::lifecycle_state,
                reservations::data_plane_active,
                count_star(),
            ))
            .load(&mut conn)?)
    }

    /// Every bandwidth booking row, for audits and tests.
    pub fn all_bandwidth_bookings(&self) -> Result<Vec<BandwidthRow>, StoreError> {
        let mut conn = self.reader()?;
        let rows = bookings::table
            .inner_join(reservations::table)
            .select(JoinedBooking::as_select())
            .load(&mut conn)?;
        Ok(split_rows(rows).0)
    }

    pub fn count_reservations(&self) -> Result<i64, StoreError> {
        let mut conn = self.reader()?;
        Ok(reservations::table.count().get_result(&mut conn)?)
    }
}

/// A connection to `database` (the SQLite folder made if missing), and the URL the
/// reader pool connects with.
fn connect(database: &Database) -> Result<(DbConn, String), StoreError> {
    let open_err = |message: String| StoreError::Open {
        path: database.describe(),
        message,
    };
    match database {
        Database::Sqlite { dir } => {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
            let url = dir.join(DB_FILE).to_string_lossy().to_string();
            let c = SqliteConnection::establish(&url).map_err(|e| open_err(e.to_string()))?;
            Ok((DbConn::Sqlite(c), url))
        }
        Database::Postgres { url } => {
            let c =
                diesel::pg::PgConnection::establish(url).map_err(|e| open_err(e.to_string()))?;
            Ok((DbConn::Pg(c), url.clone()))
        }
    }
}

fn run_migrations(conn: &mut DbConn) -> Result<Vec<String>, StoreError> {
    let names = |r: diesel::migration::Result<Vec<diesel::migration::MigrationVersion<'_>>>| {
        r.map(|applied| applied.iter().map(|v| v.to_string()).collect::<Vec<_>>())
            .map_err(|e| StoreError::Migration(e.to_string()))
    };
    match conn {
        DbConn::Sqlite(c) => names(c.run_pending_migrations(SQLITE_MIGRATIONS)),
        DbConn::Pg(c) => {
            // Replicas starting together would race to create the tables.
            c.batch_execute("SELECT pg_advisory_lock(7301001)")?;
            let applied = names(c.run_pending_migrations(POSTGRES_MIGRATIONS));
            c.batch_execute("SELECT pg_advisory_unlock(7301001)")?;
            applied
        }
    }
}

/// One stored booking, as the index is rebuilt from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBooking {
    pub reservation_id: String,
    /// `link:id` or `port:node:port`.
    pub resource: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Mb/s `[forward, reverse]`.
    pub bw: [u64; 2],
    pub vlan: Option<Vlan>,
    /// Set while the reservation is only held.
    pub hold_until: Option<DateTime<Utc>>,
}

/// A booking row with its reservation's hold expiry (NULL once committed).
#[derive(Queryable, Selectable)]
#[diesel(table_name = bookings)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct JoinedBooking {
    reservation_id: String,
    resource: String,
    start_ms: i64,
    end_ms: i64,
    bw_fwd_mbps: i64,
    bw_rev_mbps: i64,
    vlan: Option<i32>,
    #[diesel(select_expression = reservations::hold_expires_ms)]
    #[diesel(select_expression_type = reservations::hold_expires_ms)]
    hold_expires_ms: Option<i64>,
}

/// Rows as bandwidth per direction (where there is any) and labels per port.
fn split_rows(rows: Vec<JoinedBooking>) -> (Vec<BandwidthRow>, Vec<LabelRow>) {
    let mut bw = Vec::new();
    let mut labels = Vec::new();
    for r in rows {
        for (direction, mbps) in [
            (Direction::Forward, r.bw_fwd_mbps),
            (Direction::Reverse, r.bw_rev_mbps),
        ] {
            if mbps > 0 {
                bw.push(BandwidthRow {
                    reservation_id: r.reservation_id.clone(),
                    resource: r.resource.clone(),
                    direction: direction.as_str().to_string(),
                    bw_mbps: mbps,
                    start_ms: r.start_ms,
                    end_ms: r.end_ms,
                    hold_expires_ms: r.hold_expires_ms,
                });
            }
        }
        if let Some(vlan) = r.vlan {
            labels.push(LabelRow {
                reservation_id: r.reservation_id,
                resource: r.resource,
                vlan,
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                hold_expires_ms: r.hold_expires_ms,
            });
        }
    }
    (bw, labels)
}

/// A booking counts while its reservation is committed (no hold expiry) or its hold
/// has not yet expired at `now` (ms).
fn counts_at(now: i64) -> CountsAt {
    reservations::hold_expires_ms
        .is_null()
        .or(reservations::hold_expires_ms.gt(now))
}

type CountsAt = diesel::dsl::Or<
    diesel::dsl::IsNull<reservations::hold_expires_ms>,
    diesel::dsl::Gt<reservations::hold_expires_ms, i64>,
>;

/// A reservation and its `row_version`.
fn load(conn: &mut DbConn, id: &str) -> Result<Option<Versioned>, StoreError> {
    reservations::table
        .find(id)
        .select((ReservationRow::as_select(), reservations::row_version))
        .get_result::<(ReservationRow, i64)>(conn)
        .optional()?
        .map(|(row, version)| Ok((row.into_model()?, version)))
        .transpose()
}

/// A reservation with the `row_version` it was read at.
type Versioned = (Reservation, i64);

/// A series and its occurrences in order, each with its `row_version`.
fn load_series(
    conn: &mut DbConn,
    id: &str,
) -> Result<Option<(Series, Vec<Versioned>)>, StoreError> {
    let Some(row) = series::table
        .find(id)
        .select(SeriesRow::as_select())
        .get_result(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let occurrences = reservations::table
        .filter(reservations::series_id.eq(id))
        .order(reservations::occurrence.asc())
        .select((ReservationRow::as_select(), reservations::row_version))
        .load::<(ReservationRow, i64)>(conn)?
        .into_iter()
        .map(|(r, version)| Ok((r.into_model()?, version)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some((row.into_model()?, occurrences)))
}

impl Writer<'_> {
    fn committed_one(&self) {
        if (self.committed.fetch_add(1, Ordering::AcqRel) + 1).is_multiple_of(CHECKPOINT_EVERY)
            && let Some(c) = self.checkpointer
        {
            c.request();
        }
    }

    /// The current row, read on the write connection. A later save of it by this
    /// writer fails with [`StoreError::Stale`] if another process saved it in between.
    pub fn load(&mut self, id: &str) -> Result<Option<Reservation>, StoreError> {
        let Some((r, version)) = load(&mut self.conn, id)? else {
            return Ok(None);
        };
        self.loaded.insert(id.to_string(), version);
        Ok(Some(r))
    }

    /// A series and its occurrences, read on the write connection; later saves of the
    /// occurrences by this writer are checked as after [`Writer::load`].
    pub fn load_series(
        &mut self,
        id: &str,
    ) -> Result<Option<(Series, Vec<Reservation>)>, StoreError> {
        let Some((series, all)) = load_series(&mut self.conn, id)? else {
            return Ok(None);
        };
        let mut occurrences = Vec::with_capacity(all.len());
        for (r, version) in all {
            self.loaded.insert(r.id.clone(), version);
            occurrences.push(r);
        }
        Ok(Some((series, occurrences)))
    }

    /// Admits a new hold: re-checks every resource and label inside the transaction,
    /// then writes the reservation, its bookings and its events.
    pub fn insert_held(
        &mut self,
        r: &Reservation,
        next_deadline: Option<DateTime<Utc>>,
        bookings: &Bookings,
        changes: &[Change],
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let events = write_tx(&mut self.conn, |conn| {
            recheck(conn, bookings, None, now)?;
            diesel::insert_into(reservations::table)
                .values(ReservationRow::from_model(r, next_deadline))
                .execute(conn)?;
            insert_bookings(conn, &r.id, bookings)?;
            insert_events(conn, &r.id, changes, now)
        })?;
        self.loaded.insert(r.id.clone(), 0);
        self.committed_one();
        Ok(events)
    }

    /// Writes a reservation's new state, what happens to its bookings, and its events,
    /// in one transaction.
    pub fn save(
        &mut self,
        r: &Reservation,
        next_deadline: Option<DateTime<Utc>>,
        bookings: BookingChange<'_>,
        changes: &[Change],
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let loaded = &self.loaded;
        let events = write_tx(&mut self.conn, |conn| {
            save_one(conn, loaded, r, next_deadline, bookings, now)?;
            insert_events(conn, &r.id, changes, now)
        })?;
        self.saved(&r.id);
        self.committed_one();
        Ok(events)
    }

    /// Several saves (the occurrences of a series) in one transaction: all or none.
    pub fn save_all(
        &mut self,
        saves: &[Save<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let loaded = &self.loaded;
        let events = write_tx(&mut self.conn, |conn| {
            // Every resource lock first, in one sorted pass, then the rows.
            lock_resources(
                conn,
                saves.iter().filter_map(|s| match s.bookings {
                    BookingChange::Replace(b) | BookingChange::Confirm(b) => Some(b),
                    BookingChange::Keep | BookingChange::Delete => None,
                }),
            )?;
            for s in saves {
                save_one(
                    conn,
                    loaded,
                    s.reservation,
                    s.next_deadline,
                    s.bookings,
                    now,
                )?;
            }
            // Events last: their lock is the last one a transaction takes.
            let mut events = Vec::new();
            for s in saves {
                events.extend(insert_events(conn, &s.reservation.id, &s.changes, now)?);
            }
            Ok::<_, StoreError>(events)
        })?;
        for s in saves {
            self.saved(&s.reservation.id);
        }
        self.committed_one();
        Ok(events)
    }

    /// Admits a series: its row, and every occurrence as a new hold, each re-checked
    /// inside the one transaction; a conflict on any leaves nothing written.
    pub fn insert_series(
        &mut self,
        series: &Series,
        held: &[HeldOccurrence],
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let events = write_tx(&mut self.conn, |conn| {
            // Every occurrence's resources locked in one sorted pass before any check.
            lock_resources(conn, held.iter().map(|h| &h.bookings))?;
            diesel::insert_into(series::table)
                .values(SeriesRow::from_model(series))
                .execute(conn)?;
            for h in held {
                recheck(conn, &h.bookings, None, now)?;
                diesel::insert_into(reservations::table)
                    .values(ReservationRow::from_model(&h.reservation, h.next_deadline))
                    .execute(conn)?;
                insert_bookings(conn, &h.reservation.id, &h.bookings)?;
            }
            let mut events = Vec::new();
            for h in held {
                events.extend(insert_events(conn, &h.reservation.id, &h.changes, now)?);
            }
            Ok::<_, StoreError>(events)
        })?;
        for h in held {
            self.loaded.insert(h.reservation.id.clone(), 0);
        }
        self.committed_one();
        Ok(events)
    }
}

impl Writer<'_> {
    /// A save went through: the row is one version further.
    fn saved(&mut self, id: &str) {
        if let Some(v) = self.loaded.get_mut(id) {
            *v += 1;
        }
    }
}

/// One reservation's save inside a larger transaction (`Writer::save_all`).
pub struct Save<'a> {
    pub reservation: &'a Reservation,
    pub next_deadline: Option<DateTime<Utc>>,
    pub bookings: BookingChange<'a>,
    pub changes: Vec<Change>,
}

/// One occurrence of a series about to be held (`Writer::insert_series`).
pub struct HeldOccurrence {
    pub reservation: Reservation,
    pub next_deadline: Option<DateTime<Utc>>,
    pub bookings: Bookings,
    pub changes: Vec<Change>,
}

/// Writes one reservation's row and bookings (not its events). If `loaded` has the
/// row's version, it must still be that, or [`StoreError::Stale`].
fn save_one(
    conn: &mut DbConn,
    loaded: &HashMap<String, i64>,
    r: &Reservation,
    next_deadline: Option<DateTime<Utc>>,
    bookings: BookingChange<'_>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    // Locks in one order everywhere: resources, then rows, then the events lock.
    if let BookingChange::Replace(b) | BookingChange::Confirm(b) = bookings {
        lock_resources(conn, [b])?;
    }
    // The row before the bookings: on PostgreSQL the update waits for, then sees, a
    // concurrent save of it, so a stale writer stops before touching the bookings.
    let row = ReservationRow::from_model(r, next_deadline);
    let updated = match loaded.get(&r.id) {
        Some(&v) => diesel::update(
            reservations::table
                .find(&r.id)
                .filter(reservations::row_version.eq(v)),
        )
        .set((row, reservations::row_version.eq(v + 1)))
        .execute(conn)?,
        None => diesel::update(reservations::table.find(&r.id))
            .set((
                row,
                reservations::row_version.eq(reservations::row_version + 1),
            ))
            .execute(conn)?,
    };
    if updated != 1 {
        let exists: i64 = reservations::table
            .filter(reservations::id.eq(&r.id))
            .count()
            .get_result(conn)?;
        return Err(if exists > 0 {
            StoreError::Stale(r.id.clone())
        } else {
            StoreError::Corrupt(format!("reservation {} vanished during an update", r.id))
        });
    }
    match bookings {
        BookingChange::Keep => {}
        BookingChange::Delete => delete_bookings(conn, &r.id)?,
        BookingChange::Replace(new) => {
            recheck(conn, new, Some(&r.id), now)?;
            delete_bookings(conn, &r.id)?;
            insert_bookings(conn, &r.id, new)?;
        }
        BookingChange::Confirm(own) => recheck(conn, own, Some(&r.id), now)?,
    }
    Ok(())
}

fn delete_bookings(conn: &mut DbConn, id: &str) -> Result<(), StoreError> {
    diesel::delete(bookings::table.filter(bookings::reservation_id.eq(id))).execute(conn)?;
    Ok(())
}

const LONGEST_BOOKING: &str = "longest_booking_ms";

/// The longest window ever booked: how far back an overlap query must look.
fn longest_booking(conn: &mut DbConn) -> Result<i64, StoreError> {
    let v: Option<String> = meta::table
        .filter(meta::key.eq(LONGEST_BOOKING))
        .select(meta::value)
        .get_result(conn)
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn insert_bookings(conn: &mut DbConn, id: &str, b: &Bookings) -> Result<(), StoreError> {
    let (start, end) = (ms(b.window.start), ms(b.window.end));
    if end - start > longest_booking(conn)? {
        // Only ever raised: of two concurrent writers the shorter must not win.
        diesel::update(meta::table.filter(meta::key.eq(LONGEST_BOOKING)))
            .filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("CAST(value AS BIGINT) < ")
                    .bind::<diesel::sql_types::BigInt, _>(end - start),
            )
            .set(meta::value.eq((end - start).to_string()))
            .execute(conn)?;
    }
    // One row per resource: both directions, and the VLAN on it. One row per
    // statement, so the statement stays the same and diesel prepares it once.
    /// (resource, Mb/s forward, Mb/s reverse, VLAN)
    type Row = (String, i64, i64, Option<i32>);
    fn row_for(rows: &mut Vec<Row>, resource: String) -> &mut Row {
        let i = match rows.iter().position(|r| r.0 == resource) {
            Some(i) => i,
            None => {
                rows.push((resource, 0, 0, None));
                rows.len() - 1
            }
        };
        &mut rows[i]
    }
    let mut rows: Vec<Row> = Vec::with_capacity(b.bandwidth.len());
    for x in &b.bandwidth {
        let row = row_for(&mut rows, x.resource.clone());
        match x.direction {
            Direction::Forward => row.1 += x.bw.0 as i64,
            Direction::Reverse => row.2 += x.bw.0 as i64,
        }
    }
    for x in &b.labels {
        row_for(&mut rows, x.resource.clone()).3 = Some(x.vlan.id() as i32);
    }
    for (resource, fwd, rev, vlan) in rows {
        diesel::insert_into(bookings::table)
            .values((
                bookings::resource.eq(resource),
                bookings::start_ms.eq(start),
                bookings::reservation_id.eq(id),
                bookings::end_ms.eq(end),
                bookings::bw_fwd_mbps.eq(fwd),
                bookings::bw_rev_mbps.eq(rev),
                bookings::vlan.eq(vlan),
            ))
            .execute(conn)?;
    }
    Ok(())
}

fn insert_events(
    conn: &mut DbConn,
    id: &str,
    changes: &[Change],
    now: DateTime<Utc>,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut out = Vec::with_capacity(changes.len());
    if let (DbConn::Pg(_), false) = (&*conn, changes.is_empty()) {
        // Held to commit: sequence numbers commit in order across replicas.
        pg_lock(conn, EVENTS_LOCK)?;
    }
    for c in changes {
        let seq: i64 = diesel::insert_into(events::table)
            .values((
                events::reservation_id.eq(id),
                events::machine.eq(c.machine.as_str()),
                events::from_state.eq(&c.from),
                events::to_state.eq(&c.to),
                events::effective_ms.eq(ms(c.effective_at)),
                events::recorded_ms.eq(ms(now)),
                events::detail.eq(&c.detail),
            ))
            .returning(events::seq)
            .get_result(conn)?;
        out.push(EventRecord {
            seq: seq as u64,
            reservation_id: id.to_string(),
            change: c.clone(),
        });
    }
    Ok(out)
}

/// PostgreSQL: locks every resource `bookings` name until the transaction ends, sorted,
/// so that two writers wait for each other instead of deadlocking. A transaction takes
/// all its resource locks before any row lock (locks already held are taken again at
/// no risk).
fn lock_resources<'a>(
    conn: &mut DbConn,
    bookings: impl IntoIterator<Item = &'a Bookings>,
) -> Result<(), StoreError> {
    if !matches!(conn, DbConn::Pg(_)) {
        return Ok(());
    }
    let mut resources: Vec<&str> = bookings
        .into_iter()
        .flat_map(|b| {
            b.bandwidth
                .iter()
                .map(|x| x.resource.as_str())
                .chain(b.labels.iter().map(|l| l.resource.as_str()))
        })
        .collect();
    resources.sort_unstable();
    resources.dedup();
    for resource in resources {
        pg_lock(conn, &format!("resource:{resource}"))?;
    }
    Ok(())
}

/// The key of the lock that orders event sequence numbers.
const EVENTS_LOCK: &str = "events";

/// PostgreSQL: a lock on `key` until the transaction ends (a 64-bit hash of it; two
/// keys that collide only wait for each other needlessly).
fn pg_lock(conn: &mut DbConn, key: &str) -> Result<(), StoreError> {
    if let DbConn::Pg(c) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind::<diesel::sql_types::Text, _>(key)
            .execute(c)?;
    }
    Ok(())
}

/// The admission re-check: the peak of what already counts in the window, plus the
/// request, must fit every resource; every label must be free. `ignore` leaves out the
/// reservation being modified. One query per resource (a port's rows carry its
/// bandwidth and its VLANs), always of the same shape, so it is prepared once.
fn recheck(
    conn: &mut DbConn,
    b: &Bookings,
    ignore: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (start, end, now) = (ms(b.window.start), ms(b.window.end), ms(now));
    let ignore = ignore.unwrap_or("");
    let mut resources: Vec<&str> = b
        .bandwidth
        .iter()
        .map(|x| x.resource.as_str())
        .chain(b.labels.iter().map(|l| l.resource.as_str()))
        .collect();
    resources.sort_unstable();
    resources.dedup();
    lock_resources(conn, [b])?;
    // Read after the locks, so a longer booking just committed on them is seen.
    // Nothing that starts before this can still be running at `start`.
    let lookback = start - longest_booking(conn)?;
    for resource in resources {
        let rows: Vec<(i64, i64, i64, i64, Option<i32>)> = bookings::table
            .inner_join(reservations::table)
            .filter(bookings::resource.eq(resource))
            .filter(bookings::start_ms.ge(lookback))
            .filter(bookings::start_ms.lt(end))
            .filter(bookings::end_ms.gt(start))
            .filter(bookings::reservation_id.ne(ignore))
            .filter(counts_at(now))
            .select((
                bookings::bw_fwd_mbps,
                bookings::bw_rev_mbps,
                bookings::start_ms,
                bookings::end_ms,
                bookings::vlan,
            ))
            .load(conn)?;
        for want in b.bandwidth.iter().filter(|x| x.resource == resource) {
            let existing = rows
                .iter()
                .map(|r| -> Result<sluice_pce::Interval, StoreError> {
                    let bw = match want.direction {
                        Direction::Forward => r.0,
                        Direction::Reverse => r.1,
                    };
                    Ok(sluice_pce::Interval {
                        start: from_ms(r.2)?,
                        end: from_ms(r.3)?,
                        bw: Mbps(bw as u64),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let peak = sluice_pce::peak_of(existing, &b.window);
            if peak + want.bw > want.capacity {
                return Err(StoreError::Conflict(Conflict::Bandwidth {
                    resource: want.resource.clone(),
                    direction: want.direction,
                    requested: want.bw,
                    available: want.capacity.saturating_sub(peak),
                }));
            }
        }
        for want in b.labels.iter().filter(|l| l.resource == resource) {
            if rows.iter().any(|r| r.4 == Some(want.vlan.id() as i32)) {
                return Err(StoreError::Conflict(Conflict::Label {
                    resource: want.resource.clone(),
                    vlan: want.vlan,
                }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
