//! An in-process cluster (meta, nodes, router) for tests that need many quick clusters.
// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::auth::ClusterSecret;

pub struct Cluster {
    pub port: u16,
    meta_addr: String,
    secret: ClusterSecret,
    _dir: TempDir,
    _meta: Arc<replication::meta::MetaServer>,
    _nodes: Vec<replication::node_runtime::NodeHandle>,
    pub router: router::RouterHandle,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Gives `kv` a new, empty column `v` (the old one renamed to `old`) and fills it with
/// `'n<k>'` for k ≥ 15: a statement bound to the old column would now read the wrong one.
pub const REPLACE_KV_V: &str = "ALTER TABLE kv RENAME COLUMN v TO old;
     ALTER TABLE kv ADD COLUMN v text;
     UPDATE kv SET v = 'n' || k WHERE k >= 15";

pub async fn start_cluster(nodes: u64, shards: u32, replicas: u32) -> Cluster {
    start_cluster_with(
        nodes,
        shards,
        replicas,
        router::auth::AuthMethod::ScramSha256,
    )
    .await
}

/// A cluster whose router authenticates with `auth`; the superuser is tessera/tessera.
pub async fn start_cluster_with(
    nodes: u64,
    shards: u32,
    replicas: u32,
    auth: router::auth::AuthMethod,
) -> Cluster {
    let dir = std::env::temp_dir().join(format!(
        "tessera-test-{}-{}-{}",
        std::process::id(),
        shards,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let secret = ClusterSecret::new("slt-secret");
    let meta = replication::meta::MetaServer::start(replication::meta::MetaConfig {
        id: 1,
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("meta"),
        voters: Vec::new(),
        secret: secret.clone(),
        default_shards: shards,
        replication_factor: replicas,
    })
    .await
    .expect("meta starts");
    let mut handles = Vec::new();
    for id in 1..=nodes {
        handles.push(
            replication::node_runtime::start_node(replication::node_runtime::NodeConfig {
                id,
                listen: "127.0.0.1:0".into(),
                advertise: None,
                data_dir: dir.join(format!("node-{id}")),
                meta: vec![meta.addr()],
                secret: secret.clone(),
                shard: engine::shard::ShardOptions::default(),
                clock: Arc::new(protocol::clock::SystemClock),
            })
            .await
            .expect("node starts"),
        );
    }
    let router = router::start_router(router_config(meta.addr(), secret.clone(), auth))
        .await
        .expect("router starts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while router.router.meta.state().shards.len() < shards as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shards were not placed in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Cluster {
        port: router.addr.port(),
        meta_addr: meta.addr(),
        secret,
        _dir: TempDir(dir),
        _meta: meta,
        _nodes: handles,
        router,
    }
}

fn router_config(
    meta: String,
    secret: ClusterSecret,
    auth: router::auth::AuthMethod,
) -> router::RouterConfig {
    router::RouterConfig {
        listen: "127.0.0.1:0".into(),
        meta: vec![meta],
        secret,
        max_connections: 100,
        row_budget: router::memtxn::DEFAULT_ROW_BUDGET,
        limits: router::guard::GuardLimits::default(),
        auth,
        bootstrap_superuser: Some(("tessera".into(), "tessera".into())),
        tls: None,
        session_threads: 2,
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.router.shutdown();
        for n in &self._nodes {
            n.shutdown();
        }
    }
}

impl Cluster {
    /// Another router on the same meta, authenticating with `auth`.
    pub async fn extra_router(&self, auth: router::auth::AuthMethod) -> router::RouterHandle {
        router::start_router(router_config(
            self.meta_addr.clone(),
            self.secret.clone(),
            auth,
        ))
        .await
        .expect("router starts")
    }

    /// Another router on the same meta, serving TLS with this certificate and key (PEM files).
    pub async fn tls_router(
        &self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> router::RouterHandle {
        let acceptor = router::tls::acceptor(cert, key).expect("certificate loads");
        let mut config = router_config(
            self.meta_addr.clone(),
            self.secret.clone(),
            router::auth::AuthMethod::ScramSha256,
        );
        config.tls = Some(acceptor);
        router::start_router(config).await.expect("router starts")
    }

    /// Two-phase-commit decision records kept by every shard's primary.
    pub async fn decisions_kept(&self) -> usize {
        let router = &self.router.router;
        let state = router.meta.state();
        let mut kept = 0;
        for (id, shard) in &state.shards {
            let addr = state
                .node_addr(shard.primary)
                .expect("primary has an address");
            let req = protocol::message::Request::ShardDecisions { shard: *id };
            match router.pool.call(addr, req).await {
                Ok(protocol::message::Response::Decisions(d)) => kept += d.len(),
                other => panic!("ShardDecisions on shard {id}: {other:?}"),
            }
        }
        kept
    }

    /// A connected tokio-postgres client.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=tessera password=tessera dbname=tessera",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connects");
        tokio::spawn(conn);
        client
    }
}
