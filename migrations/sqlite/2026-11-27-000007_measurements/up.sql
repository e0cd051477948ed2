-- What each circuit delivered when measured over itself (`sluice verify`, and the short
-- check at each occurrence's start), against what was booked, and the verdict.
CREATE TABLE measurements (
    seq INTEGER PRIMARY KEY NOT NULL,
    reservation_id TEXT NOT NULL,
    series_id TEXT,
    occurrence INTEGER,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    who TEXT NOT NULL,
    booked_mbps BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    probes_sent INTEGER NOT NULL,
    probes_received INTEGER NOT NULL,
    rtt_min_us BIGINT NOT NULL,
    rtt_avg_us BIGINT NOT NULL,
    rtt_max_us BIGINT NOT NULL,
    forward_avg_us BIGINT NOT NULL,
    backward_avg_us BIGINT NOT NULL,
    jitter_us BIGINT NOT NULL,
    -- TCP payload per second A→Z, and the rate of the IP packets that carried it.
    throughput_mbps DOUBLE NOT NULL,
    ip_throughput_mbps DOUBLE NOT NULL,
    min_throughput_ratio DOUBLE NOT NULL,
    max_loss DOUBLE NOT NULL,
    max_rtt_ms DOUBLE,
    verdict TEXT NOT NULL,
    reasons TEXT NOT NULL
);
CREATE INDEX measurements_by_reservation ON measurements (reservation_id, seq);
CREATE INDEX measurements_by_series ON measurements (series_id, seq);

-- Bookings (a reservation, or a series for all its occurrences) that asked for a short
-- verify each time their data plane comes up.
CREATE TABLE verify_each (
    target TEXT PRIMARY KEY NOT NULL,
    duration_ms BIGINT NOT NULL,
    probes INTEGER NOT NULL,
    min_throughput_ratio DOUBLE NOT NULL,
    max_loss DOUBLE NOT NULL,
    max_rtt_ms DOUBLE
);
