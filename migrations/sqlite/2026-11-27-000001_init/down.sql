DROP TABLE events;
DROP TABLE label_bookings;
DROP TABLE bandwidth_bookings;
DROP TABLE reservations;
DROP TABLE meta;
