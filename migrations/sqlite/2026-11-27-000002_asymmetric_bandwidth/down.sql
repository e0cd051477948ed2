ALTER TABLE reservations DROP COLUMN bw_rev_mbps;
