//! `sluice verify`: a circuit measured over itself by the agents of its end nodes. The
//! far end's agent opens a reflector on the circuit, the near end's measures against
//! it (TWAMP-Light probes, then a TCP stream), and the result is judged against the
//! booking and stored with the reservation (and its occurrence).

use std::time::Duration;

use sluice_model::dataplane::node_circuits;
use sluice_model::measurement::judge;
use sluice_model::{
    Error, ErrorCode, Figures, Measurement, MeasurementKind, Reservation, Thresholds, Verdict,
};
use sluice_proto::v1;
use tracing::{info, warn};

use crate::agents::AgentDriver;

/// The longest throughput stream a verify may ask for.
pub const MOST_DURATION: Duration = Duration::from_secs(60);
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
pub const DEFAULT_PROBES: u32 = 100;
/// The most probes a verify may send (10 ms apart: 100 s).
pub const MOST_PROBES: u32 = 10_000;
/// Between probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// What to measure and how.
#[derive(Debug, Clone)]
pub struct VerifyAsk {
    /// A reservation, or a series with `occurrence`.
    pub id: String,
    pub occurrence: Option<u32>,
    /// Of the throughput stream; zero: probes only.
    pub duration: Duration,
    pub probes: u32,
    pub thresholds: Thresholds,
    pub who: String,
    pub kind: MeasurementKind,
}

impl AgentDriver {
    /// The reservation `ask` names: the reservation itself, or the occurrence of a series.
    async fn measured(&self, ask: &VerifyAsk) -> Result<Reservation, Error> {
        let idc = self.idc();
        let Some(n) = ask.occurrence else {
            return idc.get(&ask.id).await;
        };
        let (_, occurrences) = idc.get_series(&ask.id).await?;
        occurrences
            .into_iter()
            .find(|o| o.series.as_ref().is_some_and(|s| s.occurrence == n))
            .ok_or_else(|| {
                Error::invalid(
                    "occurrence",
                    format!("series {} has no occurrence {n}", ask.id),
                )
            })
    }

    /// Measures and stores. A request that cannot be measured at all (no such circuit,
    /// not up now, no agent at an end) is an error and stores nothing; a measurement
    /// that fails on the way (an agent not reached, the reflector silent) is stored with
    /// the verdict `error` and why.
    pub async fn verify(&self, ask: VerifyAsk) -> Result<Measurement, Error> {
        if ask.duration > MOST_DURATION {
            return Err(Error::invalid(
                "duration_ms",
                format!("a verify runs at most {} s", MOST_DURATION.as_secs()),
            ));
        }
        if ask.probes > MOST_PROBES {
            return Err(Error::invalid(
                "probes",
                format!("a verify sends at most {MOST_PROBES} probes"),
            ));
        }
        let r = self.measured(&ask).await?;
        let idc = self.idc();
        let now = idc.now();
        if !r.data_plane_should_be_active(now) {
            return Err(Error::field(
                ErrorCode::InvalidTransition,
                "id",
                format!(
                    "{} is not up now (it is {}): verify measures a circuit while its data plane is active",
                    r.id,
                    r.summary()
                ),
            ));
        }
        let hops = node_circuits(idc.topology(), &r).ok_or_else(|| {
            Error::invalid(
                "id",
                format!(
                    "{} crosses domains: verify each domain's segment in its own domain",
                    r.id
                ),
            )
        })?;
        let (near, far) = (
            hops.first().map(|h| h.0.clone()).unwrap_or_default(),
            hops.last().map(|h| h.0.clone()).unwrap_or_default(),
        );
        if hops.len() < 2 {
            // Both ends would sit on one cross-connect, and the stream would cross none
            // of the circuit's queues: a figure that says nothing.
            return Err(Error::field(
                ErrorCode::NotImplemented,
                "id",
                format!(
                    "both ends of {} are on node {near}: a measurement there would not cross the circuit's queues",
                    r.id
                ),
            ));
        }
        let Some(_measuring) = self.begin_measuring(&r.id) else {
            return Err(Error::field(
                ErrorCode::InvalidTransition,
                "id",
                format!(
                    "{} is being measured already; try again when that ends",
                    r.id
                ),
            ));
        };
        let mut clients = Vec::new();
        for node in [&near, &far] {
            clients.push(
                self.long_client(node)
                    .map_err(|e| Error::invalid("id", format!("cannot measure {}: {e}", r.id)))?,
            );
        }
        let (mut a, mut z) = (clients[0].clone(), clients[1].clone());
        let probes = if ask.probes == 0 {
            DEFAULT_PROBES
        } else {
            ask.probes
        };
        // Everything the near end does, with room for connecting and the sink's report.
        let probing = PROBE_INTERVAL * probes + Duration::from_secs(2);
        let measuring = probing + ask.duration + Duration::from_secs(30);
        let figures = async {
            let far_end = bounded(
                Duration::from_secs(15),
                z.reflect(v1::ReflectRequest {
                    circuit_id: r.id.clone(),
                    lease_ms: (measuring + Duration::from_secs(30)).as_millis() as u32,
                }),
            )
            .await
            .map_err(|e| format!("reflector at {far}: {e}"))?;
            let measured = bounded(
                measuring,
                a.measure(v1::MeasureRequest {
                    circuit_id: r.id.clone(),
                    reflector_address: far_end.address.clone(),
                    twamp_port: far_end.twamp_port,
                    sink_port: far_end.sink_port,
                    probes,
                    probe_interval_ms: PROBE_INTERVAL.as_millis() as u32,
                    duration_ms: ask.duration.as_millis() as u32,
                    skip_throughput: ask.duration.is_zero(),
                }),
            )
            .await
            .map_err(|e| format!("measuring from {near}: {e}"));
            if let Err(e) = bounded(
                Duration::from_secs(15),
                z.end_reflect(v1::EndReflectRequest {
                    session: far_end.session,
                }),
            )
            .await
            {
                // Its lease ends it anyway.
                warn!(node = %far, error = %e, "reflector not ended");
            }
            measured
        }
        .await;
        let booked = r.bw;
        let mut x = unmeasured(&r, &ask, now);
        match figures {
            Ok(m) => {
                x.figures = Figures {
                    probes_sent: m.probes_sent,
                    probes_received: m.probes_received,
                    rtt_min_us: m.rtt_min_us,
                    rtt_avg_us: m.rtt_avg_us,
                    rtt_max_us: m.rtt_max_us,
                    forward_avg_us: m.forward_avg_us,
                    backward_avg_us: m.backward_avg_us,
                    jitter_us: m.jitter_us,
                    throughput_mbps: m.throughput_mbps,
                    ip_throughput_mbps: m.ip_throughput_mbps,
                };
                (x.verdict, x.reasons) =
                    judge(&x.figures, booked, &ask.thresholds, !ask.duration.is_zero());
            }
            Err(why) => x.reasons.push(why),
        }
        // What was measured must still be the circuit that was booked: one stopped,
        // released or modified meanwhile gives figures that say nothing about it.
        let changed = match idc.get(&r.id).await {
            Ok(now) if now.version != r.version => Some(format!(
                "the circuit was modified during the measurement (version {} → {})",
                r.version, now.version
            )),
            Ok(now) if !now.data_plane_should_be_active(idc.now()) => Some(format!(
                "the circuit went down during the measurement (it is {} now)",
                now.summary()
            )),
            Ok(_) => None,
            Err(e) => Some(format!(
                "the circuit could not be read again: {}",
                e.message
            )),
        };
        if let Some(why) = changed {
            x.verdict = Verdict::Error;
            x.reasons.insert(0, why);
        }
        info!(
            reservation.id = %r.id,
            verdict = x.verdict.as_str(),
            throughput_mbps = x.figures.throughput_mbps,
            rtt_avg_us = x.figures.rtt_avg_us,
            "circuit measured"
        );
        idc.record_measurement(x).await
    }
}

