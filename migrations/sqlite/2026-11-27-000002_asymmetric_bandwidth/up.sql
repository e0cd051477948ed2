-- Z→A bandwidth of an asymmetric circuit; NULL when it equals A→Z (bw_mbps). The path
-- column gains a fourth word per hop, the VLAN on that link; older hops have three.
ALTER TABLE reservations ADD COLUMN bw_rev_mbps BIGINT;
