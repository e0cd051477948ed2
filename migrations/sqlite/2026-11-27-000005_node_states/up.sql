-- The data plane of each reservation on each node of its path, as that node's agent
-- last answered: applied (the agent has the circuit), failed (the agent could not be
-- reached or could not apply it; error says why) or removed (the agent took it away
-- after the circuit went down).
CREATE TABLE node_states (
    reservation_id TEXT NOT NULL REFERENCES reservations (id),
    node TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT NOT NULL,
    -- When it took this state.
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (reservation_id, node)
) WITHOUT ROWID;
-- The driver reads what a node still has.
CREATE INDEX node_states_by_node ON node_states (node, state);
