//! Multiplexed request/response over one authenticated connection, client and server side.
//!
//! ```text
//!  callers ──call()/stream()──► writer task ──frames──► server: one task per request
//!     ▲                                                       │
//!     └──── pending[id] ◄── reader task ◄──frames (id, Response)─┘
//! ```
//! Each request gets an id; the reader hands each response to the waiter registered for its
//! id. A stream (a subscription) keeps its waiter until `End` or `Error`. When the connection
//! drops every waiter gets a connection error (SQLSTATE 08006) and the client is marked closed;
//! `Pool` then opens a fresh one on next use.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::auth::{ClusterSecret, client_handshake, server_handshake};
use crate::error::{Error, Result};
use crate::frame::{MAX_FRAME, read_frame, write_queued};
use crate::message::{Request, Response};
use crate::net;

#[cfg(not(feature = "sim"))]
mod local;

/// How long a connect plus handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

enum Waiter {
    Once(oneshot::Sender<Response>),
    Stream(mpsc::Sender<Response>),
}

struct Shared {
    pending: Mutex<HashMap<u64, Waiter>>,
    closed: AtomicBool,
}

impl Shared {
    fn fail_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let waiters: Vec<Waiter> = match self.pending.lock() {
            Ok(mut p) => p.drain().map(|(_, w)| w).collect(),
            Err(_) => return,
        };
        for w in waiters {
            let err = Response::Error(Error::connection("connection to peer lost"));
            match w {
                Waiter::Once(tx) => {
                    let _ = tx.send(err);
                }
                Waiter::Stream(tx) => {
                    let _ = tx.try_send(err);
                }
            }
        }
    }
}

/// A client connection; cheap to clone, shared by many concurrent callers.
#[derive(Clone)]
pub struct RpcClient {
    outgoing: mpsc::Sender<(u64, Request)>,
    shared: Arc<Shared>,
    next_id: Arc<AtomicU64>,
    pub addr: String,
}

