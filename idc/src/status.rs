//! `sluice status`: a circuit end to end. Each domain reports its part — states, each
//! node's agent (asked just now) with the circuit's counters there, the last measurement
//! — and a circuit across domains gathers every domain's part over the federation
//! protocol, each domain sharing what its policy for the aggregator allows.

use std::time::Duration;

use sluice_model::dataplane::{NodeReport, node_circuits};
use sluice_model::{
    AgentHealth, Counters, DomainStatus, Error, NodeStatus, Reservation, StatusShare,
};
use sluice_proto::v1;
use tokio::task::JoinSet;

use crate::Idc;
use crate::agents::AgentDriver;

/// How long one agent may take to say how it is.
pub const AGENT_WAIT: Duration = Duration::from_secs(3);

impl AgentDriver {
    /// Each node of `r`'s path: what its agent last answered for it, and the agent
    /// asked now (in parallel) for its health and the circuit's counters.
    pub async fn node_status(&self, r: &Reservation, wait: Duration) -> Vec<NodeStatus> {
        let reports = match self.data_plane_of(r) {
            none if none.is_empty() => nodes_of(self.idc(), r),
            reports => reports,
        };
        let mut asks = JoinSet::new();
        for (i, rep) in reports.iter().enumerate() {
            let (driver, node, id) = (self.clone(), rep.node.clone(), r.id.clone());
            asks.spawn(async move { (i, driver.ask_agent(&node, &id, wait).await) });
        }
        let mut out: Vec<NodeStatus> = reports
            .into_iter()
            .map(|report| NodeStatus {
                report,
                agent: AgentHealth::NotDriven,
                counters: None,
            })
            .collect();
        while let Some(done) = asks.join_next().await {
            if let Ok((i, (agent, counters))) = done {
                out[i].agent = agent;
                out[i].counters = counters;
            }
        }
        out
    }

    async fn ask_agent(
        &self,
        node: &str,
        id: &str,
        wait: Duration,
    ) -> (AgentHealth, Option<(Counters, Counters)>) {
        if !self.drives(node) {
            return (AgentHealth::NotDriven, None);
        }
        let mut client = match self.long_client(node) {
            Ok(c) => c,
            Err(e) => return (AgentHealth::Unreachable(e), None),
        };
        match tokio::time::timeout(wait, client.state(v1::AgentStateRequest {})).await {
            Err(_) => (
                AgentHealth::Unreachable(format!("no answer within {} ms", wait.as_millis())),
                None,
            ),
            Ok(Err(s)) => (
                AgentHealth::Unreachable(sluice_proto::status::from_status(&s).message),
                None,
            ),
            Ok(Ok(state)) => {
                let counters = state
                    .into_inner()
                    .circuits
                    .into_iter()
                    .find(|c| c.id == id)
                    .map(|c| {
                        (
                            Counters {
                                bytes: c.bytes_az,
                                packets: c.packets_az,
                                drops: c.drops_az,
                            },
                            Counters {
                                bytes: c.bytes_za,
                                packets: c.packets_za,
                                drops: c.drops_za,
                            },
                        )
                    });
                (AgentHealth::Answered, counters)
            }
        }
    }
}

/// The nodes of `r`'s path, with nothing known of them.
fn nodes_of(idc: &Idc, r: &Reservation) -> Vec<NodeReport> {
    node_circuits(idc.topology(), r)
        .unwrap_or_default()
        .into_iter()
        .map(|(node, _)| NodeReport {
            node,
            state: None,
            error: String::new(),
            updated_at: None,
        })
        .collect()
}

/// This domain's part of a circuit: reservation `id` here, as much as `share` shows
/// (nothing beyond it is gathered); each agent may take `wait` to answer.
pub async fn domain_status(
    idc: &Idc,
    agents: Option<&AgentDriver>,
    id: &str,
    share: StatusShare,
    wait: Duration,
) -> Result<DomainStatus, Error> {
    let r = idc.get(id).await?;
    if share != StatusShare::Full {
        return Ok(DomainStatus {
            domain: idc.topology().domain.clone(),
            segment_id: r.id.clone(),
            states: r.states,
            summary: r.summary().to_string(),
            shared: share,
            nodes: Vec::new(),
            last_measurement: None,
        });
    }
    let nodes = match agents {
        Some(a) => a.node_status(&r, wait).await,
        None => nodes_of(idc, &r)
            .into_iter()
            .map(|report| NodeStatus {
                report,
                agent: AgentHealth::NotDriven,
                counters: None,
            })
            .collect(),
    };
    let last_measurement = idc.measurements(&r.id).await?.pop();
    Ok(DomainStatus {
        domain: idc.topology().domain.clone(),
        segment_id: r.id.clone(),
        states: r.states,
        summary: r.summary().to_string(),
        shared: StatusShare::Full,
        nodes,
        last_measurement,
    })
}
