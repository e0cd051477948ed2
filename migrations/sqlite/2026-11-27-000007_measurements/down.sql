DROP TABLE verify_each;
DROP TABLE measurements;
