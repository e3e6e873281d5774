//! A meta voter: storage, Raft, the internal-protocol service and the leader's placement task.
//!
//! ```text
//!            internal protocol (authenticated)
//! routers/nodes ──MetaGet/Watch/Propose/Heartbeat/Status──► MetaService ──client_write──► Raft
//! other voters  ──Raft{Vote|AppendEntries|InstallSnapshot}──►    │                          │
//!                                                                ◄── watch<ClusterState> ◄── state machine
//! ```
//! Start-up: open `<data_dir>/meta.redb`, start Raft on it, bind and serve, and, only on the voter
//! with the lowest id and only when its storage holds no Raft state yet, `initialize` the group
//! with every configured voter. A restarted voter finds its vote and log and so never
//! re-initializes; it rejoins (or, alone, re-elects itself) with the map it had applied.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use protocol::cluster::{ClusterState, MetaCommand, NodeId};
use protocol::message::{MetaStatus, Request, Response};
use protocol::rpc::{Replier, Service};
use protocol::{Error, Result, net, rpc, sqlstate};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::network::{Network, PeerPools, handle_raft};
use super::placement::{self, Bootstrap};
use super::store::{LogStore, StateMachine, open_db};
use super::types::{MetaRaft, MetaReply};
use super::{MetaConfig, command_error};

/// How long a `MetaWatch` waits for a newer map before answering with the current one.
pub const WATCH_WAIT: Duration = Duration::from_secs(10);
/// How long one proposal may take on the leader before the proposer is told to retry.
const PROPOSE_WAIT: Duration = Duration::from_secs(8);

/// Raft timing: small enough that a lost leader is replaced in about a second.
fn raft_config() -> Result<Config> {
    Config {
        cluster_name: "tessera-meta".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::internal(format!("raft config: {e}")))
}

/// The address peers reach this voter at: the configured one, with the bound port when the
/// configuration asked for port 0 (keeps a host name given in `listen`).
fn advertised(listen: &str, bound: std::net::SocketAddr) -> String {
    match listen.rsplit_once(':') {
        Some((host, "0")) if !host.is_empty() => format!("{host}:{}", bound.port()),
        Some((host, port)) if !host.is_empty() && !port.is_empty() && port != "0" => {
            listen.to_string()
        }
        _ => bound.to_string(),
    }
}

/// One running meta voter.
pub struct MetaServer {
    id: u64,
    addr: String,
    pub(crate) raft: MetaRaft,
    service: Arc<MetaService>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// True when this start called `initialize` (first start of the lowest-id voter).
    pub(crate) initialized_here: bool,
}

impl MetaServer {
    /// Opens storage, starts Raft, binds and serves the internal protocol, initializes the
    /// cluster on first start of the lowest-id voter, and starts the placement task.
    pub async fn start(cfg: MetaConfig) -> Result<Arc<MetaServer>> {
        let db = open_db(&cfg.data_dir).await?;
        let listener = net::bind(&cfg.listen)
            .await
            .map_err(|e| Error::io(format!("binding meta listener {}: {e}", cfg.listen)))?;
        let bound = listener.local_addr().map_err(Error::io)?;
        let addr = advertised(&cfg.listen, bound);
        let self_addr = cfg
            .voters
            .iter()
            .find(|(id, a)| *id == cfg.id && !a.is_empty() && !a.ends_with(":0"))
            .map_or_else(|| addr.clone(), |(_, a)| a.clone());

        let (state_tx, _) = watch::channel(Arc::new(ClusterState::default()));
        let state_tx = Arc::new(state_tx);
        let sm = StateMachine::open(db.clone(), state_tx.clone()).await?;
        let log = LogStore::new(db);
        let network = Network::new(PeerPools::new(cfg.secret.clone()));
        let raft = MetaRaft::new(cfg.id, Arc::new(raft_config()?), network, log, sm)
            .await
            .map_err(|e| Error::internal(format!("starting meta raft: {e}")))?;

        let (shutdown, _) = watch::channel(false);
        let service = Arc::new(MetaService {
            id: cfg.id,
            raft: raft.clone(),
            state: state_tx.clone(),
            heartbeats: Mutex::new(BTreeMap::new()),
            shutdown,
        });
        let serve = tokio::spawn(rpc::serve(listener, cfg.secret.clone(), service.clone()));
        let mut server = MetaServer {
            id: cfg.id,
            addr,
            raft: raft.clone(),
            service: service.clone(),
            tasks: Mutex::new(vec![serve]),
            initialized_here: false,
        };

        match initialize_if_first(&raft, &cfg, &self_addr).await {
            Ok(done) => server.initialized_here = done,
            Err(e) => {
                server.shutdown().await;
                return Err(e);
            }
        }

        let boot = Bootstrap {
            default_shards: cfg.default_shards,
            replication_factor: cfg.replication_factor,
        };
        let placement = tokio::spawn(placement::run(
            raft,
            cfg.id,
            boot,
            state_tx.subscribe(),
            service.shutdown.subscribe(),
        ));
        let mover = tokio::spawn(super::mover::run(
            server.raft.clone(),
            cfg.id,
            protocol::rpc::Pool::new(cfg.secret.clone()),
            state_tx.subscribe(),
            service.shutdown.subscribe(),
        ));
        if let Ok(mut tasks) = server.tasks.lock() {
            tasks.push(placement);
            tasks.push(mover);
        }
        tracing::info!(voter = cfg.id, addr = %server.addr, "meta voter started");
        Ok(Arc::new(server))
    }

    /// The bound listen address.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// This voter's applied cluster map.
    pub fn state(&self) -> Arc<ClusterState> {
        self.service.state.borrow().clone()
    }

