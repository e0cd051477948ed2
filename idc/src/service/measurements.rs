//! Measurements of circuits, stored with their reservations.

use sluice_model::{Error, Measurement};

use super::{Idc, store_error};

impl Idc {
    /// Stores a measurement; returns it with its sequence number.
    pub async fn record_measurement(&self, mut x: Measurement) -> Result<Measurement, Error> {
        self.blocking(move |inner| {
            x.seq = inner
                .store
                .writer()
                .append_measurement(&x)
                .map_err(store_error)?;
            Ok(x)
        })
        .await
    }

    /// Every measurement of reservation `id`, or of every occurrence of series `id`,
    /// oldest first.
    pub async fn measurements(&self, id: &str) -> Result<Vec<Measurement>, Error> {
        let id = id.to_string();
        self.blocking(move |inner| inner.store.measurements(&id).map_err(store_error))
            .await
    }
}
