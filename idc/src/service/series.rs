//! Recurring bookings: admitting a series all or nothing (or, when asked, without the
//! occurrences that do not fit), committing it, reading it and cancelling all of it, one
//! occurrence, or everything from a date on. Each admitted occurrence is an ordinary
//! reservation, so the scheduler provisions and releases it like any other.

use sluice_model::{OccurrenceConflict, Recurrence, Series, SeriesRef, SkippedOccurrence};
use sluice_pce::{OccurrencePlan, plan_series};

use super::*;
use crate::store::{HeldOccurrence, Save, Writer};

/// What a series request asks beyond the criteria of one occurrence.
#[derive(Debug, Clone)]
pub struct SeriesAsk {
    /// End points, bandwidth, ERO, description, automatic mode; the window is each
    /// occurrence's own.
    pub criteria: Criteria,
    pub recurrence: Recurrence,
    /// Every occurrence on one path (the default), or the best path for each.
    pub same_path: bool,
    /// Book the occurrences that fit and record the others as skipped, instead of
    /// booking nothing.
    pub skip_conflicts: bool,
}

/// What a series modification changes on each occurrence it touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeriesChange {
    pub bw: Option<Mbps>,
    pub bw_reverse: Option<Mbps>,
    /// Moves each occurrence by this much (e.g. +1h: 14:00-18:00 becomes 15:00-19:00).
    pub shift: Option<TimeDelta>,
    /// Each occurrence's new length.
    pub length: Option<TimeDelta>,
}

/// Which occurrences an operation on a series touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesScope {
    All,
    One(u32),
    /// Every occurrence that starts at or after this instant.
    From(DateTime<Utc>),
}

impl SeriesScope {
    fn takes(&self, r: &Reservation) -> bool {
        match *self {
            SeriesScope::All => true,
            SeriesScope::One(n) => r.series.as_ref().is_some_and(|s| s.occurrence == n),
            SeriesScope::From(t) => r.window.start >= t,
        }
    }
}

impl Idc {
    /// Holds every occurrence of a series in one transaction, or none. When some do not
    /// fit, the error (00705, 00704 or 00403) lists each with why and what would fit
    /// instead, unless `skip_conflicts` books the rest.
    pub async fn reserve_series(
        &self,
        owner: &str,
        ask: SeriesAsk,
    ) -> Result<(Series, Vec<Reservation>), Error> {
        let occurrences = sluice_scheduler::recurrence::occurrences(&ask.recurrence)?;
        let mut criteria = ask.criteria.clone();
        criteria.window = occurrences[0].window;
        let req = sluice_pce::resolve(&self.inner.topo, &criteria)?;
        let windows: Vec<(u32, TimeWindow)> =
            occurrences.iter().map(|o| (o.number, o.window)).collect();
        let owner = owner.to_string();
        let (series, held) = self
            .inline(move |inner| inner.reserve_series(owner, ask, criteria, req, windows))
            .await?;
        info!(series.id = %series.id, occurrences = held.len(), skipped = series.skipped.len(), "series held");
        Ok((series, held))
    }

    /// Commits every held occurrence of a series, in one durable transaction.
    pub async fn commit_series(&self, id: &str) -> Result<(Series, Vec<Reservation>), Error> {
        let id = id.to_string();
        self.inline(move |inner| {
            inner.update_series(&id, SeriesScope::All, &mut |r, now| {
                // Held and still live: a cancelled occurrence stays as it is.
                if r.states.reservation == ReservationState::ReserveHeld
                    && r.states.lifecycle == sluice_model::LifecycleState::Created
                {
                    r.commit(now)
                } else {
                    Ok(Vec::new())
                }
            })
        })
        .await
    }

    /// Terminates the occurrences in `scope` that are still live, in one durable
    /// transaction: the whole series, one occurrence, or everything from a date on.
    pub async fn cancel_series(
        &self,
        id: &str,
        scope: SeriesScope,
    ) -> Result<(Series, Vec<Reservation>), Error> {
        let id = id.to_string();
        self.inline(move |inner| {
            inner.update_series(&id, scope, &mut |r, now| {
                if r.states.lifecycle == sluice_model::LifecycleState::Created {
                    r.terminate(now)
                } else {
                    Ok(Vec::new())
                }
            })
        })
        .await
    }

