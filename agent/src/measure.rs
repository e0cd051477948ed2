//! Measuring a circuit over the circuit itself: each end of a measurement is an address
//! on the circuit's cross-connect, in a network namespace of its own (so the router's
//! routing never sees it), and the sockets of a measurement are made inside it. The far
//! end runs a TWAMP-Light reflector and a throughput sink; the near end sends probes and
//! then one TCP stream, and the sink reports what it received and over how long (as
//! iperf3's receiver does).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Which end of a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Sender,
    Reflector,
}

impl Role {
    /// Both ends of every circuit's measurement have the same two addresses: each
    /// circuit is its own layer-2 domain, and each end its own namespace.
    pub fn address(self) -> Ipv4Addr {
        match self {
            Role::Sender => Ipv4Addr::new(169, 254, 77, 1),
            Role::Reflector => Ipv4Addr::new(169, 254, 77, 2),
        }
    }

    pub fn letter(self) -> char {
        match self {
            Role::Sender => 's',
            Role::Reflector => 'r',
        }
    }
}

/// One end of a measurement: where its sockets are made. Removed from the node when
/// dropped (or earlier, with [`MeasurementEnd::close`]).
pub struct MeasurementEnd {
    /// The namespace its sockets belong in (`None`: this one, for the mock backend).
    pub netns: Option<String>,
    pub address: Ipv4Addr,
    /// The MTU of its interface, where the circuit sets it (what a full TCP segment's IP
    /// packet is).
    pub mtu: Option<u32>,
    close: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl MeasurementEnd {
    pub fn new(
        netns: Option<String>,
        address: Ipv4Addr,
        mtu: Option<u32>,
        close: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> MeasurementEnd {
        MeasurementEnd {
            netns,
            address,
            mtu,
            close,
        }
    }

    /// Removes it from the node (runs `ip`: call from a blocking thread).
    pub fn close(mut self) {
        if let Some(f) = self.close.take() {
            f();
        }
    }

    /// A UDP socket on this end's address, any port.
    pub async fn udp(&self) -> std::io::Result<UdpSocket> {
        let at = SocketAddr::from((self.address, 0));
        let s = in_netns(self.netns.clone(), move || {
            let s = std::net::UdpSocket::bind(at)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .await?;
        UdpSocket::from_std(s)
    }

    pub async fn listen(&self) -> std::io::Result<TcpListener> {
        let at = SocketAddr::from((self.address, 0));
        let l = in_netns(self.netns.clone(), move || {
            let l = std::net::TcpListener::bind(at)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .await?;
        TcpListener::from_std(l)
    }

    pub async fn connect(&self, to: SocketAddr, limit: Duration) -> std::io::Result<TcpStream> {
        let s = in_netns(self.netns.clone(), move || {
            let s = std::net::TcpStream::connect_timeout(&to, limit)?;
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .await?;
        TcpStream::from_std(s)
    }
}

impl Drop for MeasurementEnd {
    /// An end dropped without `close` (its request was cancelled): removed all the same.
    fn drop(&mut self) {
        if let Some(f) = self.close.take() {
            cleanup_from_drop(f);
        }
    }
}

/// Runs `f` (blocking work: `ip`) from a `Drop`: on a blocking thread when inside the
/// runtime, so no runtime worker waits on it; at once otherwise.
pub fn cleanup_from_drop(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(f);
        }
        Err(_) => f(),
    }
}

/// Runs `f` on a thread inside network namespace `netns` (by its `ip netns` name), so
/// the sockets it makes belong there; they keep that namespace when handed back.
pub async fn in_netns<T: Send + 'static>(
    netns: Option<String>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(move || match netns {
        None => f(),
        // A thread of its own: setns changes the calling thread's namespace, and a
        // pooled thread must not stay in it.
        Some(ns) => std::thread::spawn(move || {
            let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("measurement thread panicked"))),
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// What a throughput stream delivered, as its sink saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    pub bytes: u64,
    /// From the first byte received to the last.
    pub receive: Duration,
}

impl Throughput {
    /// TCP payload per second: what iperf3 reports.
    pub fn mbps(&self) -> f64 {
        if self.receive.is_zero() {
            return 0.0;
        }
        self.bytes as f64 * 8.0 / self.receive.as_secs_f64() / 1e6
    }

    /// The rate of the IP packets that carried it, full-size segments on a path of
    /// `mtu`: what a booking (a rate of IP packets) is compared with. Each packet has 52
    /// bytes of IPv4 and TCP headers (with timestamps, as Linux sends).
    pub fn ip_mbps(&self, mtu: u32) -> f64 {
        const HEADERS: u32 = 20 + 32;
        if mtu <= HEADERS {
            return self.mbps();
        }
        self.mbps() * f64::from(mtu) / f64::from(mtu - HEADERS)
    }
}

/// The sink's answer after the stream: bytes and nanoseconds, big-endian.
const REPORT_BYTES: usize = 16;

/// Takes streams one after another: counts each one's bytes until the sender closes its
/// side, then answers with the count and the time from its first byte to its last.
pub async fn sink(listener: TcpListener) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let (mut s, _) = listener.accept().await?;
        let (mut bytes, mut first, mut last) = (0u64, None, Instant::now());
        loop {
            let n = match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            last = Instant::now();
            first.get_or_insert(last);
            bytes += n as u64;
        }
        let nanos = first.map_or(0, |f| last.duration_since(f).as_nanos() as u64);
        let mut report = [0u8; REPORT_BYTES];
        report[..8].copy_from_slice(&bytes.to_be_bytes());
        report[8..].copy_from_slice(&nanos.to_be_bytes());
        // A sender that went away gets no report; the next stream is taken all the same.
        let _ = s.write_all(&report).await;
        let _ = s.shutdown().await;
    }
}

/// Sends as fast as the path takes for `duration`, closes its side, and returns what the
/// sink reports (waiting at most `report_wait` for it).
pub async fn send(
    mut s: TcpStream,
    duration: Duration,
    report_wait: Duration,
) -> std::io::Result<Throughput> {
    let chunk = vec![0x5au8; 128 * 1024];
    let end = tokio::time::Instant::now() + duration;
    // Until the time is up (a write cut short then is simply not counted).
    while let Ok(written) = tokio::time::timeout_at(end, s.write_all(&chunk)).await {
        written?;
    }
    s.shutdown().await?;
    let mut report = [0u8; REPORT_BYTES];
    tokio::time::timeout(report_wait, s.read_exact(&mut report))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the sink did not report what it received",
            )
        })??;
    Ok(Throughput {
        bytes: u64::from_be_bytes(report[..8].try_into().expect("8 bytes")),
        receive: Duration::from_nanos(u64::from_be_bytes(report[8..].try_into().expect("8 bytes"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sink_reports_every_byte_sent() {
        let end = MeasurementEnd::new(None, Ipv4Addr::LOCALHOST, None, None);
        let l = end.listen().await.unwrap();
        let at = l.local_addr().unwrap();
        let sink = tokio::spawn(sink(l));
        for _ in 0..2 {
            let s = end.connect(at, Duration::from_secs(2)).await.unwrap();
            let got = send(s, Duration::from_millis(200), Duration::from_secs(5))
                .await
                .unwrap();
            // At least one full chunk went; loopback carries far more than 1 Mb/s.
            assert!(got.bytes >= 128 * 1024, "{got:?}");
            assert!(got.receive > Duration::ZERO && got.receive < Duration::from_secs(2));
            assert!(got.mbps() > 1.0, "{got:?}");
            // On a 1450-byte path 1398 bytes of payload ride in each 1450-byte packet.
            let ratio = got.ip_mbps(1450) / got.mbps();
            assert!((ratio - 1450.0 / 1398.0).abs() < 1e-9, "{ratio}");
        }
        sink.abort();
    }

    #[tokio::test]
    async fn a_sink_that_never_reports_is_an_error_not_a_hang() {
        // A listener that accepts and says nothing.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = l.local_addr().unwrap();
        let mute = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(s);
        });
        let s = TcpStream::connect(at).await.unwrap();
        let e = send(s, Duration::from_millis(50), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        mute.abort();
    }
}
