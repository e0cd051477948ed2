//! TWAMP-Light (RFC 5357 Appendix I), in the packet format STAMP (RFC 8762) keeps
//! compatible: a Session-Sender sends numbered, timestamped UDP test packets; a
//! stateless Session-Reflector returns each with its own receive and send times. From
//! the four times of each packet the sender works out round-trip delay (which needs no
//! clock sync: the reflector's dwell time is subtracted), one-way delays (meaningful
//! when both clocks agree, as on one host), jitter and loss.
//!
//! Unauthenticated mode only. Both packets are 44 bytes before padding:
//!
//! ```text
//! sender:    seq(4) T1(8) error-estimate(2) MBZ(30)
//! reflector: seq(4) T3(8) error-estimate(2) MBZ(2) T2(8) sender-seq(4) T1(8)
//!            sender-error-estimate(2) MBZ(2) sender-TTL(1) MBZ(3)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

/// Both test packets' size without padding.
pub const PACKET_BYTES: usize = 44;
/// The well-known TWAMP-Light / STAMP reflector port (RFC 8762).
pub const STAMP_PORT: u16 = 862;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Error estimate (RFC 4656 4.1.2: Multiplier × 2^(Scale − 32) s): not synchronised to
/// UTC (S = 0), scale 32, multiplier 1: one second, as honest as an unsynchronised host
/// can be.
const ERROR_ESTIMATE: u16 = 0x2001;

/// A time as NTP's 64-bit timestamp: seconds since 1900 and a binary fraction.
pub fn ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The time an NTP timestamp stands for.
pub fn from_ntp(v: u64) -> SystemTime {
    let secs = (v >> 32).saturating_sub(NTP_UNIX_OFFSET);
    let nanos = ((v & 0xffff_ffff) * 1_000_000_000) >> 32;
    UNIX_EPOCH + Duration::new(secs, nanos as u32)
}

/// What a Session-Sender sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub seq: u32,
    /// T1, when it was sent (NTP).
    pub sent: u64,
    /// The sender's error estimate, which the reflector echoes.
    pub error_estimate: u16,
}

/// What a Session-Reflector returns for a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The reflector's own sequence number (stateless: the probe's).
    pub seq: u32,
    /// T3, when the reply left the reflector.
    pub sent: u64,
    /// T2, when the probe reached the reflector.
    pub received: u64,
    pub probe_seq: u32,
    /// T1, copied from the probe.
    pub probe_sent: u64,
    pub probe_error_estimate: u16,
    pub probe_ttl: u8,
}

impl Probe {
    /// The packet, padded to `size` bytes (at least [`PACKET_BYTES`]).
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut b = vec![0u8; size.max(PACKET_BYTES)];
        b[0..4].copy_from_slice(&self.seq.to_be_bytes());
        b[4..12].copy_from_slice(&self.sent.to_be_bytes());
        b[12..14].copy_from_slice(&self.error_estimate.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Probe> {
        (b.len() >= PACKET_BYTES).then(|| Probe {
            seq: u32::from_be_bytes(b[0..4].try_into().expect("4 bytes")),
            sent: u64::from_be_bytes(b[4..12].try_into().expect("8 bytes")),
            error_estimate: u16::from_be_bytes(b[12..14].try_into().expect("2 bytes")),
        })
    }
}

impl Reply {
    /// The reply to `probe` (whose packet was `len` bytes: the reply is as long, so
    /// both directions carry the same load).
    pub fn to(probe: &Probe, received: u64, sent: u64, ttl: u8) -> Reply {
        Reply {
            seq: probe.seq,
            sent,
            received,
            probe_seq: probe.seq,
            probe_sent: probe.sent,
            probe_error_estimate: probe.error_estimate,
            probe_ttl: ttl,
        }
    }

    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut b = vec![0u8; size.max(PACKET_BYTES)];
        b[0..4].copy_from_slice(&self.seq.to_be_bytes());
        b[4..12].copy_from_slice(&self.sent.to_be_bytes());
        b[12..14].copy_from_slice(&ERROR_ESTIMATE.to_be_bytes());
        b[16..24].copy_from_slice(&self.received.to_be_bytes());
        b[24..28].copy_from_slice(&self.probe_seq.to_be_bytes());
        b[28..36].copy_from_slice(&self.probe_sent.to_be_bytes());
        b[36..38].copy_from_slice(&self.probe_error_estimate.to_be_bytes());
        b[40] = self.probe_ttl;
        b
    }

