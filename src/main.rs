//! `tessera`: one binary for every role.
//!
//! ```text
//!  tessera dev     meta + nodes + router in one process, on one data directory
//!  tessera meta    a control-plane voter (Raft)
//!  tessera node    a storage node hosting shard replicas
//!  tessera router  the Postgres endpoint
//!  tessera admin   operator commands (status)
//! ```
//! Each role takes flags, or a TOML file (`--config`) whose keys are the flags' long names
//! with `_` for `-`; a flag given on the command line wins over the file.

mod config;
mod dev;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use protocol::auth::ClusterSecret;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: a distributed SQL database that speaks PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole small cluster (meta, nodes, router) in this process.
    Dev(dev::DevArgs),
    /// Run a meta (control plane) voter.
    Meta(config::MetaArgs),
    /// Run a storage node.
    Node(config::NodeArgs),
    /// Run a router (the Postgres endpoint).
    Router(config::RouterArgs),
    /// Operator commands.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Print nodes, shards with hash ranges, primaries, replicas, row counts and lag.
    Status {
        /// Meta voter addresses (comma separated).
        #[arg(long, value_delimiter = ',', required = true)]
        meta: Vec<String>,
        /// Cluster secret (or TESSERA_SECRET).
        #[arg(long, env = "TESSERA_SECRET", hide_env_values = true)]
        secret: String,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tessera=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Meta(args) => run_meta(args.resolve()?).await,
        Command::Node(args) => run_node(args.resolve()?).await,
        Command::Router(args) => run_router(args.resolve()?).await,
        Command::Admin {
            command: AdminCommand::Status { meta, secret },
        } => admin_status(meta, secret).await,
    }
}

async fn run_meta(cfg: replication::meta::MetaConfig) -> Result<()> {
    let server = replication::meta::MetaServer::start(cfg)
        .await
        .context("starting meta")?;
    println!("meta listening on {}", server.addr());
    wait_for_shutdown().await;
    server.shutdown().await;
    Ok(())
}

async fn run_node(cfg: replication::node_runtime::NodeConfig) -> Result<()> {
    let node = replication::node_runtime::start_node(cfg)
        .await
        .context("starting node")?;
    println!("node {} listening on {}", node.id, node.addr);
    wait_for_shutdown().await;
    node.shutdown();
    Ok(())
}

async fn run_router(cfg: router::RouterConfig) -> Result<()> {
    let handle = router::start_router(cfg).await.context("starting router")?;
    println!("router listening on {}", handle.addr);
    wait_for_shutdown().await;
    handle.shutdown();
    Ok(())
}

async fn admin_status(meta: Vec<String>, secret: String) -> Result<()> {
    let secret = ClusterSecret::new(secret);
    let client = replication::meta::MetaClient::connect(meta, secret.clone())
        .await
        .context("connecting to meta")?;
    let state = client.state();
    if state.version == 0 {
        bail!("meta has no cluster map yet");
    }
    let pool = protocol::rpc::Pool::new(secret);
    let status = router::status::collect(&state, &pool).await;
    print!("{}", router::status::render(&state, &status));
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub fn data_path(base: &std::path::Path, sub: &str) -> PathBuf {
    base.join(sub)
}

pub type Shared<T> = Arc<T>;
