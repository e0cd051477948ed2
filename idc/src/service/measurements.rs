//! Measurements of circuits, stored with their reservations.

use sluice_model::{Error, Measurement, Reservation, VerifyEach};

use super::{Idc, store_error};

impl Idc {
    /// Stores a measurement; returns it with its sequence number.
    pub async fn record_measurement(&self, mut x: Measurement) -> Result<Measurement, Error> {
        self.blocking(move |inner| {
            x.seq = inner
                .store
                .writer()
                .and_then(|mut w| w.append_measurement(&x))
                .map_err(store_error)?;
            Ok(x)
        })
        .await
    }

    /// Records that `target` (a reservation or series) asks for `v` at each start.
    pub async fn set_verify_each(&self, target: &str, v: VerifyEach) -> Result<(), Error> {
        let target = target.to_string();
        self.blocking(move |inner| {
            inner
                .store
                .writer()
                .and_then(|mut w| w.set_verify_each(&target, &v))
                .map_err(store_error)
        })
        .await
    }

    /// The check reservation `r` asked for at each start (itself, or its series).
    pub async fn verify_each_of(&self, r: &Reservation) -> Result<Option<VerifyEach>, Error> {
        let targets: Vec<String> = std::iter::once(r.id.clone())
            .chain(r.series.as_ref().map(|s| s.id.clone()))
            .collect();
        self.blocking(move |inner| {
            for t in &targets {
                if let Some(v) = inner.store.verify_each(t).map_err(store_error)? {
                    return Ok(Some(v));
                }
            }
            Ok(None)
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
