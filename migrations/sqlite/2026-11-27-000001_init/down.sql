DROP TABLE events;
DROP TABLE bookings;
DROP TABLE reservations;
DROP TABLE meta;
