//! TWAMP-Light on loopback: the sender against this crate's reflector, and against a
//! reflector the test controls, which adds fixed delays on each way and drops chosen
//! probes, so the computed delays, jitter and loss are checked against what was
//! injected. Delays can only come out longer than injected (by the scheduling of a busy
//! machine), so each figure is checked against a floor and a generous ceiling.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sluice_agent::twamp::{Probe, Reply, Session, measure, ntp, reflect};
use tokio::net::UdpSocket;

const MS: Duration = Duration::from_millis(1);
/// What a busy 2-core machine may add to a timer.
const SLACK: Duration = Duration::from_millis(15);
/// How long the test's reflector keeps each probe: longer than the round trip's slack,
/// so a round trip that counted it would fail.
const DWELL: Duration = Duration::from_millis(40);

async fn sender() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn the_reflector_answers_every_probe_with_its_times() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = socket.local_addr().unwrap();
    let reflector = tokio::spawn(reflect(socket));
    let s = sender().await;
    let report = measure(
        &s,
        at,
        Session {
            count: 20,
            interval: 2 * MS,
            wait: Duration::from_millis(500),
            size: 128,
        },
    )
    .await
    .unwrap();
    reflector.abort();
    assert_eq!((report.sent, report.received()), (20, 20));
    assert_eq!(report.loss(), 0.0);
    let seqs: Vec<u32> = report.samples.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (0..20).collect::<Vec<_>>());
    let (min, mean, max) = report.round_trip().unwrap();
    // A stall of one probe on a busy machine moves the mean little.
    assert!(mean < SLACK, "loopback round trip {mean:?} on average");
    assert!(min <= mean && mean <= max);
}

