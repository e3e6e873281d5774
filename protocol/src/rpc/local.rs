//! Calls between roles that share a process, without the socket.
//!
//! `tessera dev` (and any deployment that runs a router beside a storage node) has the
//! router and the node services in one process. Over TCP each call costs a request encode,
//! two loopback syscalls, four task hand-offs (client writer, server reader, server writer,
//! client reader) and a response decode, which is most of a primary-key lookup's CPU. A
//! local call hands the `Request` value to the service's handler directly:
//!
//! ```text
//!  Pool::call(addr) ──► registry[addr]? ──yes──► spawn handler(req, Replier) ──► reply channel
//!                                       └─no───► RpcClient (TCP, frames)
//! ```
//!
//! What stays the same as over TCP, and why:
//! - A handler that waits (on a blocking thread, a lock, a commit) runs as a task of its
//!   own, so a caller that gives up (its client went away) never cuts it off halfway,
//!   exactly as a server handler outlives its caller. A statement's handler is first polled
//!   once on the caller's task, and most point statements are done by then (no task, no
//!   wake-ups); one that is not goes on as its own task from where it stopped.
//! - A caller's cancel signal ([`super::CANCEL`]) sets the request's `cancelled` flag.
//! - Each `Pool` is one connection to each local service: it gets its own connection id, and
//!   when the last clone of the pool is dropped and its last request has finished, the
//!   service hears `disconnected`, so state a node ties to its callers (open transactions)
//!   is released as when a socket closes. It holds its services weakly: a stopped service
//!   is not kept alive (its files open) by a pool that once called it.
//! - Only a pool holding the service's own cluster secret may call it locally; any other
//!   goes over TCP and meets the handshake.
//!
//! A service is registered by `serve` under its listener's address for as long as `serve`
//! runs: aborting it (stopping an in-process role) removes it. The simulated network (the
//! `sim` feature) never registers, so simulations still cross their network.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};

use tokio::sync::mpsc;

use super::{CANCEL, Replier, Service};
use crate::auth::ClusterSecret;
use crate::error::{Error, Result};
use crate::message::{Request, Response};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A registered service, type-erased.
pub(super) trait Handler: Send + Sync {
    fn handle(&self, req: Request, reply: Replier) -> BoxFuture;
    fn disconnected(&self, conn: u64) -> BoxFuture;
}

impl<S: Service> Handler for Arc<S> {
    fn handle(&self, req: Request, reply: Replier) -> BoxFuture {
        Box::pin(self.clone().handle(req, reply))
    }

    fn disconnected(&self, conn: u64) -> BoxFuture {
        Box::pin(self.clone().disconnected(conn))
    }
}

struct Entry {
    /// Tells registrations apart when an address is reused.
    token: u64,
    secret: ClusterSecret,
    handler: Arc<dyn Handler>,
}

static REGISTRY: LazyLock<RwLock<HashMap<String, Entry>>> = LazyLock::new(Default::default);

static TOKENS: AtomicU64 = AtomicU64::new(1);

/// Connection ids of local callers; a server numbers its sockets from 1, far below.
static LOCAL_CONNS: AtomicU64 = AtomicU64::new(1 << 62);

/// Keeps a service callable in-process while it lives; dropping it removes the service.
pub(super) struct Registration {
    addr: String,
    token: u64,
}

/// Makes `service` callable in-process at `addr` (the address its listener is bound to).
pub(super) fn register<S: Service>(
    addr: String,
    secret: &ClusterSecret,
    service: Arc<S>,
) -> Registration {
    let token = TOKENS.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut registry) = REGISTRY.write() {
        registry.insert(
            addr.clone(),
            Entry {
                token,
                secret: secret.clone(),
                handler: Arc::new(service),
            },
        );
    }
    Registration { addr, token }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut registry) = REGISTRY.write()
            && registry
                .get(&self.addr)
                .is_some_and(|e| e.token == self.token)
        {
            registry.remove(&self.addr);
        }
    }
}

/// One pool's in-process connections: its connection id, and the services it has called
/// (told `disconnected` when the pool goes).
pub(super) struct LocalConnection {
    conn: u64,
    used: Mutex<Vec<Weak<dyn Handler>>>,
}

impl LocalConnection {
    pub(super) fn new() -> Self {
        LocalConnection {
            conn: LOCAL_CONNS.fetch_add(1, Ordering::Relaxed),
            used: Mutex::default(),
        }
    }

    /// The handler registered at `addr` under `secret`, if any (if none, go over TCP).
    pub(super) fn handler(&self, addr: &str, secret: &ClusterSecret) -> Option<Arc<dyn Handler>> {
        let registry = REGISTRY.read().ok()?;
        let entry = registry.get(addr).filter(|e| e.secret == *secret)?;
        let handler = entry.handler.clone();
        drop(registry);
        if let Ok(mut used) = self.used.lock()
            && !used
                .iter()
                .any(|h| std::ptr::addr_eq(h.as_ptr(), Arc::as_ptr(&handler)))
        {
            used.retain(|h| h.strong_count() > 0);
            used.push(Arc::downgrade(&handler));
        }
        Some(handler)
    }

