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
    /// Serve TLS with a self-signed certificate for localhost and 127.0.0.1, made in
    /// DIR/tls on first use (clients: sslmode=require, or verify-full with
    /// sslrootcert=DIR/tls/server.crt).
    #[arg(long)]
    tls: bool,
    /// MiB of page cache per shard copy (as `tessera node --cache-mb`).
    #[arg(long)]
    cache_mb: Option<usize>,
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
    let tls_files = if args.tls {
        Some(self_signed(&args.data.join("tls"))?)
    } else {
        None
    };
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
            shard: engine::shard::ShardOptions {
                cache_bytes: args
                    .cache_mb
                    .map(crate::config::mib)
                    .unwrap_or(engine::shard::DEFAULT_CACHE_BYTES),
                ..Default::default()
            },
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
        tls: match &tls_files {
            Some((cert, key)) => Some(router::tls::acceptor(cert, key)?),
            None => None,
        },
        session_threads: crate::session_thread_count()?,
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
    if let Some((cert, _)) = &tls_files {
        let password = match args.auth {
            router::auth::AuthMethod::Trust => String::new(),
            _ => format!("PGPASSWORD={} ", shell_word(&args.password)),
        };
        println!(
            "  {password}psql \"host=127.0.0.1 port={port} user=tessera dbname=tessera sslmode=require\""
        );
        println!(
            "  (verify-full: add sslrootcert={} to check the certificate)",
            cert.display()
        );
    } else if args.auth == router::auth::AuthMethod::Trust {
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

/// The certificate and key in `dir`, made (self-signed, for localhost and 127.0.0.1) if
/// missing. The key file is readable by its owner only.
fn self_signed(dir: &std::path::Path) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .context("making a self-signed certificate")?;
    std::fs::write(&cert, made.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .with_context(|| format!("writing {}", key.display()))?;
        file.write_all(made.signing_key.serialize_pem().as_bytes())?;
    }
    Ok((cert, key))
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
