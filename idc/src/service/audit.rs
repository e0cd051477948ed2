//! The audit log: who asked for which change, when, and how it ended.

use sluice_model::Error;
use tracing::error;

use super::{Idc, store_error};
use crate::store::{AuditFilter, AuditRecord};

impl Idc {
    /// Records a state-changing request and its result. A record that cannot be
    /// written does not fail the request (it already happened); it is logged.
    pub fn audit_request(&self, who: &str, action: &str, target: &str, failed: Option<&Error>) {
        let record = AuditRecord {
            seq: 0,
            at: self.inner.clock.now(),
            who: who.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            result: failed.map_or("ok", |e| e.code.as_str()).to_string(),
            detail: failed.map(|e| e.message.clone()).unwrap_or_default(),
        };
        let write = || {
            self.inner
                .store
                .writer()
                .and_then(|mut w| w.append_audit(&record))
        };
        if let Err(e) = self.may_block(write) {
            error!(who, action, target, error = %e, "audit record not written");
        }
    }

    /// Recorded requests, oldest first.
    pub async fn audit_log(&self, f: AuditFilter) -> Result<Vec<AuditRecord>, Error> {
        self.blocking(move |inner| inner.store.audit(&f).map_err(store_error))
            .await
    }
}
