//! What a circuit delivered when measured over itself (`sluice verify`), against what was
//! booked, and the verdict against thresholds.

use chrono::{DateTime, Utc};

use crate::Mbps;

/// What a measurement is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Throughput at least this fraction of the booking (default 0.95).
    pub min_throughput_ratio: f64,
    /// Probe loss at most this fraction (default 0.01).
    pub max_loss: f64,
    /// Mean round trip at most this, if set.
    pub max_rtt_ms: Option<f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_throughput_ratio: 0.95,
            max_loss: 0.01,
            max_rtt_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// The measurement could not be made (an agent down, the circuit not up).
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        [Verdict::Pass, Verdict::Fail, Verdict::Error]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Why a measurement was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasurementKind {
    /// Asked for (`sluice verify`).
    Verify,
    /// The short check at an occurrence's start (`--verify-each`).
    Start,
}

impl MeasurementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MeasurementKind::Verify => "verify",
            MeasurementKind::Start => "start",
        }
    }

    pub fn parse(s: &str) -> Option<MeasurementKind> {
        [MeasurementKind::Verify, MeasurementKind::Start]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The check a booking asked for at each start of its data plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerifyEach {
    pub duration_ms: u64,
    pub probes: u32,
    pub thresholds: Thresholds,
}

impl Default for VerifyEach {
    fn default() -> Self {
        VerifyEach {
            duration_ms: 3000,
            probes: 50,
            thresholds: Thresholds::default(),
        }
    }
}

/// The figures of one measurement, A→Z over the circuit (delays in microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Figures {
    pub probes_sent: u32,
    pub probes_received: u32,
    pub rtt_min_us: u64,
    pub rtt_avg_us: u64,
    pub rtt_max_us: u64,
    pub forward_avg_us: u64,
    pub backward_avg_us: u64,
    pub jitter_us: u64,
    /// TCP payload per second A→Z (what iperf3 reports).
    pub throughput_mbps: f64,
    /// The rate of the IP packets that carried it (0: not known).
    pub ip_throughput_mbps: f64,
}

impl Figures {
    /// What is compared with the booking: the IP rate where known.
    pub fn carried_mbps(&self) -> f64 {
        if self.ip_throughput_mbps > 0.0 {
            self.ip_throughput_mbps
        } else {
            self.throughput_mbps
        }
    }

    pub fn loss(&self) -> f64 {
        if self.probes_sent == 0 {
            return 0.0;
        }
        f64::from(self.probes_sent.saturating_sub(self.probes_received))
            / f64::from(self.probes_sent)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Given by the store.
    pub seq: u64,
    pub reservation_id: String,
    /// For an occurrence of a series: which, and the series.
    pub series_id: Option<String>,
    pub occurrence: Option<u32>,
    pub at: DateTime<Utc>,
    pub kind: MeasurementKind,
    pub who: String,
    pub booked: Mbps,
    pub duration_ms: u64,
    pub figures: Figures,
    pub thresholds: Thresholds,
    pub verdict: Verdict,
    /// Why it failed (each threshold missed), or why it could not be made.
    pub reasons: Vec<String>,
}

/// The verdict on `f` for a booking of `booked` (throughput only if it was measured:
/// `measured_throughput`), with a reason per threshold missed.
pub fn judge(
    f: &Figures,
    booked: Mbps,
    t: &Thresholds,
    measured_throughput: bool,
) -> (Verdict, Vec<String>) {
    let mut reasons = Vec::new();
    if measured_throughput {
        let want = booked.0 as f64 * t.min_throughput_ratio;
        let got = f.carried_mbps();
        if got < want {
            reasons.push(format!(
                "throughput {got:.1} Mb/s (IP) is {:.2} % of the {} Mb/s booked, below {:.0} %",
                100.0 * got / booked.0.max(1) as f64,
                booked.0,
                100.0 * t.min_throughput_ratio
            ));
        }
    }
    if f.probes_sent > 0 && f.loss() > t.max_loss {
        reasons.push(format!(
            "loss {:.1} % ({} of {} probes), above {:.1} %",
            100.0 * f.loss(),
            f.probes_sent - f.probes_received,
            f.probes_sent,
            100.0 * t.max_loss
        ));
    }
    if let Some(max) = t.max_rtt_ms
        && f.probes_received > 0
        && f.rtt_avg_us as f64 / 1000.0 > max
    {
        reasons.push(format!(
            "mean round trip {:.3} ms, above {max} ms",
            f.rtt_avg_us as f64 / 1000.0
        ));
    }
    if f.probes_sent > 0 && f.probes_received == 0 && !reasons.iter().any(|r| r.starts_with("loss"))
    {
        reasons.push("no probe came back".to_string());
    }
    let verdict = if reasons.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    (verdict, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(mbps: f64, sent: u32, received: u32, rtt_us: u64) -> Figures {
        Figures {
            probes_sent: sent,
            probes_received: received,
            rtt_min_us: rtt_us,
            rtt_avg_us: rtt_us,
            rtt_max_us: rtt_us,
            throughput_mbps: mbps,
            ..Figures::default()
        }
    }

    #[test]
    fn passes_at_the_threshold_and_fails_below_it_with_a_reason_each() {
        let t = Thresholds::default();
        let (v, r) = judge(&figures(190.0, 100, 100, 300), Mbps(200), &t, true);
        assert_eq!((v, r.len()), (Verdict::Pass, 0), "exactly 95 %");
        let (v, r) = judge(&figures(189.9, 100, 98, 300), Mbps(200), &t, true);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(
            r[0].contains("94.95 %") && r[0].contains("below 95 %"),
            "{r:?}"
        );
        assert!(r[1].starts_with("loss 2.0 %"), "{r:?}");
        // Throughput not measured: only the probes count.
        let (v, _) = judge(&figures(0.0, 100, 100, 300), Mbps(200), &t, false);
        assert_eq!(v, Verdict::Pass);
        let strict = Thresholds {
            min_throughput_ratio: 0.5,
            max_loss: 0.0,
            max_rtt_ms: Some(0.2),
        };
        let (v, r) = judge(&figures(120.0, 10, 10, 300), Mbps(200), &strict, true);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(r, ["mean round trip 0.300 ms, above 0.2 ms"]);
        let (_, r) = judge(&figures(120.0, 10, 0, 0), Mbps(200), &strict, true);
        // The IP rate, where known, is what counts: 189 of payload carried at 196.
        let mut f = figures(189.0, 100, 100, 300);
        f.ip_throughput_mbps = 196.0;
        assert_eq!(judge(&f, Mbps(200), &t, true).0, Verdict::Pass);
        assert_eq!(r, ["loss 100.0 % (10 of 10 probes), above 0.0 %"]);
    }
}