    /// When each node last heartbeated to this voter (in memory only; a new leader starts empty).
    pub fn last_heartbeats(&self) -> BTreeMap<NodeId, Instant> {
        self.service
            .heartbeats
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    /// Stops serving, stops the placement task and shuts Raft down; storage closes once Raft's
    /// tasks have let go of it. Requests still arriving on open connections get 08006.
    pub async fn shutdown(&self) {
        self.service.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in tasks {
            t.abort();
            // Wait until the task is gone so its listener is closed and the address can be
            // bound again right away (a restart in the same process).
            let _ = t.await;
        }
        let _ = self.raft.shutdown().await;
        tracing::info!(voter = self.id, "meta voter stopped");
    }
}

impl Drop for MetaServer {
    fn drop(&mut self) {
        // Dropped without `shutdown`: at least stop accepting and stop proposing.
        self.service.shutdown.send_replace(true);
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

/// Initializes the group when this is the lowest-id voter and its storage is pristine.
/// Returns whether it did.
async fn initialize_if_first(raft: &MetaRaft, cfg: &MetaConfig, self_addr: &str) -> Result<bool> {
    let lowest = cfg.voters.iter().map(|(id, _)| *id).chain([cfg.id]).min();
    if lowest != Some(cfg.id) {
        return Ok(false);
    }
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| Error::internal(format!("meta raft stopped: {e}")))?;
    if initialized {
        return Ok(false);
    }
    let mut members: BTreeMap<u64, BasicNode> = cfg
        .voters
        .iter()
        .map(|(id, a)| (*id, BasicNode::new(a)))
        .collect();
    members.insert(cfg.id, BasicNode::new(self_addr));
    tracing::info!(voter = cfg.id, ?members, "initializing meta group");
    match raft.initialize(members).await {
        Ok(()) => Ok(true),
        // Another start got there first: the group exists, which is all we wanted.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
        Err(e) => Err(Error::internal(format!("initializing meta group: {e}"))),
    }
}

/// The internal-protocol handler of one voter.
pub(crate) struct MetaService {
    id: u64,
    raft: MetaRaft,
    state: Arc<watch::Sender<Arc<ClusterState>>>,
    heartbeats: Mutex<BTreeMap<NodeId, Instant>>,
    shutdown: watch::Sender<bool>,
}

impl Service for MetaService {
    async fn handle(self: Arc<Self>, req: Request, reply: Replier) {
        let resp = self.dispatch(req).await;
        reply.send(resp).await;
    }
}

fn stopping() -> Response {
    Response::Error(Error::connection("meta voter is shutting down"))
}

impl MetaService {
    async fn dispatch(&self, req: Request) -> Response {
        if *self.shutdown.borrow() {
            return stopping();
        }
        match req {
            Request::MetaGet => Response::State(self.state.borrow().as_ref().clone()),
            Request::MetaWatch { after_version } => self.watch(after_version).await,
            Request::MetaPropose(cmd) => self.propose(cmd).await,
            Request::MetaHeartbeat { node } => {
                if let Ok(mut h) = self.heartbeats.lock() {
                    h.insert(node, Instant::now());
                }
                Response::Ok
            }
            Request::MetaStatus => Response::MetaStatus(self.status()),
            Request::Raft { kind, body } => match handle_raft(&self.raft, kind, &body).await {
                Ok(bytes) => Response::Raft(bytes),
                Err(e) => Response::Error(e),
            },
            other => Response::Error(Error::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("a meta voter does not serve {other:?}"),
            )),
        }
    }

    /// Long poll: the map as soon as its version passes `after`, or the current map after
    /// `WATCH_WAIT` so the client knows this voter is alive.
    async fn watch(&self, after: u64) -> Response {
        let mut rx = self.state.subscribe();
        let mut shutdown = self.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::timeout(WATCH_WAIT, rx.wait_for(|s| s.version > after)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return stopping(),
        }
        Response::State(rx.borrow().as_ref().clone())
    }

    async fn propose(&self, cmd: MetaCommand) -> Response {
        match tokio::time::timeout(PROPOSE_WAIT, self.raft.client_write(cmd)).await {
            Err(_) => Response::Error(Error::connection("meta proposal timed out")),
            Ok(Ok(resp)) => match resp.data {
                MetaReply {
                    error: Some(text), ..
                } => Response::Error(command_error(&text)),
                MetaReply {
                    state: Some(state), ..
                } => Response::State(state),
                MetaReply { state: None, .. } => {
                    Response::State(self.state.borrow().as_ref().clone())
                }
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Response::NotLeader {
                    leader: f.leader_node.map(|n| n.addr),
                }
            }
            Ok(Err(RaftError::APIError(e))) => Response::Error(Error::internal(e.to_string())),
            // A stopped Raft: the proposer should try another voter.
            Ok(Err(RaftError::Fatal(e))) => Response::Error(Error::connection(format!(
                "meta voter {} stopped: {e}",
                self.id
            ))),
        }
    }

    fn status(&self) -> MetaStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        MetaStatus {
            id: self.id,
            leader: m.current_leader,
            leader_addr: m
                .current_leader
                .and_then(|l| membership.get_node(&l))
                .map(|n| n.addr.clone()),
            term: m.current_term,
            voters: membership.voter_ids().collect(),
            last_applied: m.last_applied.map_or(0, |l| l.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_keeps_names_and_fills_port_zero() {
        let bound: std::net::SocketAddr = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(advertised("127.0.0.1:0", bound), "127.0.0.1:4242");
        assert_eq!(advertised("meta1:0", bound), "meta1:4242");
        assert_eq!(advertised("meta1:7000", bound), "meta1:7000");
        assert_eq!(advertised(":0", bound), "127.0.0.1:4242");
    }
}
