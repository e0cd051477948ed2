//! Measurements of circuits (`sluice verify`, and the checks at occurrence starts).

use diesel::prelude::*;
use sluice_model::{Figures, Mbps, Measurement, MeasurementKind, Thresholds, Verdict, VerifyEach};

use super::rows::{from_ms, ms};
use super::schema::measurements as m;
use super::schema::verify_each as ve;
use super::{Store, StoreError, Writer, pg_lock, write_tx};

#[derive(Queryable, Selectable)]
#[diesel(table_name = m)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
struct Row {
    seq: i64,
    reservation_id: String,
    series_id: Option<String>,
    occurrence: Option<i32>,
    at_ms: i64,
    kind: String,
    who: String,
    booked_mbps: i64,
    duration_ms: i64,
    probes_sent: i32,
    probes_received: i32,
    rtt_min_us: i64,
    rtt_avg_us: i64,
    rtt_max_us: i64,
    forward_avg_us: i64,
    backward_avg_us: i64,
    jitter_us: i64,
    throughput_mbps: f64,
    ip_throughput_mbps: f64,
    min_throughput_ratio: f64,
    max_loss: f64,
    max_rtt_ms: Option<f64>,
    verdict: String,
    reasons: String,
}

impl Row {
    fn into_model(self) -> Result<Measurement, StoreError> {
        let bad = |what: &str, v: &str| {
            StoreError::Corrupt(format!("measurement {}: {what} {v:?}", self.seq))
        };
        Ok(Measurement {
            seq: self.seq as u64,
            kind: MeasurementKind::parse(&self.kind).ok_or_else(|| bad("kind", &self.kind))?,
            verdict: Verdict::parse(&self.verdict).ok_or_else(|| bad("verdict", &self.verdict))?,
            at: from_ms(self.at_ms)?,
            reservation_id: self.reservation_id,
            series_id: self.series_id,
            occurrence: self.occurrence.map(|o| o as u32),
            who: self.who,
            booked: Mbps(self.booked_mbps as u64),
            duration_ms: self.duration_ms as u64,
            figures: Figures {
                probes_sent: self.probes_sent as u32,
                probes_received: self.probes_received as u32,
                rtt_min_us: self.rtt_min_us as u64,
                rtt_avg_us: self.rtt_avg_us as u64,
                rtt_max_us: self.rtt_max_us as u64,
                forward_avg_us: self.forward_avg_us as u64,
                backward_avg_us: self.backward_avg_us as u64,
                jitter_us: self.jitter_us as u64,
                throughput_mbps: self.throughput_mbps,
                ip_throughput_mbps: self.ip_throughput_mbps,
            },
            thresholds: Thresholds {
                min_throughput_ratio: self.min_throughput_ratio,
                max_loss: self.max_loss,
                max_rtt_ms: self.max_rtt_ms,
            },
            reasons: self
                .reasons
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

impl Store {
    /// The measurements of reservation `id`, or of every occurrence of series `id`,
    /// oldest first.
    pub fn measurements(&self, id: &str) -> Result<Vec<Measurement>, StoreError> {
        let mut conn = self.reader()?;
        m::table
            .filter(m::reservation_id.eq(id).or(m::series_id.eq(id)))
            .order(m::seq.asc())
            .select(Row::as_select())
            .load(&mut conn)?
            .into_iter()
            .map(Row::into_model)
            .collect()
    }
}

impl Store {
    /// The check `target` (a reservation or series) asked for at each start, if any.
    pub fn verify_each(&self, target: &str) -> Result<Option<VerifyEach>, StoreError> {
        let mut conn = self.reader()?;
        let rows: Vec<(i64, i32, f64, f64, Option<f64>)> = ve::table
            .filter(ve::target.eq(target))
            .select((
                ve::duration_ms,
                ve::probes,
                ve::min_throughput_ratio,
                ve::max_loss,
                ve::max_rtt_ms,
            ))
            .load(&mut conn)?;
        Ok(rows.into_iter().next().map(
            |(duration_ms, probes, min_throughput_ratio, max_loss, max_rtt_ms)| VerifyEach {
                duration_ms: duration_ms as u64,
                probes: probes as u32,
                thresholds: Thresholds {
                    min_throughput_ratio,
                    max_loss,
                    max_rtt_ms,
                },
            },
        ))
    }
}

impl Writer<'_> {
    /// Records that `target` asks for `v` at each start.
    pub fn set_verify_each(&mut self, target: &str, v: &VerifyEach) -> Result<(), StoreError> {
        write_tx(&mut self.conn, |conn| {
            // Two replicas setting the same target: one after the other.
            pg_lock(conn, &format!("verify_each:{target}"))?;
            diesel::delete(ve::table.find(target)).execute(conn)?;
            diesel::insert_into(ve::table)
                .values((
                    ve::target.eq(target),
                    ve::duration_ms.eq(v.duration_ms as i64),
                    ve::probes.eq(v.probes as i32),
                    ve::min_throughput_ratio.eq(v.thresholds.min_throughput_ratio),
                    ve::max_loss.eq(v.thresholds.max_loss),
                    ve::max_rtt_ms.eq(v.thresholds.max_rtt_ms),
                ))
                .execute(conn)?;
            Ok(())
        })?;
        self.committed_one();
        Ok(())
    }

    /// Appends one measurement (its `seq` is given by the store).
    pub fn append_measurement(&mut self, x: &Measurement) -> Result<u64, StoreError> {
        let f = &x.figures;
        let seq: i64 = diesel::insert_into(m::table)
            .values((
                m::reservation_id.eq(&x.reservation_id),
                m::series_id.eq(&x.series_id),
                m::occurrence.eq(x.occurrence.map(|o| o as i32)),
                m::at_ms.eq(ms(x.at)),
                m::kind.eq(x.kind.as_str()),
                m::who.eq(&x.who),
                m::booked_mbps.eq(x.booked.0 as i64),
                m::duration_ms.eq(x.duration_ms as i64),
                m::probes_sent.eq(f.probes_sent as i32),
                m::probes_received.eq(f.probes_received as i32),
                m::rtt_min_us.eq(f.rtt_min_us as i64),
                m::rtt_avg_us.eq(f.rtt_avg_us as i64),
                m::rtt_max_us.eq(f.rtt_max_us as i64),
                m::forward_avg_us.eq(f.forward_avg_us as i64),
                m::backward_avg_us.eq(f.backward_avg_us as i64),
                m::jitter_us.eq(f.jitter_us as i64),
                m::throughput_mbps.eq(f.throughput_mbps),
                m::ip_throughput_mbps.eq(f.ip_throughput_mbps),
                m::min_throughput_ratio.eq(x.thresholds.min_throughput_ratio),
                m::max_loss.eq(x.thresholds.max_loss),
                m::max_rtt_ms.eq(x.thresholds.max_rtt_ms),
                m::verdict.eq(x.verdict.as_str()),
                m::reasons.eq(x.reasons.join("\n")),
            ))
            .returning(m::seq)
            .get_result(&mut *self.conn)?;
        self.committed_one();
        Ok(seq as u64)
    }
}
