-- Circuits across domains. The aggregator keeps the whole circuit as a reservation row
-- without bookings of its own (its states and timers are the circuit's) and, here, each
-- domain's segment in order: which domain, that domain's reservation id, the ports and
-- agreed VLANs where it enters and leaves, and its states as last reported.
CREATE TABLE segments (
    reservation_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    domain TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    -- For an occurrence of a recurring circuit: that domain's series id.
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
) WITHOUT ROWID;
-- Notifications arrive by the segment's own id.
CREATE INDEX segments_by_domain_id ON segments (domain, segment_id);