    /// Gives the committed occurrences in `scope` that have not ended a new bandwidth
    /// and/or moves or stretches their windows, on their own paths, in one durable
    /// transaction: all of them, or, if any cannot take it, none (the error lists those,
    /// as for a refused series).
    pub async fn modify_series(
        &self,
        id: &str,
        scope: SeriesScope,
        change: SeriesChange,
    ) -> Result<(Series, Vec<Reservation>), Error> {
        if change == SeriesChange::default() {
            return Err(Error::field(
                ErrorCode::MissingParameter,
                "capacity_mbps",
                "modifying a series needs a new capacity, a shift or a length",
            ));
        }
        if change.length.is_some_and(|l| l <= TimeDelta::zero()) {
            return Err(Error::invalid("length", "the length must be positive"));
        }
        let id = id.to_string();
        self.inline(move |inner| inner.modify_series(&id, scope, change))
            .await
    }

    pub async fn get_series(&self, id: &str) -> Result<(Series, Vec<Reservation>), Error> {
        let id = id.to_string();
        self.blocking(move |inner| {
            inner
                .store
                .get_series(&id)
                .map_err(store_error)?
                .ok_or_else(|| series_not_found(&id))
        })
        .await
    }
}

fn series_not_found(id: &str) -> Error {
    Error::field(
        ErrorCode::ReservationNonexistent,
        "id",
        format!("no series {id}"),
    )
}

/// The error for a series refused because some occurrences do not fit: the code of the
/// first, and each one listed.
fn refusal(plans: &[OccurrencePlan], topo: &Topology) -> Error {
    let conflicts: Vec<OccurrenceConflict> = plans
        .iter()
        .filter_map(|p| {
            let c = p.outcome.as_ref().err()?;
            Some(OccurrenceConflict {
                number: p.number,
                start: p.window.start,
                end: p.window.end,
                reason: Box::new(c.error.clone()),
                alternative: c
                    .alternative
                    .as_ref()
                    .map(|a| a.path_hops(topo).into_iter().map(|h| h.to).collect()),
            })
        })
        .collect();
    let first = &conflicts[0];
    let listed: Vec<String> = conflicts
        .iter()
        .map(|c| format!("#{} ({})", c.number, c.start.format("%Y-%m-%d %H:%MZ")))
        .collect();
    let mut e = Error::field(
        first.reason.code,
        "recurrence",
        format!(
            "{} of {} occurrences do not fit, so nothing was booked (skip_conflicts books the rest): {}",
            conflicts.len(),
            plans.len(),
            listed.join("; ")
        ),
    );
    e.conflicts = conflicts;
    e
}

impl Inner {
    fn reserve_series(
        &self,
        owner: String,
        ask: SeriesAsk,
        criteria: Criteria,
        req: PathRequest,
        windows: Vec<(u32, TimeWindow)>,
    ) -> Result<(Series, Vec<Reservation>), Error> {
        // The writer first: planning a series takes long enough that it had better see
        // the bookings it is checked against in the store a moment later.
        let mut writer = self.store.writer().map_err(store_error)?;
        let now = self.clock.now();
        criteria.check(now)?;
        let mut replans = 0;
        loop {
            let plans = plan_series(&self.read_index(), &req, &windows, now, ask.same_path);
            let fitting = plans.iter().filter(|p| p.fits()).count();
            if fitting < plans.len() && (!ask.skip_conflicts || fitting == 0) {
                return Err(refusal(&plans, &self.topo));
            }
            let id = self.new_id();
            let series = Series {
                id: id.clone(),
                owner: owner.clone(),
                description: criteria.description.clone(),
                recurrence: ask.recurrence.clone(),
                same_path: ask.same_path,
                skipped: plans
                    .iter()
                    .filter_map(|p| {
                        let c = p.outcome.as_ref().err()?;
                        Some(SkippedOccurrence {
                            number: p.number,
                            window: p.window,
                            code: c.error.code.as_str().to_string(),
                            reason: c.error.message.clone(),
                        })
                    })
                    .collect(),
                created_at: now,
            };
            let mut held = Vec::with_capacity(fitting);
            let mut usages = Vec::with_capacity(fitting);
            for p in &plans {
                let Ok(plan) = &p.outcome else { continue };
                let occurrence = Criteria {
                    window: p.window,
                    ..criteria.clone()
                };
                let (mut r, changes) = Reservation::held(
                    format!("{id}-{:03}", p.number),
                    owner.clone(),
                    &occurrence,
                    plan.src_vlan,
                    plan.dst_vlan,
                    plan.path_hops(&self.topo),
                    now,
                    self.hold_timeout,
                );
                r.series = Some(SeriesRef {
                    id: id.clone(),
                    occurrence: p.number,
                });
                let usage = plan.usage(r.bw, r.bw_reverse, p.window, r.hold_expires_at);
                held.push(HeldOccurrence {
                    next_deadline: sluice_scheduler::next_deadline(&r, now),
                    bookings: self.bookings(&usage),
                    reservation: r,
                    changes,
                });
                usages.push(usage);
            }
            match writer.insert_series(&series, &held, now) {
                Ok(events) => {
                    {
                        let mut index = self.write_index();
                        for (h, u) in held.iter().zip(&usages) {
                            index.insert(&h.reservation.id, u);
                        }
                    }
                    drop(writer);
                    self.publish(events);
                    self.schedule(held.iter().filter_map(|h| h.next_deadline).min());
                    return Ok((series, held.into_iter().map(|h| h.reservation).collect()));
                }
                // The index missed a booking the store has: bring everything the plans
                // touched up to date and plan again.
                Err(StoreError::Conflict(c)) if replans < STALE_REPLANS => {
                    self.stale_index(&id, &c);
                    for u in &usages {
                        self.refresh_index(u, now)?;
                    }
                    replans += 1;
                }
                Err(e) => return Err(store_error(e)),
            }
        }
    }

