//! The test harness: IDCs on `127.0.0.1:0`, each with its own temporary data directory
//! and database, in the test's own process. Several can run side by side (one per
//! domain); everything is removed on drop.

mod database;
mod federation;

pub use database::{POSTGRES_ENV, REQUIRE_POSTGRES_ENV, TestDatabase};
pub use federation::{Domain, Peering, TestFederation, TestFederationBuilder};

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sluice_model::Topology;
use sluice_proto::v1::reservations_client::ReservationsClient;
use tonic::transport::Channel;

use crate::clock::{Clock, ManualClock, SystemClock};
use crate::federation::FederationSetup;
use crate::server::{RunningServer, ServerOptions, start};

pub struct TestIdc {
    pub server: Option<RunningServer>,
    pub clock: Option<ManualClock>,
    pub dir: tempfile::TempDir,
    topology: Arc<Topology>,
    hold_timeout: TimeDelta,
    federation: Option<FederationSetup>,
    agents: Option<crate::agents::AgentsConfig>,
    operators: crate::operators::Operators,
    metrics: bool,
    database: Option<String>,
}

pub struct TestIdcBuilder {
    topology: Arc<Topology>,
    clock: Option<ManualClock>,
    hold_timeout: TimeDelta,
    federation: Option<FederationSetup>,
    agents: Option<crate::agents::AgentsConfig>,
    operators: crate::operators::Operators,
    metrics: bool,
    database: Option<String>,
}

impl TestIdc {
    /// The bundled example domain, the system clock, the default hold timeout.
    pub fn builder() -> TestIdcBuilder {
        TestIdcBuilder {
            topology: Arc::new(crate::topology_file::bundled()),
            clock: None,
            hold_timeout: crate::service::DEFAULT_HOLD_TIMEOUT,
            federation: None,
            agents: None,
            operators: crate::operators::Operators::default(),
            metrics: false,
            database: None,
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server is running")
    }

    pub fn url(&self) -> String {
        self.server().url()
    }

    pub fn idc(&self) -> &crate::Idc {
        &self.server().idc
    }

    pub async fn client(&self) -> ReservationsClient<Channel> {
        ReservationsClient::connect(self.url())
            .await
            .expect("connect to the test IDC")
    }

    /// Stops the server and starts a new one on the same data directory (and clock).
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        let clock: Arc<dyn Clock> = match &self.clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        self.server = Some(
            start(
                ServerOptions {
                    listen: "127.0.0.1:0".parse().expect("static address"),
                    data_dir: self.dir.path().to_path_buf(),
                    database: self.database.clone(),
                    topology: self.topology.clone(),
                    hold_timeout: self.hold_timeout,
                    federation: self.federation.clone(),
                    agents: self.agents.clone(),
                    operators: self.operators.clone(),
                    metrics: self
                        .metrics
                        .then(|| "127.0.0.1:0".parse().expect("static address")),
                },
                clock,
            )
            .await
            .expect("test IDC starts"),
        );
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }
}

impl TestIdcBuilder {
    pub fn topology(mut self, t: Topology) -> Self {
        self.topology = Arc::new(t);
        self
    }

    /// Runs on a virtual clock starting at `start`.
    pub fn manual_clock(mut self, start: DateTime<Utc>) -> Self {
        self.clock = Some(ManualClock::new(start));
        self
    }

    pub fn hold_timeout(mut self, t: TimeDelta) -> Self {
        self.hold_timeout = t;
        self
    }

    pub fn federation(mut self, f: FederationSetup) -> Self {
        self.federation = Some(f);
        self
    }

    /// Operators (the emergency stop) and their tokens.
    pub fn operators(mut self, o: crate::operators::Operators) -> Self {
        self.operators = o;
        self
    }

    /// Serve metrics on a free loopback port (`server().metrics`).
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// The store in this PostgreSQL database (a replica if another IDC uses it too)
    /// instead of SQLite in the temporary directory.
    pub fn database(mut self, url: Option<String>) -> Self {
        self.database = url;
        self
    }

    /// Drive these node agents.
    pub fn agents(mut self, a: crate::agents::AgentsConfig) -> Self {
        self.agents = Some(a);
        self
    }

    pub async fn start(self) -> TestIdc {
        let mut idc = TestIdc {
            server: None,
            clock: self.clock,
            dir: tempfile::tempdir().expect("temporary directory"),
            topology: self.topology,
            hold_timeout: self.hold_timeout,
            federation: self.federation,
            agents: self.agents,
            operators: self.operators,
            metrics: self.metrics,
            database: self.database,
        };
        idc.restart().await;
        idc
    }
}

/// Polls `cond` until it holds or `timeout` passes; for asynchronous effects, instead
/// of sleeping a fixed time.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