    pub fn decode(b: &[u8]) -> Option<Reply> {
        if b.len() < PACKET_BYTES {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(Reply {
            seq: u32_at(0),
            sent: u64_at(4),
            received: u64_at(16),
            probe_seq: u32_at(24),
            probe_sent: u64_at(28),
            probe_error_estimate: u16::from_be_bytes(b[36..38].try_into().expect("2 bytes")),
            probe_ttl: b[40],
        })
    }
}

/// A stateless Session-Reflector on `socket`: every probe goes back to where it came
/// from, as long as it came, with its receive and send times. Runs until the task is
/// dropped; a packet too short to be a probe is ignored.
pub async fn reflect(socket: UdpSocket) -> std::io::Result<()> {
    let own = socket.local_addr()?.port();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let received = ntp(SystemTime::now());
        // Nothing can be answered on port 0, and a packet from a reflector's port is a
        // reply (another reflector's, or a spoofed one): answering it could make two
        // reflectors bounce packets between them forever.
        if from.port() == 0 || from.port() == STAMP_PORT || from.port() == own {
            continue;
        }
        let Some(probe) = Probe::decode(&buf[..n]) else {
            continue;
        };
        // The TTL the probe arrived with is not visible to a plain UDP socket; 255 is
        // what RFC 5357 has a sender use, so it reads as "not decremented".
        let reply = Reply::to(&probe, received, ntp(SystemTime::now()), 255);
        if let Err(e) = socket.send_to(&reply.encode(n), from).await {
            // One unanswerable source (no route back, a broadcast address) must not
            // stop the reflector.
            tracing::debug!(%from, error = %e, "TWAMP reply not sent");
        }
    }
}

/// How a measurement is run.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub count: u32,
    /// Between probes.
    pub interval: Duration,
    /// How long after the last probe replies are still waited for; later ones count
    /// as lost.
    pub wait: Duration,
    /// Each packet's size (at least 44 bytes).
    pub size: usize,
}

/// One probe's four times, as the sender saw its reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub seq: u32,
    /// (T4 − T1) − (T3 − T2): the path both ways, without the reflector's dwell time.
    pub round_trip: Duration,
    /// T2 − T1 and T4 − T3: one-way, as far as the two clocks agree (zero if the
    /// reflector's clock runs behind).
    pub forward: Duration,
    pub backward: Duration,
}

/// What a session measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub sent: u32,
    /// Each probe answered in time, once, in sequence order.
    pub samples: Vec<Sample>,
}

impl Report {
    pub fn received(&self) -> u32 {
        self.samples.len() as u32
    }

    /// Probes without a reply in time, as a fraction of those sent.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        f64::from(self.sent - self.received()) / f64::from(self.sent)
    }

    fn stat(&self, f: impl Fn(&Sample) -> Duration) -> Option<(Duration, Duration, Duration)> {
        let v: Vec<Duration> = self.samples.iter().map(f).collect();
        let min = *v.iter().min()?;
        let max = *v.iter().max()?;
        let mean = v.iter().sum::<Duration>() / v.len() as u32;
        Some((min, mean, max))
    }

    /// Round-trip delay: (min, mean, max); `None` if nothing came back.
    pub fn round_trip(&self) -> Option<(Duration, Duration, Duration)> {
        self.stat(|s| s.round_trip)
    }

    pub fn forward(&self) -> Option<(Duration, Duration, Duration)> {
        self.stat(|s| s.forward)
    }

    pub fn backward(&self) -> Option<(Duration, Duration, Duration)> {
        self.stat(|s| s.backward)
    }

    /// Jitter: the mean absolute difference of consecutive round trips (IPDV,
    /// RFC 3393), over the probes that came back, in order; `None` below two.
    pub fn jitter(&self) -> Option<Duration> {
        let rt: Vec<Duration> = self.samples.iter().map(|s| s.round_trip).collect();
        if rt.len() < 2 {
            return None;
        }
        let sum: Duration = rt.windows(2).map(|w| w[1].abs_diff(w[0])).sum();
        Some(sum / (rt.len() as u32 - 1))
    }
}

/// `later − earlier`, two NTP timestamps, in NTP's own 32.32 fixed point (so it holds
/// across the 2036 era wrap); zero if `later` is in fact earlier.
fn since(later: u64, earlier: u64) -> Duration {
    let d = later.wrapping_sub(earlier);
    if d >> 63 == 1 {
        return Duration::ZERO;
    }
    Duration::new(d >> 32, (((d & 0xffff_ffff) * 1_000_000_000) >> 32) as u32)
}