impl RpcClient {
    /// Connects to `addr` and proves the cluster secret.
    pub async fn connect(addr: &str, secret: &ClusterSecret) -> Result<RpcClient> {
        let connecting = async {
            let mut stream = net::connect(addr).await?;
            client_handshake(&mut stream, secret).await?;
            Ok::<_, Error>(stream)
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| Error::connection(format!("timed out connecting to {addr}")))?
            .map_err(|e| Error::new(&e.code, format!("cannot reach {addr}: {}", e.message)))?;
        let (reader, mut writer) = tokio::io::split(stream);
        // Buffered: a read syscall brings in every frame that has arrived, not 4 bytes.
        let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let (outgoing, mut rx) = mpsc::channel::<(u64, Request)>(1024);

        let write_shared = shared.clone();
        tokio::spawn(async move {
            let _ = write_queued(&mut writer, &mut rx).await;
            // Every handle is gone (or the link broke): close our side so the server ends the
            // connection and our reader sees the end of the stream.
            use tokio::io::AsyncWriteExt;
            let _ = writer.shutdown().await;
            write_shared.fail_all();
        });
        let read_shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let frame: Option<(u64, Response)> =
                    read_frame(&mut reader, MAX_FRAME).await.unwrap_or_default();
                let Some((id, resp)) = frame else { break };
                let last = matches!(resp, Response::End | Response::Error(_));
                let waiter = {
                    let Ok(mut pending) = read_shared.pending.lock() else {
                        break;
                    };
                    match pending.get(&id) {
                        Some(Waiter::Stream(_)) if !last => None,
                        _ => pending.remove(&id),
                    }
                };
                match waiter {
                    Some(Waiter::Once(tx)) => {
                        let _ = tx.send(resp);
                    }
                    Some(Waiter::Stream(tx)) => {
                        let _ = tx.send(resp).await;
                    }
                    None => {
                        // A stream item: forward without removing the waiter.
                        let tx = match read_shared.pending.lock() {
                            Ok(p) => match p.get(&id) {
                                Some(Waiter::Stream(tx)) => Some(tx.clone()),
                                _ => None,
                            },
                            Err(_) => break,
                        };
                        if let Some(tx) = tx
                            && tx.send(resp).await.is_err()
                            && let Ok(mut p) = read_shared.pending.lock()
                        {
                            p.remove(&id);
                        }
                    }
                }
            }
            read_shared.fail_all();
        });
        Ok(RpcClient {
            outgoing,
            shared,
            next_id: Arc::new(AtomicU64::new(1)),
            addr: addr.to_string(),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    fn register(&self, waiter: Waiter) -> Result<u64> {
        if self.is_closed() {
            return Err(Error::connection(format!(
                "connection to {} is closed",
                self.addr
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared
            .pending
            .lock()
            .map_err(|_| Error::internal("poisoned lock"))?
            .insert(id, waiter);
        Ok(id)
    }

    /// Sends a request and waits for its single response; `Response::Error` becomes `Err`.
    /// Under a [`CANCEL`] signal that fires, the server is asked to stop the request, and
    /// the call still waits for its real outcome.
    pub async fn call(&self, req: Request) -> Result<Response> {
        let (tx, rx) = oneshot::channel();
        let id = self.register(Waiter::Once(tx))?;
        self.outgoing
            .send((id, req))
            .await
            .map_err(|_| Error::connection("connection closed"))?;
        let response = match CANCEL.try_with(Arc::clone) {
            Err(_) => rx.await,
            Ok(signal) => {
                tokio::pin!(rx);
                tokio::select! {
                    r = &mut rx => r,
                    _ = signal.fired() => {
                        let _ = self.outgoing.try_send((0, Request::Cancel { id }));
                        rx.await
                    }
                }
            }
        };
        match response.map_err(|_| Error::connection("connection closed"))? {
            Response::Error(e) => Err(e),
            other => Ok(other),
        }
    }

    /// Sends a request whose answer is a stream of responses, ended by `End` or `Error`.
    pub async fn stream(&self, req: Request, buffer: usize) -> Result<mpsc::Receiver<Response>> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let id = self.register(Waiter::Stream(tx))?;
        self.outgoing
            .send((id, req))
            .await
            .map_err(|_| Error::connection("connection closed"))?;
        Ok(rx)
    }
}

tokio::task_local! {
    /// The cancel signal of the client statement the current task runs: calls made under
    /// it forward a cancel to the server that runs them.
    pub static CANCEL: Arc<CancelSignal>;
}

/// A one-shot signal that a client cancelled its statement.
#[derive(Default)]
pub struct CancelSignal {
    fired: AtomicBool,
    notify: tokio::sync::Notify,
}

impl CancelSignal {
    pub fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Resolves once `fire` was called (at once if it already was).
    pub async fn fired(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.fired.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// A handle for answering one request (several times, for a stream).
pub struct Replier {
    id: u64,
    tx: mpsc::Sender<(u64, Response)>,
    /// The connection the request came on (unique within this server).
    pub conn: u64,
    /// Set when the caller sends `Request::Cancel` for this request.
    pub cancelled: Arc<AtomicBool>,
}

impl Replier {
    /// Sends a response; false once the connection is gone.
    pub async fn send(&self, resp: Response) -> bool {
        self.tx.send((self.id, resp)).await.is_ok()
    }

    /// True once the client connection has gone away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A role's request handler.
pub trait Service: Send + Sync + 'static {
    fn handle(self: Arc<Self>, req: Request, reply: Replier) -> impl Future<Output = ()> + Send;

    /// Called once a connection has ended, after its handlers stopped: state tied to the
    /// connection (a router's open transactions) must be released.
    fn disconnected(self: Arc<Self>, conn: u64) -> impl Future<Output = ()> + Send {
        let _ = conn;
        async {}
    }
}

/// Accepts connections forever, authenticating each before serving its requests.
///
/// Every connection, and every request handler it starts, lives in a `JoinSet` owned by this
/// future: aborting the task that runs `serve` closes all of its connections at once, so an
/// in-process role can really stop.
pub async fn serve<S: Service>(listener: net::TcpListener, secret: ClusterSecret, service: Arc<S>) {
    // Callable in-process for as long as this runs (see `local`).
    #[cfg(not(feature = "sim"))]
    let _local = listener
        .local_addr()
        .ok()
        .map(|addr| local::register(addr.to_string(), &secret, service.clone()));
    let mut connections = tokio::task::JoinSet::new();
    let mut next_conn: u64 = 0;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = service.clone();
        let secret = secret.clone();
        next_conn += 1;
        let conn = next_conn;
        connections.spawn(async move {
            if let Err(e) = serve_connection(stream, &secret, service.clone(), conn).await {
                tracing::debug!("internal connection from {peer} ended: {e}");
            }
            service.disconnected(conn).await;
        });
    }
}

async fn serve_connection<S: Service>(
    mut stream: net::TcpStream,
    secret: &ClusterSecret,
    service: Arc<S>,
    conn: u64,
) -> Result<()> {
    #[cfg(not(feature = "sim"))]
    let _ = stream.set_nodelay(true);
    tokio::time::timeout(CONNECT_TIMEOUT, server_handshake(&mut stream, secret))
        .await
        .map_err(|_| Error::protocol("handshake timed out"))??;
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
    let (tx, mut rx) = mpsc::channel::<(u64, Response)>(1024);
    let mut tasks = tokio::task::JoinSet::new();
    // Cancel flags of the requests in flight, by request id (see `Request::Cancel`).
    let mut cancels: HashMap<u64, std::sync::Weak<AtomicBool>> = HashMap::new();
    let write_task = tokio::spawn(async move {
        let _ = write_queued(&mut writer, &mut rx).await;
        use tokio::io::AsyncWriteExt;
        let _ = writer.shutdown().await;
    });
    let result = loop {
        // Reading a frame is not cancel-safe (a half-read frame would be lost), so nothing
        // races it; finished handlers are reaped between frames instead.
        let frame: Option<(u64, Request)> = match read_frame(&mut reader, MAX_FRAME).await {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        while tasks.try_join_next().is_some() {}
        if write_task.is_finished() {
            break Ok(());
        }
        let Some((id, req)) = frame else { break Ok(()) };
        if let Request::Cancel { id: target } = req {
            if let Some(flag) = cancels.get(&target).and_then(std::sync::Weak::upgrade) {
                flag.store(true, Ordering::SeqCst);
            }
            continue;
        }
        if cancels.len() > 1024 {
            cancels.retain(|_, f| f.strong_count() > 0);
        }
        let cancelled = Arc::new(AtomicBool::new(false));
        cancels.insert(id, Arc::downgrade(&cancelled));
        let replier = Replier {
            id,
            tx: tx.clone(),
            conn,
            cancelled,
        };
        tasks.spawn(service.clone().handle(req, replier));
    };
    // The client is gone: stop its handlers (streams would otherwise run on), then the writer.
    tasks.shutdown().await;
    drop(tx);
    write_task.abort();
    result
}

/// Client connections by address, reopened when they drop.
#[derive(Clone)]
pub struct Pool {
    secret: ClusterSecret,
    clients: Arc<tokio::sync::Mutex<HashMap<String, RpcClient>>>,
    /// Where connections are made: the runtime the pool was created on, if any. A socket
    /// and its reader and writer tasks belong to the runtime that connects, and one pool
    /// serves callers on many runtimes (a router's session threads): the connection must
    /// not live on whichever session thread happened to dial first.
    runtime: Option<tokio::runtime::Handle>,
    /// Set by `with_local_calls`: calls to services in this process skip the socket.
    #[cfg(not(feature = "sim"))]
    local: Option<Arc<local::LocalConnection>>,
}

impl Pool {
    pub fn new(secret: ClusterSecret) -> Self {
        Pool {
            secret,
            clients: Arc::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            #[cfg(not(feature = "sim"))]
            local: None,
        }
    }

    /// Makes this pool's connections on `runtime` instead of the one it was created on.
    pub fn connecting_on(mut self, runtime: Option<tokio::runtime::Handle>) -> Self {
        self.runtime = runtime;
        self
    }

    /// A pool whose `call`s to a service running in this same process (registered by
    /// `serve`) are handed to it directly instead of over TCP; streams still use TCP.
    #[cfg_attr(feature = "sim", allow(unused_mut))]
    pub fn with_local_calls(mut self) -> Self {
        #[cfg(not(feature = "sim"))]
        {
            self.local = Some(Arc::new(local::LocalConnection::new()));
        }
        self
    }

    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// A live client for `addr`, connecting if needed.
    pub async fn get(&self, addr: &str) -> Result<RpcClient> {
        if let Some(c) = self.clients.lock().await.get(addr)
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        // Connect without holding the map: a dead peer's connect timeout must not stall
        // calls to every other peer.
        let client = match &self.runtime {
            Some(runtime) => {
                let (addr, secret) = (addr.to_string(), self.secret.clone());
                runtime
                    .spawn(async move { RpcClient::connect(&addr, &secret).await })
                    .await
                    .map_err(|e| Error::connection(format!("connecting failed: {e}")))??
            }
            None => RpcClient::connect(addr, &self.secret).await?,
        };
        let mut clients = self.clients.lock().await;
        match clients.get(addr) {
            // Another caller connected meanwhile: share its connection, drop ours.
            Some(c) if !c.is_closed() => Ok(c.clone()),
            _ => {
                clients.insert(addr.to_string(), client.clone());
                Ok(client)
            }
        }
    }

    /// Sends one request to `addr` on a live pooled connection. It is never resent: once
    /// sent, a lost connection leaves its outcome unknown, and only the caller can judge
    /// whether repeating it is safe.
    pub async fn call(&self, addr: &str, req: Request) -> Result<Response> {
        #[cfg(not(feature = "sim"))]
        if let Some(local) = &self.local
            && let Some(handler) = local.handler(addr, &self.secret)
        {
            return local.call(handler, req).await;
        }
        self.get(addr).await?.call(req).await
    }
}

/// The same RPC stack over turmoil's simulated network (`cargo test -p protocol --features
/// sim`): hosts addressed by name, a partition that cuts a live connection, and the secret
/// check, all deterministic for a given seed.
#[cfg(all(test, feature = "sim"))]
mod sim_tests {
    use super::*;

    struct Answer;

    impl Service for Answer {
        async fn handle(self: Arc<Self>, req: Request, reply: Replier) {
            let resp = match req {
                Request::ShardChecksum { shard } => Response::Checksum(u64::from(shard) * 10),
                _ => Response::Ok,
            };
            reply.send(resp).await;
        }
    }

    #[test]
    fn calls_secrets_and_partitions_over_the_simulated_network() {
        let mut sim = turmoil::Builder::new().rng_seed(7).build();
        sim.host("node", || async {
            let listener = net::bind("0.0.0.0:7500").await?;
            serve(listener, ClusterSecret::new("s3cret"), Arc::new(Answer)).await;
            Ok(())
        });
        sim.client("router", async {
            let client = RpcClient::connect("node:7500", &ClusterSecret::new("s3cret")).await?;
            let resp = client.call(Request::ShardChecksum { shard: 4 }).await?;
            assert_eq!(resp, Response::Checksum(40));
            assert!(
                RpcClient::connect("node:7500", &ClusterSecret::new("wrong"))
                    .await
                    .is_err()
            );
            turmoil::partition("router", "node");
            let cut = tokio::time::timeout(
                Duration::from_secs(5),
                client.call(Request::ShardChecksum { shard: 1 }),
            )
            .await;
            assert!(!matches!(cut, Ok(Ok(_))), "no answer crosses a partition");
            turmoil::repair("router", "node");
            let again = RpcClient::connect("node:7500", &ClusterSecret::new("s3cret")).await?;
            assert_eq!(
                again.call(Request::ShardChecksum { shard: 2 }).await?,
                Response::Checksum(20)
            );
            Ok(())
        });
        sim.run().expect("simulation passes");
    }
}