    /// Sends one request to a local service and waits for its answer.
    pub(super) async fn call(
        self: &Arc<Self>,
        handler: Arc<dyn Handler>,
        req: Request,
    ) -> Result<Response> {
        // Room for one answer: a call takes the first and hangs up, so a handler that sent
        // more is told the caller is gone instead of waiting for room.
        let (tx, mut rx) = mpsc::channel(1);
        let cancelled = Arc::new(AtomicBool::new(false));
        let reply = Replier {
            id: 0,
            tx,
            conn: self.conn,
            cancelled: cancelled.clone(),
        };
        // A statement often finishes without waiting on anything (a read by key, a quick
        // write in a transaction): its first poll runs here, on the caller's task, which
        // saves a task and two wake-ups. A handler that is not done by then goes on as its
        // own task, so a caller that gives up still never cuts it off halfway.
        let inline = matches!(req, Request::Execute { .. });
        let mut handling = handler.handle(req, reply);
        if inline && first_poll_finishes(&mut handling) {
            // Its reply sender goes with it, so the wait below ends either way.
            drop(handling);
        } else {
            // The handler keeps the connection open until it ends, as a socket would be.
            let connection = self.clone();
            tokio::spawn(async move {
                handling.await;
                drop(connection);
            });
        }
        let answer = match CANCEL.try_with(Arc::clone) {
            Err(_) => rx.recv().await,
            Ok(signal) => {
                tokio::select! {
                    answer = rx.recv() => answer,
                    _ = signal.fired() => {
                        cancelled.store(true, Ordering::SeqCst);
                        rx.recv().await
                    }
                }
            }
        };
        drop(rx);
        match answer {
            Some((_, Response::Error(e))) => Err(e),
            Some((_, answer)) => Ok(answer),
            None => Err(Error::connection(
                "the in-process service ended the request without an answer",
            )),
        }
    }
}

/// Polls `handling` once on this thread; true if it finished (or panicked, which ends it
/// as a panic in its own task would: the caller hears no answer).
fn first_poll_finishes(handling: &mut BoxFuture) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // A later poll from the spawned task registers the real waker: a future polled again
    // re-checks whatever it waits on, so nothing signalled in between is missed.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handling.as_mut().poll(&mut cx).is_ready()
    }))
    .unwrap_or(true)
}

impl Drop for LocalConnection {
    fn drop(&mut self) {
        let used = match self.used.get_mut() {
            Ok(used) => std::mem::take(used),
            Err(_) => return,
        };
        if used.is_empty() {
            return;
        }
        let conn = self.conn;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for handler in used.iter().filter_map(Weak::upgrade) {
                    handler.disconnected(conn).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rpc::{Pool, serve};

    /// Answers with the connection id it was called on, and records disconnections.
    #[derive(Default)]
    struct Echo {
        gone: Mutex<Vec<u64>>,
    }

    impl Service for Echo {
        async fn handle(self: Arc<Self>, _req: Request, reply: Replier) {
            reply.send(Response::Checksum(reply.conn)).await;
        }

        async fn disconnected(self: Arc<Self>, conn: u64) {
            self.gone.lock().unwrap().push(conn);
        }
    }

    async fn started(secret: &ClusterSecret) -> (String, Arc<Echo>, tokio::task::JoinHandle<()>) {
        let listener = crate::net::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let echo = Arc::new(Echo::default());
        let task = tokio::spawn(serve(listener, secret.clone(), echo.clone()));
        // `serve` registers on its first poll.
        for _ in 0..100 {
            if REGISTRY.read().unwrap().contains_key(&addr) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (addr, echo, task)
    }

    async fn conn_of(pool: &Pool, addr: &str) -> Result<u64> {
        match pool.call(addr, Request::ShardChecksum { shard: 0 }).await? {
            Response::Checksum(conn) => Ok(conn),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn local_calls_skip_the_socket_only_when_asked_and_with_the_secret() {
        let secret = ClusterSecret::new("s3cret");
        let (addr, echo, task) = started(&secret).await;

        let local = Pool::new(secret.clone()).with_local_calls();
        let conn = conn_of(&local, &addr).await.unwrap();
        assert!(conn >= 1 << 62, "a local connection id, got {conn}");
        assert_eq!(
            conn_of(&local, &addr).await.unwrap(),
            conn,
            "one connection per pool"
        );

        // Without opting in, or with another secret, a call crosses TCP (and its handshake).
        let tcp = Pool::new(secret.clone());
        assert!(conn_of(&tcp, &addr).await.unwrap() < 1 << 62);
        let stranger = Pool::new(ClusterSecret::new("wrong")).with_local_calls();
        assert!(conn_of(&stranger, &addr).await.is_err());

        // The last clone of the pool going is the connection closing.
        let clone = local.clone();
        drop(local);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!echo.gone.lock().unwrap().contains(&conn));
        drop(clone);
        for _ in 0..100 {
            if echo.gone.lock().unwrap().contains(&conn) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(echo.gone.lock().unwrap().contains(&conn));

        // A stopped service is no longer reachable in-process.
        task.abort();
        let _ = task.await;
        let after = Pool::new(secret).with_local_calls();
        assert!(conn_of(&after, &addr).await.is_err());
    }
}
