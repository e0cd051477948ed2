-- Recurring bookings. A series is its rule and what was decided at admission; each
-- admitted occurrence is an ordinary reservation row that names its series and its
-- number, so holds, commits, the scheduler's timers and the bookings work per occurrence.
CREATE TABLE series (
    id TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    description TEXT NOT NULL,
    -- The rule as asked: "ical" then its RFC 5545 lines, or "cron" then expression,
    -- time zone, from (ms), count, until (ms) and skipped dates, a line each.
    rule TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    -- Every occurrence on one path (true), or the best path for each.
    same_path BOOLEAN NOT NULL,
    -- Occurrences left out at admission (--skip-conflicts), one per line:
    -- "number start_ms end_ms code reason".
    skipped TEXT NOT NULL,
    created_ms BIGINT NOT NULL
) WITHOUT ROWID;

ALTER TABLE reservations ADD COLUMN series_id TEXT;
-- Automatic, ended, never provisioned: the IDC was down for the whole window.
ALTER TABLE reservations ADD COLUMN missed BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE reservations ADD COLUMN occurrence INTEGER;
CREATE INDEX reservations_by_series ON reservations (series_id, occurrence);
