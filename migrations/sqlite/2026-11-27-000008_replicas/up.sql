-- Every write of a reservation row bumps its row_version, and a save names the version
-- it read: of two writers that read the same row (two IDC replicas, or a timer and a
-- request), the second finds the row changed and starts again from what is stored.
ALTER TABLE reservations ADD COLUMN row_version BIGINT NOT NULL DEFAULT 0;

-- The longest booking is raised in place ("only if larger"), so it must exist.
INSERT OR IGNORE INTO meta (key, value)
SELECT 'longest_booking_ms', CAST(COALESCE(MAX(end_ms - start_ms), 0) AS TEXT) FROM bookings;
