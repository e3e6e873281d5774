//! `tessera`: one binary for every role.
//!
//! ```text
//!  tessera dev     meta + nodes + router in one process, on one data directory
//!  tessera meta    a control-plane voter (Raft)
//!  tessera node    a storage node hosting shard replicas
//!  tessera router  the Postgres endpoint
//!  tessera admin   operator commands (status, add-node, drain-node, rebalance, jobs)
//! ```
//! Each role takes flags, or a TOML file (`--config`) whose keys are the flags' long names
//! with `_` for `-`; a flag given on the command line wins over the file.

mod admin;
mod config;
mod dev;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use protocol::auth::ClusterSecret;

/// mimalloc instead of glibc's malloc: the server allocates and frees many small, short-lived
/// buffers on two threads at once (messages, rows, futures), where glibc spent about a tenth
/// of the CPU (arena locks, `malloc_consolidate` of freed large futures). See RESULTS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    ///
    /// Point it at meta (`--meta`, needs the cluster secret) or at a router (`--router`, the
    /// Postgres endpoint; reads the tessera.* system views).
    Status {
        /// Meta voter addresses (comma separated).
        #[arg(
            long,
            value_delimiter = ',',
            conflicts_with = "router",
            required_unless_present = "router"
        )]
        meta: Vec<String>,
        /// A router's Postgres address, host:port.
        #[arg(long)]
        router: Option<String>,
        /// Cluster secret (or TESSERA_SECRET), with --meta.
        #[arg(long, env = "TESSERA_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Postgres user, with --router.
        #[arg(long, default_value = "tessera")]
        user: String,
        /// Its password, with --router (or PGPASSWORD).
        #[arg(long, env = "PGPASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    #[command(flatten)]
    Placement(admin::PlacementCommand),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tessera=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The async runtime's worker threads: `TESSERA_WORKER_THREADS`, or one more than the
/// machine's cores.
///
/// *Why not one per core* (tokio's default): measured on 2 cores with pgbench beside the
/// server, exactly one worker per core was the worst count. Select-only ran 62–64k tps
/// against 70–73k with 1, 3, 4 or 8 workers, and pgbench itself spent 11.5 µs per query
/// against 7.5 (RESULTS.md, "The ninth pass"). TPC-B did not move. A spare worker costs
/// nothing while idle: it parks.
fn worker_threads(setting: Option<&str>, cores: usize) -> Result<usize> {
    thread_count("TESSERA_WORKER_THREADS", setting, 1, cores + 1)
}

/// The router's session threads (`router::session_threads`): `TESSERA_SESSION_THREADS`, or
/// two per core. 0 runs sessions on the async runtime's workers instead.
///
/// *Why two per core:* on 2 cores with pgbench beside the server, 4 threads gave select-only
/// 55–66k tps prepared; 2 threads swung between 52k and 73k from run to run (whether each
/// thread shared a CPU with the pgbench thread it served), 8 gave 49–58k, and sessions on
/// the workers 42–48k (RESULTS.md, "The tenth pass").
fn session_threads(setting: Option<&str>, cores: usize) -> Result<usize> {
    thread_count("TESSERA_SESSION_THREADS", setting, 0, 2 * cores)
}

