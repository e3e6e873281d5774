//! Raft RPCs between meta voters, carried by the internal protocol.
//!
//! ```text
//! openraft (voter A)                                      voter B
//!   Peer::vote(req) ─► Request::Raft{Vote, bincode(req)} ──► handle_raft ─► raft.vote(req)
//!                  ◄── Response::Raft(bincode(Result<VoteResponse, RaftError>)) ◄──┘
//! ```
//! Connections come from a `protocol::rpc::Pool` per peer address (`PeerPools`), so they are
//! authenticated with the cluster secret and reopened after a peer restarts, and a peer whose
//! connect hangs (a partition drops SYNs) cannot hold up heartbeats to the others: `Pool`
//! keeps its lock while it connects. A peer that cannot be reached, or answers with a
//! connection-class error because it is shutting down, is reported to openraft as
//! `Unreachable`, which makes it back off instead of spinning.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    Infallible, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use protocol::auth::ClusterSecret;
use protocol::frame::{decode, encode};
use protocol::message::{RaftKind, Request, Response};
use protocol::rpc::Pool;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{MetaRaft, TypeConfig};

/// One connection pool per peer address, kept for the life of the voter or client so that
/// connections are reused (and not leaked) across openraft's re-creation of peer clients.
#[derive(Clone)]
pub struct PeerPools {
    secret: ClusterSecret,
    pools: Arc<Mutex<BTreeMap<String, Pool>>>,
    /// The runtime the pools connect on (see `Pool::connecting_on`): a pool redialled from
    /// a router session must not tie the meta connection to that session's thread.
    runtime: Option<tokio::runtime::Handle>,
}

impl PeerPools {
    pub fn new(secret: ClusterSecret) -> Self {
        PeerPools {
            secret,
            pools: Arc::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    fn pool(&self) -> Pool {
        Pool::new(self.secret.clone()).connecting_on(self.runtime.clone())
    }

    /// The pool for `addr`; never blocks on the network.
    pub fn get(&self, addr: &str) -> Pool {
        match self.pools.lock() {
            Ok(mut pools) => pools
                .entry(addr.to_string())
                .or_insert_with(|| self.pool())
                .clone(),
            // A poisoned map only loses connection reuse.
            Err(_) => self.pool(),
        }
    }

    /// Sends one request to `addr` on its own pool.
    ///
    /// After a connection-class error the pool is dropped, so the next call dials afresh.
    /// `Pool` alone only redials when its socket is closed, but a voter shut down inside a
    /// process (tests, `tessera dev`) leaves its accepted connections open, answering 08006,
    /// and a voter restarted on the same address would never be reached again.
    pub async fn call(&self, addr: &str, req: Request) -> protocol::Result<Response> {
        let res = self.get(addr).call(addr, req).await;
        if res.as_ref().is_err_and(|e| e.is_connection())
            && let Ok(mut pools) = self.pools.lock()
        {
            pools.remove(addr);
        }
        res
    }
}

/// Creates a `Peer` per target voter.
pub struct Network {
    pools: PeerPools,
}

impl Network {
    pub fn new(pools: PeerPools) -> Self {
        Network { pools }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            pools: self.pools.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// The client side of Raft RPCs to one voter.
pub struct Peer {
    pools: PeerPools,
    target: u64,
    node: BasicNode,
}

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        kind: RaftKind,
        req: &Req,
        ttl: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        let body = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let call = self
            .pools
            .call(&self.node.addr, Request::Raft { kind, body });
        let resp = match tokio::time::timeout(ttl, call).await {
            Err(_) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "{kind:?} to voter {} at {} timed out",
                        self.target, self.node.addr
                    ),
                );
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(e)) if e.is_connection() => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(e)) => return Err(RPCError::Network(NetworkError::new(&e))),
            Ok(Ok(r)) => r,
        };
        let bytes = match resp {
            Response::Raft(bytes) => bytes,
            other => {
                let e = protocol::Error::protocol(format!(
                    "unexpected answer to a Raft RPC: {other:?}"
                ));
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        };
        let result: Result<Resp, RaftError<u64, E>> =
            decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, Infallible> {
        self.call(RaftKind::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(RaftKind::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, Infallible> {
        self.call(RaftKind::Vote, &rpc, option.hard_ttl()).await
    }
}

/// The server side: decodes one Raft RPC, hands it to the local Raft, encodes its answer.
///
/// A malformed body is a protocol error to the sender, never a panic here.
pub async fn handle_raft(
    raft: &MetaRaft,
    kind: RaftKind,
    body: &[u8],
) -> protocol::Result<Vec<u8>> {
    match kind {
        RaftKind::Vote => {
            let req: VoteRequest<u64> = decode(body)?;
            encode(&raft.vote(req).await)
        }
        RaftKind::AppendEntries => {
            let req: AppendEntriesRequest<TypeConfig> = decode(body)?;
            encode(&raft.append_entries(req).await)
        }
        RaftKind::InstallSnapshot => {
            let req: InstallSnapshotRequest<TypeConfig> = decode(body)?;
            encode(&raft.install_snapshot(req).await)
        }
    }
}
