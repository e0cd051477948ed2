//! What the node agents answered, per reservation and node: recorded with the
//! reservation, and sent to its watchers (and so to the aggregator of a segment) as
//! events of machine `node`.

use sluice_model::{Change, Error};

use super::{Idc, store_error};
use crate::store::{NodeStateRecord, NodeUpdate};

impl Idc {
    /// Records what `node`'s agent answered for the circuits it was sent or had.
    pub fn record_node_states(&self, node: &str, updates: &[NodeUpdate]) -> Result<(), Error> {
        if updates.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let events = self.may_block(|| {
            inner
                .store
                .writer()
                .and_then(|mut w| w.record_node_states(node, updates, inner.clock.now()))
                .map_err(store_error)
        })?;
        inner.publish(events);
        Ok(())
    }

    /// Events for reservation `id` that change none of its states, for its watchers.
    pub fn record_events(&self, id: &str, changes: &[Change]) -> Result<(), Error> {
        let inner = &self.inner;
        let events = self.may_block(|| {
            inner
                .store
                .writer()
                .and_then(|mut w| w.insert_events(id, changes, inner.clock.now()))
                .map_err(store_error)
        })?;
        inner.publish(events);
        Ok(())
    }

    /// Reservation `id` on each node whose agent answered for it.
    pub fn node_states(&self, id: &str) -> Result<Vec<NodeStateRecord>, Error> {
        self.inner.store.node_states(id).map_err(store_error)
    }

    /// The reservations `node`'s agent has or may have.
    pub fn circuits_on_node(&self, node: &str) -> Result<Vec<String>, Error> {
        self.inner.store.circuits_on_node(node).map_err(store_error)
    }
}