    fn modify_series(
        &self,
        id: &str,
        scope: SeriesScope,
        change: SeriesChange,
    ) -> Result<(Series, Vec<Reservation>), Error> {
        retrying_stale(|| self.modify_series_once(id, scope, change))
    }

    fn modify_series_once(
        &self,
        id: &str,
        scope: SeriesScope,
        change: SeriesChange,
    ) -> Result<(Series, Vec<Reservation>), Error> {
        let SeriesChange {
            bw,
            bw_reverse,
            shift,
            length,
        } = change;
        let mut writer = self.store.writer().map_err(store_error)?;
        let now = self.clock.now();
        let (series, mut all) = writer
            .load_series(id)
            .map_err(store_error)?
            .ok_or_else(|| series_not_found(id))?;
        let mut targets = Vec::new();
        let mut conflicts = Vec::new();
        let mut planned = Vec::new();
        for (i, r) in all.iter_mut().enumerate() {
            if !scope.takes(r) {
                continue;
            }
            let mut changes = sluice_scheduler::run_due(r, now);
            if r.check_modifiable(now).is_err() {
                // Held, ended, cancelled: not this operation's.
                continue;
            }
            let number = r.series.as_ref().map_or(0, |s| s.occurrence);
            let new_start = r.window.start + shift.unwrap_or_default();
            let new_end = new_start + length.unwrap_or(r.window.end - r.window.start);
            if new_start != r.window.start {
                if r.window.start <= now {
                    return Err(Error::invalid(
                        "shift",
                        format!("occurrence {number} has started; its start can no longer move"),
                    ));
                }
                check_start(new_start, now)?;
            }
            let window = TimeWindow::new(new_start, new_end)?;
            if window.end <= now {
                return Err(Error::invalid(
                    "length",
                    format!("occurrence {number} would end in the past"),
                ));
            }
            let (new_bw, new_rev) = new_rates(r, bw, bw_reverse);
            let (plan, req) = self.new_version_request(r, new_bw, new_rev, window)?;
            match sluice_pce::check_plan(&self.read_index(), &plan, &req, now) {
                Ok(()) => {
                    changes.extend(r.apply_version(new_bw, new_rev, window, now)?);
                    let usage = plan.usage(new_bw, new_rev, window, None);
                    targets.push((i, changes));
                    planned.push((self.bookings(&usage), usage));
                }
                Err(error) => conflicts.push(OccurrenceConflict {
                    number,
                    start: window.start,
                    end: window.end,
                    reason: Box::new(error),
                    alternative: None,
                }),
            }
        }
        if !conflicts.is_empty() {
            let listed: Vec<String> = conflicts.iter().map(|c| format!("#{}", c.number)).collect();
            let mut e = Error::field(
                conflicts[0].reason.code,
                "capacity_mbps",
                format!(
                    "{} occurrences cannot take the change on their paths, so nothing was changed: {}",
                    conflicts.len(),
                    listed.join(", ")
                ),
            );
            e.conflicts = conflicts;
            return Err(e);
        }
        if targets.is_empty() {
            return Err(Error::invalid(
                "occurrence",
                format!("series {id} has no committed occurrence ahead in that scope"),
            ));
        }
        let saves: Vec<Save<'_>> = targets
            .iter()
            .zip(&planned)
            .map(|((i, changes), (bookings, _))| Save {
                reservation: &all[*i],
                next_deadline: sluice_scheduler::next_deadline(&all[*i], now),
                bookings: BookingChange::Replace(bookings),
                changes: changes.clone(),
            })
            .collect();
        self.save_series(writer, &saves, now, |index| {
            for ((i, _), (_, usage)) in targets.iter().zip(&planned) {
                index.insert(&all[*i].id, usage);
            }
        })?;
        Ok((series, all))
    }