/// A measurement of `r` as `ask` asked, with no figures yet (verdict `error`).
fn unmeasured(r: &Reservation, ask: &VerifyAsk, at: chrono::DateTime<chrono::Utc>) -> Measurement {
    Measurement {
        seq: 0,
        reservation_id: r.id.clone(),
        series_id: r.series.as_ref().map(|s| s.id.clone()),
        occurrence: r.series.as_ref().map(|s| s.occurrence),
        at,
        kind: ask.kind,
        who: ask.who.clone(),
        booked: r.bw,
        duration_ms: ask.duration.as_millis() as u64,
        figures: Figures::default(),
        thresholds: ask.thresholds,
        verdict: Verdict::Error,
        reasons: Vec::new(),
    }
}

/// How long a check at a start waits for the nodes to carry the circuit.
const APPLIED_WAIT: Duration = Duration::from_secs(30);

impl AgentDriver {
    /// The checks bookings asked for (`verify_each`): one each time a circuit's data
    /// plane comes up (each occurrence's start), once the agents on its path have it.
    /// Every such start gets a stored result, `error` with why if it could not be
    /// measured.
    pub async fn run_checks(
        self,
        mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::store::EventRecord>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let e = tokio::select! {
                e = events.recv() => e,
                _ = stop.wait_for(|s| *s) => return,
            };
            let e = match e {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    warn!(missed = n, "checks at start: events missed");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if e.change.machine != sluice_model::Machine::DataPlane || e.change.to != "active" {
                continue;
            }
            let (driver, id) = (self.clone(), e.reservation_id.clone());
            tokio::spawn(async move { driver.check_at_start(&id).await });
        }
    }

    async fn check_at_start(&self, id: &str) {
        let idc = self.idc();
        let Ok(r) = idc.get(id).await else { return };
        let check = match idc.verify_each_of(&r).await {
            Ok(Some(v)) => v,
            Ok(None) => return,
            Err(e) => {
                warn!(reservation.id = %id, error = %e, "cannot read the check at start");
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + APPLIED_WAIT;
        while tokio::time::Instant::now() < deadline {
            let nodes = self.data_plane_of(&r);
            if !nodes.is_empty()
                && nodes
                    .iter()
                    .all(|n| n.state == Some(sluice_model::dataplane::NodeState::Applied))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ask = VerifyAsk {
            id: r.id.clone(),
            occurrence: None,
            duration: Duration::from_millis(check.duration_ms),
            probes: check.probes,
            thresholds: check.thresholds,
            who: "scheduler".into(),
            kind: MeasurementKind::Start,
        };
        match self.verify(ask.clone()).await {
            Ok(m) => {
                info!(reservation.id = %id, verdict = m.verdict.as_str(), "checked at its start")
            }
            // Not measurable at all (it went down again, or is being measured): that is
            // the result of this start's check.
            Err(e) => {
                warn!(reservation.id = %id, error = %e, "no check at its start");
                let mut x = unmeasured(&r, &ask, idc.now());
                x.reasons.push(format!("not measured: {}", e.message));
                if let Err(e) = idc.record_measurement(x).await {
                    warn!(reservation.id = %id, error = %e, "check at start not recorded");
                }
            }
        }
    }
}

/// A call to an agent, bounded in time; its error in words.
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(sluice_proto::status::from_status(&s).message),
        Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
    }
}
