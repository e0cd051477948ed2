//! Prometheus metrics. `sluice serve --metrics ADDR` serves `GET /metrics` in the text
//! exposition format: reservations by state (counted in the store at each scrape),
//! admission latency, path computation time, agent errors, federation call latency.
//! The HTTP side is a few lines of its own on a tokio listener (one request per
//! connection), so the metrics bring no web stack and no second TLS provider.
//!
//! The recorder is process-wide (`metrics` has one global recorder): IDCs in one process,
//! as in the tests, share it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::Idc;

/// Admission and call latencies: 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub const ADMISSION: &str = "sluice_admission_seconds";
pub const PCE: &str = "sluice_pce_seconds";
pub const AGENT_ERRORS: &str = "sluice_agent_errors_total";
pub const FEDERATION_CALL: &str = "sluice_federation_call_seconds";
pub const RESERVATIONS: &str = "sluice_reservations";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once per process); `None` if another one was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match built {
                Ok(h) => {
                    metrics::describe_histogram!(
                        ADMISSION,
                        metrics::Unit::Seconds,
                        "reserve requests from arrival to answer (result: ok or the error code)"
                    );
                    metrics::describe_histogram!(
                        PCE,
                        metrics::Unit::Seconds,
                        "path computation for one reserve"
                    );
                    metrics::describe_counter!(
                        AGENT_ERRORS,
                        "sets a node agent did not take (not reached, or failed to apply), and circuits it refused"
                    );
                    metrics::describe_histogram!(
                        FEDERATION_CALL,
                        metrics::Unit::Seconds,
                        "calls to peer domains' IDCs, by peer, operation and result"
                    );
                    metrics::describe_gauge!(
                        RESERVATIONS,
                        "reservations in the store, by their states"
                    );
                    Some(h)
                }
                Err(e) => {
                    warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// The metrics page: the store's counts refreshed, then everything rendered.
pub async fn render(idc: &Idc) -> String {
    let Some(h) = handle() else {
        return String::new();
    };
    match idc.count_by_states().await {
        Ok(rows) => {
            for (reservation, provision, lifecycle, active, n) in rows {
                metrics::gauge!(
                    RESERVATIONS,
                    "reservation" => reservation,
                    "provision" => provision,
                    "lifecycle" => lifecycle,
                    "data_plane" => if active { "active" } else { "inactive" },
                )
                .set(n as f64);
            }
        }
        Err(e) => warn!(error = %e, "reservation counts not read for the metrics"),
    }
    h.render()
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, idc: Idc, mut stop: watch::Receiver<bool>) {
    handle();
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        match conn {
            Ok((s, _)) => {
                let idc = idc.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(s, &idc).await {
                        debug!(error = %e, "metrics request not answered");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "metrics listener");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One request: its head read (at most 8 KiB, within 5 s), one answer, closed.
async fn answer(mut s: TcpStream, idc: &Idc) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", render(idc).await),
        (Some("GET"), Some(_)) => ("404 Not Found", "only /metrics is here\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "only GET /metrics is served\n".to_string(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(reply.as_bytes()).await?;
    s.shutdown().await
}
