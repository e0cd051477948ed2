-- Sluice store, SQLite flavour. Times are milliseconds since the Unix epoch (UTC).
--
-- Shaped for few pages per write (each page is a WAL frame): tables are keyed the way
-- they are read, secondary indexes are few, and a hold's expiry lives only on the
-- reservation, so a commit rewrites one row instead of every booking.

CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE reservations (
    id TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    description TEXT NOT NULL,
    src_stp TEXT NOT NULL,
    src_vlan INTEGER NOT NULL,
    dst_stp TEXT NOT NULL,
    dst_vlan INTEGER NOT NULL,
    bw_mbps BIGINT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    -- One member per line.
    ero_include TEXT NOT NULL,
    ero_exclude TEXT NOT NULL,
    -- One hop per line: "link from to".
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    committed_version INTEGER,
    reservation_state TEXT NOT NULL,
    provision_state TEXT NOT NULL,
    lifecycle_state TEXT NOT NULL,
    data_plane_active BOOLEAN NOT NULL,
    auto_provision BOOLEAN NOT NULL,
    -- Set while held: the bookings count only until then.
    hold_expires_ms BIGINT,
    -- When the scheduler must next look at it (scheduler::next_deadline); NULL: never.
    next_deadline_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
) WITHOUT ROWID;

-- Not a partial index: with one, SQLite re-prepares `next_deadline_ms <= ?` at every
-- new bound value (it re-proves the index's WHERE clause).
CREATE INDEX reservations_next_deadline ON reservations (next_deadline_ms);

-- What each reservation's current version occupies: one row per resource (a link, or
-- an end port) with the bandwidth it takes in each direction, and on a port the VLAN
-- it uses there. Deleted when the reservation stops counting (abort, hold timeout,
-- terminate). Keyed for the admission query: a resource's bookings by start time.
-- Overlap queries bound start_ms from below by the longest booking (meta
-- 'longest_booking_ms'), so they scan only nearby bookings.
CREATE TABLE bookings (
    resource TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    reservation_id TEXT NOT NULL,
    end_ms BIGINT NOT NULL,
    bw_fwd_mbps BIGINT NOT NULL,
    bw_rev_mbps BIGINT NOT NULL,
    vlan INTEGER,
    PRIMARY KEY (resource, start_ms, reservation_id)
) WITHOUT ROWID;

CREATE INDEX bookings_by_reservation ON bookings (reservation_id);

-- Every state change, in order; Watch replays from here. Never deleted, so the rowid
-- only grows. (No index by reservation: a replay scans forward from its sequence
-- number, and every write would pay for the index.)
CREATE TABLE events (
    seq INTEGER PRIMARY KEY NOT NULL,
    reservation_id TEXT NOT NULL,
    machine TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    effective_ms BIGINT NOT NULL,
    recorded_ms BIGINT NOT NULL,
    detail TEXT NOT NULL
);