    /// Applies `op` to the occurrences of series `id` in `scope`, all in one durable
    /// transaction; returns the series with every occurrence as it now stands.
    fn update_series(
        &self,
        id: &str,
        scope: SeriesScope,
        op: &mut Operation<'_>,
    ) -> Result<(Series, Vec<Reservation>), Error> {
        retrying_stale(|| self.update_series_once(id, scope, op))
    }

    fn update_series_once(
        &self,
        id: &str,
        scope: SeriesScope,
        op: &mut Operation<'_>,
    ) -> Result<(Series, Vec<Reservation>), Error> {
        let mut writer = self.store.writer().map_err(store_error)?;
        let now = self.clock.now();
        let (series, mut all) = writer
            .load_series(id)
            .map_err(store_error)?
            .ok_or_else(|| series_not_found(id))?;
        if let SeriesScope::One(n) = scope
            && !all.iter().any(|r| scope.takes(r))
        {
            return Err(Error::invalid(
                "occurrence",
                format!("series {id} has no booked occurrence {n}"),
            ));
        }
        let mut touched = Vec::new();
        for (i, r) in all.iter_mut().enumerate() {
            if !scope.takes(r) {
                continue;
            }
            let was_held = r.states.reservation == ReservationState::ReserveHeld;
            let hold_until = r.hold_expires_at;
            let had_resources = r.holds_resources(now) || was_held;
            let mut changes = sluice_scheduler::run_due(r, now);
            changes.extend(op(r, now)?);
            if changes.is_empty() {
                continue;
            }
            let released = had_resources && !r.holds_resources(now);
            let committed_now = was_held && r.committed_version.is_some();
            touched.push((i, changes, released, committed_now, hold_until));
        }
        // As in `apply`: a hold committed near its expiry re-checks its room.
        let confirms = touched
            .iter()
            .map(|(i, _, released, committed_now, hold_until)| {
                self.confirmation(hold_until, &all[*i], *committed_now && !*released, now)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let saves: Vec<Save<'_>> = touched
            .iter()
            .zip(&confirms)
            .map(|((i, changes, released, _, _), confirm)| Save {
                reservation: &all[*i],
                next_deadline: sluice_scheduler::next_deadline(&all[*i], now),
                bookings: match (confirm, *released) {
                    (_, true) => BookingChange::Delete,
                    (Some(own), false) => BookingChange::Confirm(own),
                    (None, false) => BookingChange::Keep,
                },
                changes: changes.clone(),
            })
            .collect();
        self.save_series(writer, &saves, now, |index| {
            for (i, _, released, committed_now, _) in &touched {
                if *released {
                    index.remove(&all[*i].id);
                } else if *committed_now {
                    index.commit(&all[*i].id);
                }
            }
        })?;
        Ok((series, all))
    }

    /// Writes the saves of a series operation in one transaction and brings the index
    /// along (`update`, with the writer still held), then makes it durable and tells
    /// the watchers and the scheduler.
    fn save_series(
        &self,
        mut writer: Writer<'_>,
        saves: &[Save<'_>],
        now: DateTime<Utc>,
        update: impl FnOnce(&mut Index),
    ) -> Result<(), Error> {
        let deadline = saves.iter().filter_map(|s| s.next_deadline).min();
        let events = writer.save_all(saves, now).map_err(store_error)?;
        update(&mut self.write_index());
        drop(writer);
        self.store.sync().map_err(store_error)?;
        self.publish(events);
        self.schedule(deadline);
        Ok(())
    }
}