/// Holds each probe `forward` before taking its receive time, [`DWELL`] between its
/// receive and send times, and each reply `backward` after its send time; sends every
/// reply twice; never answers the probes `drop` picks.
async fn impaired_reflector(
    socket: UdpSocket,
    forward: fn(u32) -> Duration,
    backward: Duration,
    drop: fn(u32) -> bool,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 2048];
    // Sessions number their probes from a base of their own: the first one seen (probe
    // 0, which loopback delivers first) gives it.
    let mut base: Option<u32> = None;
    loop {
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        let Some(probe) = Probe::decode(&buf[..n]) else {
            continue;
        };
        let i = probe.seq.wrapping_sub(*base.get_or_insert(probe.seq));
        if drop(i) {
            continue;
        }
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(forward(i)).await;
            let t2 = ntp(SystemTime::now());
            // Time spent in the reflector: not part of either way.
            tokio::time::sleep(DWELL).await;
            let reply = Reply::to(&probe, t2, ntp(SystemTime::now()), 255);
            tokio::time::sleep(backward).await;
            // Twice: a duplicate counts once.
            for _ in 0..2 {
                socket.send_to(&reply.encode(n), from).await.unwrap();
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_jitter_and_loss_come_out_as_injected() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = socket.local_addr().unwrap();
    // Forward 10 ms on even probes and 30 ms on odd ones, backward 5 ms; every fifth
    // probe dropped.
    let reflector = tokio::spawn(impaired_reflector(
        socket,
        |seq| if seq % 2 == 0 { 10 * MS } else { 30 * MS },
        5 * MS,
        |seq| seq % 5 == 4,
    ));
    let s = sender().await;
    let report = measure(
        &s,
        at,
        Session {
            count: 40,
            interval: 20 * MS,
            wait: Duration::from_millis(500),
            size: 64,
        },
    )
    .await
    .unwrap();
    reflector.abort();
    // Loss: exactly the dropped fifth.
    assert_eq!(report.received(), 32);
    assert!((report.loss() - 0.2).abs() < 1e-9, "{}", report.loss());
    assert!(report.samples.iter().all(|s| s.seq % 5 != 4));
    // Never less than injected; above it by timer and scheduling overhead, which on a
    // busy machine now and then stalls one probe for tens of milliseconds: the typical
    // (median) excess is what must stay small.
    let injected = |seq: u32| {
        if seq.is_multiple_of(2) {
            10 * MS
        } else {
            30 * MS
        }
    };
    for s in &report.samples {
        let f = injected(s.seq);
        assert!(
            s.forward >= f && s.backward >= 5 * MS && s.round_trip >= f + 5 * MS,
            "probe {}: forward {:?} (injected {f:?}), backward {:?}, round trip {:?}",
            s.seq,
            s.forward,
            s.backward,
            s.round_trip
        );
    }
    let median = |f: &dyn Fn(&sluice_agent::twamp::Sample) -> Duration| {
        let mut v: Vec<Duration> = report.samples.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    let forward_over = median(&|s| s.forward - injected(s.seq));
    let backward_over = median(&|s| s.backward - 5 * MS);
    // The reflector's dwell (T3 − T2, 40 ms) is taken out: the round trip is both ways.
    let round_trip_over = median(&|s| s.round_trip - injected(s.seq) - 5 * MS);
    assert!(
        forward_over < SLACK,
        "forward: {forward_over:?} over, typically"
    );
    assert!(
        backward_over < SLACK,
        "backward: {backward_over:?} over, typically"
    );
    assert!(
        round_trip_over < SLACK,
        "round trip: {round_trip_over:?} over, typically"
    );
    // Consecutive answered probes differ by 20 ms, except across a drop, where two of
    // the same parity meet (|Δ| ≈ 0): of 31 differences, 7 straddle a drop (after
    // probes 3, 8, ..., 33).
    let jitter = report.jitter().unwrap();
    let expected = 20 * MS * 24 / 31;
    assert!(
        jitter + 3 * MS >= expected && jitter < expected + SLACK,
        "jitter {jitter:?}, about {expected:?} injected"
    );
    let (min, mean, max) = report.forward().unwrap();
    assert!(min >= 10 * MS && max >= 30 * MS && mean > min && mean < max);
    // How far above the injected delays the measurement came out, on average: the
    // accuracy figure (timer and scheduling overhead of this machine).
    let over = |f: &dyn Fn(&sluice_agent::twamp::Sample) -> Duration| {
        let v: Vec<Duration> = report.samples.iter().map(f).collect();
        v.iter().sum::<Duration>() / v.len() as u32
    };
    eprintln!(
        "TWAMP-Light against injected delays: forward +{:?}, backward +{:?}, round trip \
         +{:?} on average; jitter {jitter:?} for {expected:?} injected; loss {:.1} % for \
         20 % dropped",
        over(&|s| s.forward - injected(s.seq)),
        over(&|s| s.backward - 5 * MS),
        over(&|s| s.round_trip - injected(s.seq) - 5 * MS),
        100.0 * report.loss(),
    );
}

/// A reply that arrives after its session ended (late, or to an earlier session on the
/// same socket) is not taken for an answer in the next session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_to_an_earlier_session_is_not_an_answer() {
    let reflector = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = reflector.local_addr().unwrap();
    let s = sender().await;
    let session = |wait_ms| Session {
        count: 3,
        interval: MS,
        wait: Duration::from_millis(wait_ms),
        size: 44,
    };
    // Nobody answers the first session in time.
    let first = measure(&s, at, session(50)).await.unwrap();
    assert_eq!(first.received(), 0);
    let mut late = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        let (n, from) = reflector.recv_from(&mut buf).await.unwrap();
        let p = Probe::decode(&buf[..n]).unwrap();
        late.push((Reply::to(&p, p.sent, p.sent, 255).encode(n), from));
    }
    // Its replies arrive during the second session, which nobody answers either.
    let answer_late = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (b, to) in &late {
            reflector.send_to(b, to).await.unwrap();
        }
    };
    let (second, ()) = tokio::join!(measure(&s, at, session(200)), answer_late);
    let second = second.unwrap();
    assert_eq!((second.sent, second.received()), (3, 0), "{second:?}");
}
