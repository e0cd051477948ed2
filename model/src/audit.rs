//! One state-changing request, as the audit log keeps it.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Given by the store.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// The user, or `peer:<domain>` for another domain's IDC.
    pub who: String,
    /// The request (`reserve`, `commit`, `hold-segment`, ...).
    pub action: String,
    /// The reservation or series it was about (for a reserve that succeeded: the new id).
    pub target: String,
    /// `ok`, or the error's stable code.
    pub result: String,
    /// The error's message, if it failed.
    pub detail: String,
}
