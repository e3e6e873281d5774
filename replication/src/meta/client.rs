//! The meta client that routers and nodes embed: a fresh local copy of the cluster map, and
//! proposals routed to the leader.
//!
//! ```text
//!  MetaClient ──MetaWatch{after: v}──► any voter ──(when version > v, or after 10 s)──► State
//!      │  └── watch::Sender<Arc<ClusterState>> ◄── newest version wins
//!      └──MetaPropose──► voter ──NotLeader{leader}──► leader ──► State after apply
//! ```
//! The watch loop long-polls one voter at a time and moves to the next one when that voter
//! fails, shuts down, or answers a poll without progress (so a voter cut off from the leader
//! cannot keep the client on an old map). Versions only move forward: the map is replaced only
//! by a newer one, whichever voter it came from.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::cluster::{ClusterState, MetaCommand, NodeId};
use protocol::message::{MetaStatus, Request, Response};
use protocol::{Error, Result, auth::ClusterSecret, sqlstate};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::network::PeerPools;
use super::server::WATCH_WAIT;

/// How long `connect` keeps trying to reach some voter.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How long one proposal may take, redirects and retries included.
const PROPOSE_WAIT: Duration = Duration::from_secs(10);
/// How long a single short call (get, status, heartbeat) may take.
const CALL_WAIT: Duration = Duration::from_secs(3);

/// A handle on the meta group; cheap to clone, all clones share one map and one watch loop.
#[derive(Clone)]
pub struct MetaClient {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    watcher: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last clone is gone: nobody reads the map any more.
        self.watcher.abort();
    }
}

struct Shared {
    addrs: Vec<String>,
    pools: PeerPools,
    state: watch::Sender<Arc<ClusterState>>,
    /// The voter that last accepted a proposal or named itself leader.
    leader: Mutex<Option<String>>,
    /// Index (mod addrs.len()) of the voter the watch loop polls.
    current: AtomicUsize,
}

impl Shared {
    /// Keeps `s` if it is newer than the local map.
    fn offer(&self, s: ClusterState) {
        self.state.send_if_modified(|cur| {
            if s.version > cur.version {
                *cur = Arc::new(s);
                true
            } else {
                false
            }
        });
    }

    fn leader_hint(&self) -> Option<String> {
        self.leader.lock().ok().and_then(|l| l.clone())
    }

    fn set_leader(&self, addr: Option<String>) {
        if let Ok(mut l) = self.leader.lock() {
            *l = addr;
        }
    }

    fn addr(&self, i: usize) -> &str {
        &self.addrs[i % self.addrs.len()]
    }

    async fn call(&self, addr: &str, req: Request, wait: Duration) -> Result<Response> {
        match tokio::time::timeout(wait, self.pools.call(addr, req)).await {
            Ok(r) => r,
            Err(_) => Err(Error::connection(format!(
                "meta voter {addr} did not answer in time"
            ))),
        }
    }
}

fn unexpected(what: &str, resp: &Response) -> Error {
    Error::protocol(format!("unexpected answer to {what}: {resp:?}"))
}