/// Runs a session from `socket` against the reflector at `reflector`.
pub async fn measure(
    socket: &UdpSocket,
    reflector: SocketAddr,
    session: Session,
) -> std::io::Result<Report> {
    let mut buf = vec![0u8; 65_536];
    // Sequence numbers start at a per-session base, and a reply counts only if it echoes
    // the T1 this session sent with that number: a late reply to an earlier session on
    // the same socket is not taken for an answer.
    let base = (ntp(SystemTime::now()) & 0xffff_ffff) as u32;
    let mut sent: Vec<u64> = Vec::with_capacity(session.count as usize);
    // By probe number: (T1, T2, T3, T4), first reply only.
    let mut times: BTreeMap<u32, (u64, u64, u64, u64)> = BTreeMap::new();
    let start = tokio::time::Instant::now();
    let mut next = 0u32;
    loop {
        let deadline = if next < session.count {
            start + session.interval * next
        } else {
            start + session.interval * session.count.saturating_sub(1) + session.wait
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                if next >= session.count {
                    break;
                }
                let probe = Probe {
                    seq: base.wrapping_add(next),
                    sent: ntp(SystemTime::now()),
                    error_estimate: ERROR_ESTIMATE,
                };
                sent.push(probe.sent);
                socket.send_to(&probe.encode(session.size), reflector).await?;
                next += 1;
            }
            got = socket.recv_from(&mut buf) => {
                // The source address is not compared: a reflector may answer from
                // another of its addresses (or as an IPv4-mapped one); the echoed
                // number and T1 identify the probe.
                let (n, _from) = got?;
                let t4 = ntp(SystemTime::now());
                let Some(r) = Reply::decode(&buf[..n]) else { continue };
                let i = r.probe_seq.wrapping_sub(base);
                if sent.get(i as usize) != Some(&r.probe_sent) {
                    continue;
                }
                times.entry(i).or_insert((r.probe_sent, r.received, r.sent, t4));
                if next >= session.count && times.len() == session.count as usize {
                    break;
                }
            }
        }
    }
    let samples = times
        .into_iter()
        .map(|(seq, (t1, t2, t3, t4))| Sample {
            seq,
            round_trip: since(t4, t1).saturating_sub(since(t3, t2)),
            forward: since(t2, t1),
            backward: since(t4, t3),
        })
        .collect();
    Ok(Report {
        sent: session.count,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_timestamps_round_trip_to_the_nanosecond_or_so() {
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        let back = from_ntp(ntp(t));
        let d = t.duration_since(back).unwrap_or_else(|e| e.duration());
        assert!(d < Duration::from_nanos(2), "{d:?}");
        // The NTP era: 1970 is 2208988800 s after 1900.
        assert_eq!(ntp(UNIX_EPOCH) >> 32, NTP_UNIX_OFFSET);
        // Differences hold across the 2036 wrap of NTP's seconds.
        let before_wrap = UNIX_EPOCH + Duration::new((1u64 << 32) - NTP_UNIX_OFFSET - 1, 0);
        let d = since(
            ntp(before_wrap + Duration::from_millis(1250)),
            ntp(before_wrap),
        );
        assert!(
            d.abs_diff(Duration::from_millis(1250)) < Duration::from_micros(1),
            "{d:?}"
        );
        assert_eq!(since(1, 2), Duration::ZERO);
    }

    #[test]
    fn packets_encode_at_their_rfc_offsets_and_decode_back() {
        let p = Probe {
            seq: 7,
            sent: 0x0102_0304_0506_0708,
            error_estimate: 0x2001,
        };
        let b = p.encode(10);
        assert_eq!(b.len(), PACKET_BYTES);
        assert_eq!(&b[0..4], &[0, 0, 0, 7]);
        assert_eq!(&b[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Probe::decode(&b), Some(p));
        assert_eq!(Probe::decode(&b[..43]), None);
        let r = Reply::to(&p, 0xaa, 0xbb, 255);
        let b = r.encode(100);
        assert_eq!(b.len(), 100);
        assert_eq!(&b[16..24], &0xaau64.to_be_bytes());
        assert_eq!(&b[24..28], &7u32.to_be_bytes());
        assert_eq!(&b[28..36], &p.sent.to_be_bytes());
        assert_eq!(&b[4..12], &0xbbu64.to_be_bytes());
        assert_eq!(
            &b[36..38],
            &[0x20, 0x01],
            "the sender's error estimate, echoed"
        );
        assert!(
            b[14..16]
                .iter()
                .chain(&b[38..40])
                .chain(&b[41..44])
                .all(|x| *x == 0)
        );
        assert_eq!(b[40], 255);
        assert_eq!(Reply::decode(&b), Some(r));
    }

    #[test]
    fn a_report_counts_loss_and_jitter_from_its_samples() {
        let ms = Duration::from_millis;
        let s = |seq, rt| Sample {
            seq,
            round_trip: ms(rt),
            forward: ms(rt) / 2,
            backward: ms(rt) / 2,
        };
        let r = Report {
            sent: 5,
            samples: vec![s(0, 10), s(1, 14), s(3, 12)],
        };
        assert_eq!(r.received(), 3);
        assert!((r.loss() - 0.4).abs() < 1e-9);
        assert_eq!(r.round_trip(), Some((ms(10), ms(12), ms(14))));
        // |14-10| and |12-14|: 4 and 2, mean 3.
        assert_eq!(r.jitter(), Some(ms(3)));
        let empty = Report {
            sent: 3,
            samples: vec![],
        };
        assert_eq!(
            (empty.loss(), empty.round_trip(), empty.jitter()),
            (1.0, None, None)
        );
    }
}
