-- Every state-changing request, whoever made it and however it ended: who (the user,
-- or peer:<domain> for another domain's IDC, as its certificate says), what, on which
-- reservation or series, when, and the result (ok, or the error's stable code).
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY NOT NULL,
    at_ms BIGINT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_who ON audit (who, seq);
CREATE INDEX audit_by_target ON audit (target, seq);
