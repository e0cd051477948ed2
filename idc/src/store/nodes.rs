//! The data plane of reservations per node, as the nodes' agents answered.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use sluice_model::dataplane::NodeState;
use sluice_model::{Change, Machine};

use super::rows::{from_ms, ms};
use super::schema::node_states;
use super::{EventRecord, Store, StoreError, Writer, insert_events, pg_lock, write_tx};

/// One reservation's state on one node, recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStateRecord {
    pub node: String,
    pub state: NodeState,
    pub error: String,
    pub updated_at: DateTime<Utc>,
}

/// What an agent just answered for one reservation on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUpdate {
    pub reservation_id: String,
    pub state: NodeState,
    pub error: String,
}

fn parse_state(id: &str, node: &str, s: &str) -> Result<NodeState, StoreError> {
    NodeState::parse(s).ok_or_else(|| {
        StoreError::Corrupt(format!("node state of {id} on {node}: bad state {s:?}"))
    })
}

impl Store {
    /// Reservation `id` on each node its agent answered for.
    pub fn node_states(&self, id: &str) -> Result<Vec<NodeStateRecord>, StoreError> {
        let mut conn = self.reader()?;
        node_states::table
            .filter(node_states::reservation_id.eq(id))
            .select((
                node_states::node,
                node_states::state,
                node_states::error,
                node_states::updated_ms,
            ))
            .load::<(String, String, String, i64)>(&mut conn)?
            .into_iter()
            .map(|(node, state, error, updated)| {
                Ok(NodeStateRecord {
                    state: parse_state(id, &node, &state)?,
                    node,
                    error,
                    updated_at: from_ms(updated)?,
                })
            })
            .collect()
    }

    /// The reservations `node`'s agent has or may have (applied, or failed: it may hold
    /// a part), so that those no longer wanted are known to be removed.
    pub fn circuits_on_node(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.reader()?;
        Ok(node_states::table
            .filter(node_states::node.eq(node))
            .filter(
                node_states::state
                    .eq_any([NodeState::Applied.as_str(), NodeState::Failed.as_str()]),
            )
            .select(node_states::reservation_id)
            .load(&mut conn)?)
    }
}

impl Writer<'_> {
    /// Records what `node`'s agent answered, and an event (machine `node`) for each
    /// reservation whose state there changed, in one transaction. An answer that
    /// changes nothing writes nothing; `updated_ms` is when the state last changed.
    pub fn record_node_states(
        &mut self,
        node: &str,
        updates: &[NodeUpdate],
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut wrote = false;
        let events = write_tx(&mut self.conn, |conn| {
            // Two replicas driving one node's agent write its rows one after the other.
            pg_lock(conn, &format!("node_states:{node}"))?;
            let mut changes = Vec::new();
            for u in updates {
                let old: Option<(String, String)> = node_states::table
                    .find((&u.reservation_id, node))
                    .select((node_states::state, node_states::error))
                    .load(conn)?
                    .into_iter()
                    .next();
                match &old {
                    Some((state, error)) if *state == u.state.as_str() => {
                        // The same state: only a new wording of why (an agent that is
                        // down may fail differently each time) is kept, without an event.
                        if *error != u.error {
                            diesel::update(node_states::table.find((&u.reservation_id, node)))
                                .set(node_states::error.eq(&u.error))
                                .execute(conn)?;
                            wrote = true;
                        }
                        continue;
                    }
                    _ => {}
                }
                if old.is_some() {
                    diesel::update(node_states::table.find((&u.reservation_id, node)))
                        .set((
                            node_states::state.eq(u.state.as_str()),
                            node_states::error.eq(&u.error),
                            node_states::updated_ms.eq(ms(now)),
                        ))
                        .execute(conn)?;
                } else {
                    diesel::insert_into(node_states::table)
                        .values((
                            node_states::reservation_id.eq(&u.reservation_id),
                            node_states::node.eq(node),
                            node_states::state.eq(u.state.as_str()),
                            node_states::error.eq(&u.error),
                            node_states::updated_ms.eq(ms(now)),
                        ))
                        .execute(conn)?;
                }
                wrote = true;
                let detail = match u.state {
                    NodeState::Applied => format!("{node}: the agent has the circuit"),
                    NodeState::Removed => format!("{node}: the agent removed the circuit"),
                    NodeState::Failed => format!("{node}: {}", u.error),
                };
                let change = Change {
                    machine: Machine::Node,
                    from: old.map_or_else(|| "none".to_string(), |(s, _)| s),
                    to: u.state.as_str().to_string(),
                    effective_at: now,
                    detail,
                };
                changes.push((&u.reservation_id, change));
            }
            // Events last: their lock is the last one a transaction takes.
            let mut events = Vec::new();
            for (id, change) in &changes {
                events.extend(insert_events(conn, id, std::slice::from_ref(change), now)?);
            }
            Ok::<_, StoreError>(events)
        })?;
        if wrote {
            self.committed_one();
        }
        Ok(events)
    }

    /// Events for reservation `id` that change none of its states (what a segment's
    /// domain reports of its nodes, for the circuit's watchers).
    pub fn insert_events(
        &mut self,
        id: &str,
        changes: &[Change],
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let events = write_tx(&mut self.conn, |conn| insert_events(conn, id, changes, now))?;
        self.committed_one();
        Ok(events)
    }
}
