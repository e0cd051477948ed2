DROP INDEX reservations_by_series;
ALTER TABLE reservations DROP COLUMN occurrence;
ALTER TABLE reservations DROP COLUMN missed;
ALTER TABLE reservations DROP COLUMN series_id;
DROP TABLE series;
