DROP TABLE node_states;
