DROP TABLE measurements;