impl MetaClient {
    /// Connects to any of the voters and starts the background watch loop.
    pub async fn connect(addrs: Vec<String>, secret: ClusterSecret) -> Result<MetaClient> {
        if addrs.is_empty() {
            return Err(Error::connection("no meta addresses given"));
        }
        let (state, _) = watch::channel(Arc::new(ClusterState::default()));
        let shared = Arc::new(Shared {
            addrs,
            pools: PeerPools::new(secret),
            state,
            leader: Mutex::new(None),
            current: AtomicUsize::new(0),
        });
        let deadline = Instant::now() + CONNECT_WAIT;
        'connect: loop {
            let mut last = Error::connection("no meta voter reachable");
            for i in 0..shared.addrs.len() {
                match shared
                    .call(shared.addr(i), Request::MetaGet, CALL_WAIT)
                    .await
                {
                    Ok(Response::State(s)) => {
                        shared.offer(s);
                        shared.current.store(i, Ordering::Relaxed);
                        break 'connect;
                    }
                    Ok(other) => last = unexpected("MetaGet", &other),
                    // A wrong secret will not get better by retrying.
                    Err(e) if e.code == sqlstate::INVALID_AUTHORIZATION => return Err(e),
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let watcher = tokio::spawn(watch_loop(shared.clone()));
        Ok(MetaClient {
            inner: Arc::new(Inner { shared, watcher }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The newest map this client knows.
    pub fn state(&self) -> Arc<ClusterState> {
        self.shared().state.borrow().clone()
    }

    /// A receiver that sees every newer map.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.shared().state.subscribe()
    }

    /// Proposes `cmd` through the leader; returns the map right after it was applied, or the
    /// command's refusal as an error with its SQLSTATE.
    ///
    /// A proposal whose answer was lost with its connection is retried, so in rare cases a
    /// command is applied twice (the second time it is usually refused as "already exists").
    pub async fn propose(&self, cmd: MetaCommand) -> Result<Arc<ClusterState>> {
        let shared = self.shared();
        let deadline = Instant::now() + PROPOSE_WAIT;
        let mut next = shared.current.load(Ordering::Relaxed);
        let mut target = shared
            .leader_hint()
            .unwrap_or_else(|| shared.addr(next).to_string());
        let mut last = Error::connection("no meta leader reachable");
        let mut hops = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    &last.code,
                    format!("meta proposal failed: {}", last.message),
                ));
            }
            let req = Request::MetaPropose(cmd.clone());
            match shared.call(&target, req, deadline - now).await {
                Ok(Response::State(s)) => {
                    shared.set_leader(Some(target));
                    let s = Arc::new(s);
                    shared.offer(s.as_ref().clone());
                    return Ok(s);
                }
                Ok(Response::NotLeader { leader: Some(l) }) if l != target && hops < 3 => {
                    hops += 1;
                    target = l;
                    continue;
                }
                Ok(Response::NotLeader { .. }) => {
                    // No leader known yet (an election is running): give it a moment.
                    last = Error::connection("meta group has no leader");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(other) => last = unexpected("MetaPropose", &other),
                Err(e) if e.is_connection() => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // The command itself was refused.
                Err(e) => return Err(e),
            }
            hops = 0;
            shared.set_leader(None);
            next += 1;
            target = shared.addr(next).to_string();
        }
    }

    /// Waits until the local map reaches `version`.
    pub async fn wait_for_version(&self, version: u64, timeout: Duration) -> Result<()> {
        let mut rx = self.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|s| s.version >= version).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::internal("meta client stopped")),
            Err(_) => Err(Error::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "cluster map did not reach version {version} within {timeout:?} (at {})",
                    rx.borrow().version
                ),
            )),
        }
    }

    /// The Raft status of the voter at `addr`.
    pub async fn status(&self, addr: &str) -> Result<MetaStatus> {
        match self
            .shared()
            .call(addr, Request::MetaStatus, CALL_WAIT)
            .await?
        {
            Response::MetaStatus(s) => Ok(s),
            other => Err(unexpected("MetaStatus", &other)),
        }
    }

    /// Tells meta that `node` is alive. Sent to the leader when it is known (failover decisions
    /// are the leader's), otherwise to any voter that answers.
    pub async fn heartbeat(&self, node: NodeId) -> Result<()> {
        let shared = self.shared();
        if shared.leader_hint().is_none() {
            let probe = shared
                .addr(shared.current.load(Ordering::Relaxed))
                .to_string();
            if let Ok(s) = self.status(&probe).await {
                shared.set_leader(s.leader_addr);
            }
        }
        let mut targets: Vec<String> = shared.leader_hint().into_iter().collect();
        targets.extend(shared.addrs.iter().cloned());
        let mut last = Error::connection("no meta voter reachable");
        for t in targets {
            match shared
                .call(&t, Request::MetaHeartbeat { node }, CALL_WAIT)
                .await
            {
                Ok(Response::Ok) => return Ok(()),
                Ok(other) => last = unexpected("MetaHeartbeat", &other),
                Err(e) => {
                    shared.set_leader(None);
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// Long-polls voters forever, one at a time, keeping the newest map.
async fn watch_loop(shared: Arc<Shared>) {
    let n = shared.addrs.len();
    let mut misses = 0usize;
    loop {
        let i = shared.current.load(Ordering::Relaxed);
        let after = shared.state.borrow().version;
        let req = Request::MetaWatch {
            after_version: after,
        };
        let wait = WATCH_WAIT + Duration::from_secs(5);
        match shared.call(shared.addr(i), req, wait).await {
            Ok(Response::State(s)) if s.version > after => {
                misses = 0;
                shared.offer(s);
                continue;
            }
            Ok(Response::State(_)) => {
                // Alive but nothing new for a whole poll: ask the next voter next time.
                misses = 0;
            }
            Ok(other) => {
                tracing::debug!("meta watch: {}", unexpected("MetaWatch", &other));
                misses += 1;
            }
            Err(e) => {
                tracing::debug!(voter = shared.addr(i), "meta watch failed: {e}");
                misses += 1;
            }
        }
        shared.current.store((i + 1) % n, Ordering::Relaxed);
        if misses > 0 && misses.is_multiple_of(n) {
            // Every voter failed in a row: don't spin while meta is down.
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else if misses > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
