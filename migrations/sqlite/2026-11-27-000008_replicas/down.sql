ALTER TABLE reservations DROP COLUMN row_version;