/// A thread count from the environment variable `name` (its value `setting`): at least
/// `min`, `default` when unset.
fn thread_count(name: &str, setting: Option<&str>, min: usize, default: usize) -> Result<usize> {
    match setting {
        Some(n) => match n.trim().parse::<usize>() {
            Ok(n) if n >= min => Ok(n),
            _ => bail!("{name} must be a whole number of at least {min}, not {n:?}"),
        },
        None => Ok(default),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `session_threads` for this process's environment and machine.
pub(crate) fn session_thread_count() -> Result<usize> {
    let setting = std::env::var("TESSERA_SESSION_THREADS").ok();
    session_threads(setting.as_deref(), cores())
}

fn main() -> Result<()> {
    let setting = std::env::var("TESSERA_WORKER_THREADS").ok();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(setting.as_deref(), cores())?)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

async fn run() -> Result<()> {
    init_logging();
    // The memory one statement's intermediate results may hold, on nodes and routers alike;
    // past it the statement fails with 53200.
    if let Some(bytes) = config::mib_from_env("TESSERA_QUERY_MEMORY_MB")? {
        engine::sql::QUERY_MEMORY.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    // The bytes of changes one transaction may hold on one shard; past it a write fails with
    // 54000 (see `engine::buffer::TXN_MEMORY`).
    if let Some(bytes) = config::mib_from_env("TESSERA_TXN_MEMORY_MB")? {
        engine::buffer::TXN_MEMORY.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Meta(args) => run_meta(args.resolve()?).await,
        Command::Node(args) => run_node(args.resolve()?).await,
        Command::Router(args) => run_router(args.resolve()?).await,
        Command::Admin {
            command:
                AdminCommand::Status {
                    router: Some(addr),
                    user,
                    password,
                    ..
                },
        } => admin_status_via_router(&addr, &user, password.as_deref()).await,
        Command::Admin {
            command: AdminCommand::Placement(cmd),
        } => admin::run(cmd).await,
        Command::Admin {
            command: AdminCommand::Status { meta, secret, .. },
        } => {
            let secret = secret.ok_or_else(|| {
                anyhow::anyhow!("--secret (or TESSERA_SECRET) is required with --meta")
            })?;
            admin_status(meta, secret).await
        }
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

/// `admin status --router`: the same report from the router's system views, over SQL.
async fn admin_status_via_router(addr: &str, user: &str, password: Option<&str>) -> Result<()> {
    let (host, port) = addr
        .rsplit_once(':')
        .context("--router must be host:port")?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port.parse().context("--router must be host:port")?)
        .user(user)
        .dbname("tessera");
    if let Some(p) = password {
        config.password(p);
    }
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the router")?;
    tokio::spawn(conn);
    println!("nodes:");
    for row in client
        .simple_query("SELECT node, addr, primaries, replicas FROM tessera.nodes ORDER BY node")
        .await?
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = row {
            println!(
                "  node {:<3} {}  (primaries {}, replicas {})",
                r.get(0).unwrap_or("?"),
                r.get(1).unwrap_or("?"),
                r.get(2).unwrap_or("?"),
                r.get(3).unwrap_or("?")
            );
        }
    }
    println!("\nshards:");
    println!(
        "  {:<5} {:<10} {:<35} {:<8} {:<8} {:<6} {:>10} {:>10} {:>10} {:>6}",
        "shard",
        "keyspace",
        "hash range",
        "primary",
        "replicas",
        "epoch",
        "rows",
        "lsn",
        "replica",
        "lag"
    );
    let sql = "SELECT shard, keyspace, hash_start, hash_end, primary_node, replica_nodes, epoch, rows, primary_lsn, replica_lsn, lag_lsn FROM tessera.shards ORDER BY shard";
    for row in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = row {
            let f = |i: usize| r.get(i).unwrap_or("?").to_string();
            println!(
                "  {:<5} {:<10} [{}, {}] {:<8} {:<8} {:<6} {:>10} {:>10} {:>10} {:>6}",
                f(0),
                f(1),
                f(2),
                f(3),
                f(4),
                f(5),
                f(6),
                f(7),
                f(8),
                f(9),
                f(10)
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::{session_threads, worker_threads};

    #[test]
    fn a_mib_count_past_memory_saturates_instead_of_wrapping() {
        assert_eq!(crate::config::mib(3), 3 << 20);
        assert_eq!(crate::config::mib(usize::MAX >> 10), usize::MAX);
    }

    #[test]
    fn two_session_threads_per_core_unless_told() {
        assert_eq!(session_threads(None, 2).unwrap(), 4);
        assert_eq!(session_threads(None, 16).unwrap(), 32);
        assert_eq!(session_threads(Some("0"), 2).unwrap(), 0);
        assert_eq!(session_threads(Some(" 3 "), 2).unwrap(), 3);
        for bad in ["-1", "many", ""] {
            let e = session_threads(Some(bad), 2).unwrap_err().to_string();
            assert!(e.contains("TESSERA_SESSION_THREADS"), "{e}");
        }
    }

    #[test]
    fn one_worker_more_than_cores_unless_told() {
        assert_eq!(worker_threads(None, 2).unwrap(), 3);
        assert_eq!(worker_threads(None, 16).unwrap(), 17);
        assert_eq!(worker_threads(Some("2"), 2).unwrap(), 2);
        assert_eq!(worker_threads(Some(" 8 "), 2).unwrap(), 8);
        for bad in ["0", "-1", "many", ""] {
            let e = worker_threads(Some(bad), 2).unwrap_err().to_string();
            assert!(e.contains("TESSERA_WORKER_THREADS"), "{e}");
        }
    }
}
