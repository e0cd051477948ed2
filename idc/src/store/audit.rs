//! The audit log: every state-changing request and how it ended.

use diesel::prelude::*;
pub use sluice_model::AuditRecord;

use super::rows::{from_ms, ms};
use super::schema::audit;
use super::{Store, StoreError, Writer};

/// Which records to list: all of one caller, or of one reservation, after `after`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub who: Option<String>,
    pub target: Option<String>,
    pub after: u64,
    pub limit: i64,
}

impl Store {
    /// Records after `f.after`, oldest first, at most `f.limit`.
    pub fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conn = self.reader()?;
        let mut q = audit::table
            .filter(audit::seq.gt(f.after as i64))
            .into_boxed();
        if let Some(who) = &f.who {
            q = q.filter(audit::who.eq(who.clone()));
        }
        if let Some(target) = &f.target {
            q = q.filter(audit::target.eq(target.clone()));
        }
        q.order(audit::seq.asc())
            .limit(f.limit)
            .select((
                audit::seq,
                audit::at_ms,
                audit::who,
                audit::action,
                audit::target,
                audit::result,
                audit::detail,
            ))
            .load::<(i64, i64, String, String, String, String, String)>(&mut conn)?
            .into_iter()
            .map(|(seq, at, who, action, target, result, detail)| {
                Ok(AuditRecord {
                    seq: seq as u64,
                    at: from_ms(at)?,
                    who,
                    action,
                    target,
                    result,
                    detail,
                })
            })
            .collect()
    }
}

impl Writer<'_> {
    /// Appends one record (its `seq` is given by the store).
    pub fn append_audit(&mut self, r: &AuditRecord) -> Result<u64, StoreError> {
        let seq: i64 = diesel::insert_into(audit::table)
            .values((
                audit::at_ms.eq(ms(r.at)),
                audit::who.eq(&r.who),
                audit::action.eq(&r.action),
                audit::target.eq(&r.target),
                audit::result.eq(&r.result),
                audit::detail.eq(&r.detail),
            ))
            .returning(audit::seq)
            .get_result(&mut *self.conn)?;
        self.committed_one();
        Ok(seq as u64)
    }
}
