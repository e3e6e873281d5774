//! `tessera dev`: a whole cluster in one process, for a first try and for tests.
//!
//! ```text
//!  DIR/meta      meta voter 1 (single-voter Raft)
//!  DIR/node-1 …  storage nodes 1..=N, each hosting primaries and replicas
//!  router        Postgres on --port
//! ```
//! Every role is the same code that runs as its own process; only the wiring differs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use protocol::auth::ClusterSecret;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Data directory (created if missing).
    #[arg(long, default_value = "tessera-data")]
    data: PathBuf,
    /// Postgres port of the router.
    #[arg(long, default_value_t = 5433)]
    port: u16,
    /// Storage nodes.
    #[arg(long, default_value_t = 2)]
    nodes: u64,
    /// Shards of the default keyspace.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Copies of each shard, primary included (at most --nodes).
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// Client authentication: scram-sha-256, md5 or trust.
    #[arg(long, default_value = "scram-sha-256")]
    auth: router::auth::AuthMethod,
    /// Password of the superuser `tessera`, set when the data directory is new.
    #[arg(
        long,
        env = "TESSERA_PASSWORD",
        default_value = "tessera",
        hide_env_values = true
    )]
    password: String,
}

pub async fn run(args: DevArgs) -> Result<()> {
    if args.nodes == 0 || args.shards == 0 {
        bail!("--nodes and --shards must be at least 1");
    }
    let replicas = args.replicas.clamp(1, args.nodes as u32);
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    // In-process roles share a throwaway secret; nothing outside can reach them without it.
    let secret = ClusterSecret::new(format!("dev-{}-{}", std::process::id(), rand_suffix()));
    let meta = replication::meta::MetaServer::start(replication::meta::MetaConfig {
        id: 1,
        listen: "127.0.0.1:0".into(),
        data_dir: args.data.join("meta"),
        voters: Vec::new(),
        secret: secret.clone(),
        default_shards: args.shards,
        replication_factor: replicas,
    })
    .await
    .context("starting meta")?;
    let meta_addr = meta.addr();
    let mut nodes = Vec::new();
    for id in 1..=args.nodes {
        let node = replication::node_runtime::start_node(replication::node_runtime::NodeConfig {
            id,
            listen: "127.0.0.1:0".into(),
            advertise: None,
            data_dir: args.data.join(format!("node-{id}")),
            meta: vec![meta_addr.clone()],
            secret: secret.clone(),
            shard: engine::shard::ShardOptions::default(),
            clock: Arc::new(protocol::clock::SystemClock),
        })
        .await
        .with_context(|| format!("starting node {id}"))?;
        nodes.push(node);
    }
    let router = router::start_router(router::RouterConfig {
        listen: format!("127.0.0.1:{}", args.port),
        meta: vec![meta_addr.clone()],
        secret,
        max_connections: 500,
        row_budget: router::memtxn::DEFAULT_ROW_BUDGET,
        limits: router::guard::GuardLimits::default(),
        auth: args.auth,
        bootstrap_superuser: Some(("tessera".to_string(), args.password.clone())),
    })
    .await
    .context("starting router")?;
    wait_for_shards(&router, args.shards).await;
    println!(
        "Tessera dev cluster: {} node(s), {} shard(s), {} cop(ies) each, data in {}",
        args.nodes,
        args.shards,
        replicas,
        args.data.display()
    );
    println!("meta (internal protocol): {meta_addr}");
    println!("connect with:");
    let port = router.addr.port();
    if args.auth == router::auth::AuthMethod::Trust {
        println!("  psql -h 127.0.0.1 -p {port} -U tessera -d tessera");
    } else {
        // The password is the one set when the data directory was created.
        println!(
            "  PGPASSWORD={} psql -h 127.0.0.1 -p {port} -U tessera -d tessera",
            shell_word(&args.password)
        );
        println!("  (or psql postgresql://tessera@127.0.0.1:{port}/tessera and type the password)");
    }
    crate::wait_for_shutdown().await;
    router.shutdown();
    for n in &nodes {
        n.shutdown();
    }
    meta.shutdown().await;
    Ok(())
}

/// Waits (bounded) until meta has placed the default keyspace's shards.
async fn wait_for_shards(router: &router::RouterHandle, shards: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if router.router.meta.state().shards.len() as u32 >= shards {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("warning: shards are not placed yet; queries will fail until they are");
}

/// `s` quoted for a POSIX shell when it needs quoting.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/@%+=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
