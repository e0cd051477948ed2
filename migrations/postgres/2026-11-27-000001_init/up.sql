-- Sluice store, PostgreSQL flavour: the schema of migrations/sqlite up to
-- 000008_replicas, in one step. Times are milliseconds since the Unix epoch (UTC).
-- Several IDC replicas of one domain share it; see ARCHITECTURE.md for how they agree.

CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
-- Raised in place ("only if larger") by every booking that is longer.
INSERT INTO meta (key, value) VALUES ('longest_booking_ms', '0');

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
    ero_include TEXT NOT NULL,
    ero_exclude TEXT NOT NULL,
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    committed_version INTEGER,
    reservation_state TEXT NOT NULL,
    provision_state TEXT NOT NULL,
    lifecycle_state TEXT NOT NULL,
    data_plane_active BOOLEAN NOT NULL,
    auto_provision BOOLEAN NOT NULL,
    hold_expires_ms BIGINT,
    next_deadline_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    bw_rev_mbps BIGINT,
    series_id TEXT,
    missed BOOLEAN NOT NULL DEFAULT FALSE,
    occurrence INTEGER,
    row_version BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX reservations_next_deadline ON reservations (next_deadline_ms);
CREATE INDEX reservations_by_series ON reservations (series_id, occurrence);

CREATE TABLE series (
    id TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    description TEXT NOT NULL,
    rule TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    same_path BOOLEAN NOT NULL,
    skipped TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE bookings (
    resource TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    reservation_id TEXT NOT NULL,
    end_ms BIGINT NOT NULL,
    bw_fwd_mbps BIGINT NOT NULL,
    bw_rev_mbps BIGINT NOT NULL,
    vlan INTEGER,
    PRIMARY KEY (resource, start_ms, reservation_id)
);
CREATE INDEX bookings_by_reservation ON bookings (reservation_id);

-- Sequence numbers are taken under a lock held to commit (see the store), so they
-- become visible in order and a reader that has seen n has seen everything before it.
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY NOT NULL,
    reservation_id TEXT NOT NULL,
    machine TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    effective_ms BIGINT NOT NULL,
    recorded_ms BIGINT NOT NULL,
    detail TEXT NOT NULL
);

CREATE TABLE segments (
    reservation_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    domain TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    series_id TEXT,
    ingress TEXT NOT NULL,
    ingress_vlan INTEGER NOT NULL,
    egress TEXT NOT NULL,
    egress_vlan INTEGER NOT NULL,
    reservation_state TEXT NOT NULL,
    provision_state TEXT NOT NULL,
    lifecycle_state TEXT NOT NULL,
    data_plane_active BOOLEAN NOT NULL,
    summary TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (reservation_id, idx)
);
CREATE INDEX segments_by_domain_id ON segments (domain, segment_id);

CREATE TABLE node_states (
    reservation_id TEXT NOT NULL REFERENCES reservations (id),
    node TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (reservation_id, node)
);
CREATE INDEX node_states_by_node ON node_states (node, state);

CREATE TABLE audit (
    seq BIGSERIAL PRIMARY KEY NOT NULL,
    at_ms BIGINT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_who ON audit (who, seq);
CREATE INDEX audit_by_target ON audit (target, seq);

CREATE TABLE measurements (
    seq BIGSERIAL PRIMARY KEY NOT NULL,
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
    throughput_mbps DOUBLE PRECISION NOT NULL,
    ip_throughput_mbps DOUBLE PRECISION NOT NULL,
    min_throughput_ratio DOUBLE PRECISION NOT NULL,
    max_loss DOUBLE PRECISION NOT NULL,
    max_rtt_ms DOUBLE PRECISION,
    verdict TEXT NOT NULL,
    reasons TEXT NOT NULL
);
CREATE INDEX measurements_by_reservation ON measurements (reservation_id, seq);
CREATE INDEX measurements_by_series ON measurements (series_id, seq);

CREATE TABLE verify_each (
    target TEXT PRIMARY KEY NOT NULL,
    duration_ms BIGINT NOT NULL,
    probes INTEGER NOT NULL,
    min_throughput_ratio DOUBLE PRECISION NOT NULL,
    max_loss DOUBLE PRECISION NOT NULL,
    max_rtt_ms DOUBLE PRECISION
);
