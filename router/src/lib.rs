//! The router: the Postgres endpoint clients connect to.
//!
//! ```text
//!  client ─pgwire─► frontend (session, prepared statements)
//!                     └─► dispatch::Router ─► plan (which shards, how to combine)
//!                              ├─► nodes over the internal protocol (pooled connections)
//!                              └─► engine executor over gathered rows (memtxn)
//!  meta ─watch─► MetaClient (cached cluster map used by every plan)
//! ```
//! Routers keep no durable state: any number can run behind a TCP load balancer.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod colocate;
pub mod copy;
pub mod dispatch;
pub mod encode;
pub mod frontend;
pub mod fuzzing;
pub mod guard;
pub mod insert_select;
pub mod keyspaces;
pub mod maintenance;
pub mod memtxn;
pub mod names;
pub mod plan;
pub mod pushdown;
pub mod roles;
pub mod route_cache;
pub mod sequences;
pub mod session;
pub mod session_threads;
pub mod shapes;
pub mod status;
pub mod table_functions;
pub mod tls;
pub mod views;
pub mod wire_check;

use std::sync::Arc;

use protocol::auth::ClusterSecret;
use protocol::error::{Error, Result};
use protocol::rpc::Pool;
use replication::meta::MetaClient;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub struct RouterConfig {
    /// Postgres listen address, e.g. 127.0.0.1:5432.
    pub listen: String,
    pub meta: Vec<String>,
    pub secret: ClusterSecret,
    pub max_connections: usize,
    pub row_budget: usize,
    pub limits: guard::GuardLimits,
    /// How clients authenticate.
    pub auth: auth::AuthMethod,
    /// The first superuser (name, password), created if the cluster has no role yet.
    pub bootstrap_superuser: Option<(String, String)>,
    /// Offered to clients that send SSLRequest (`crate::tls::acceptor`).
    pub tls: Option<pgwire::tokio::tokio_rustls::TlsAcceptor>,
    /// Threads of their own for client sessions (`session_threads`); 0 runs sessions as
    /// tasks of the runtime that started the router.
    pub session_threads: usize,
}

pub struct RouterHandle {
    pub addr: std::net::SocketAddr,
    pub router: Arc<dispatch::Router>,
    task: JoinHandle<()>,
}

impl RouterHandle {
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

/// Starts a router: connects to meta, then serves Postgres clients.
pub async fn start_router(cfg: RouterConfig) -> Result<RouterHandle> {
    let meta = MetaClient::connect(cfg.meta.clone(), cfg.secret.clone()).await?;
    let router = dispatch::Router::new(
        meta,
        Pool::new(cfg.secret.clone()).with_local_calls(),
        cfg.row_budget,
    );
    if let Some((name, password)) = &cfg.bootstrap_superuser
        && router.meta.state().roles.is_empty()
    {
        // Every router of a new cluster may propose this; meta applies only the first.
        router
            .meta
            .propose(protocol::cluster::MetaCommand::BootstrapRole(
                protocol::cluster::RoleInfo::superuser(
                    name,
                    protocol::cluster::BOOTSTRAP_ROLE_OID,
                    Some(auth::encrypt_password(name, password, "scram-sha-256")),
                ),
            ))
            .await?;
    } else if cfg.auth != auth::AuthMethod::Trust && router.meta.state().roles.is_empty() {
        tracing::warn!(
            "the cluster has no role yet and no --superuser-password was given: nobody can log in"
        );
    }
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| Error::io(format!("bind {}: {e}", cfg.listen)))?;
    let addr = listener.local_addr().map_err(Error::io)?;
    let handlers = Arc::new(frontend::Handlers(frontend::Frontend::new(
        router.clone(),
        cfg.auth,
    )));
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let limits = cfg.limits;
    let tls = cfg.tls.clone();
    let session_threads = match cfg.session_threads {
        0 => None,
        n => Some(session_threads::SessionThreads::start(n)?),
    };
    let task = tokio::spawn(async move {
        loop {
            let (socket, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let handlers = handlers.clone();
            let tls = tls.clone();
            let permit = slots.clone().try_acquire_owned();
            let session = move |socket| async move {
                match permit {
                    Ok(_permit) => guard::serve(socket, handlers, limits, tls).await,
                    Err(_) => refuse_too_many(socket).await,
                }
            };
            match &session_threads {
                Some(threads) => threads.spawn(socket, session),
                None => {
                    tokio::spawn(session(socket));
                }
            }
        }
    });
    Ok(RouterHandle { addr, router, task })
}

/// Answers a connection over `max_connections` with FATAL 53300, as PostgreSQL does.
async fn refuse_too_many(mut socket: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let msg = guard::error_response(
        "FATAL",
        protocol::sqlstate::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    );
    let _ = socket.write_all(&msg).await;
    let _ = socket.shutdown().await;
}
