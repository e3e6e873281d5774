//! Role configuration: command-line flags merged over an optional TOML file.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use protocol::auth::ClusterSecret;
use serde::Deserialize;

/// Bytes in `mb` MiB; a count too large for memory means "no bound", not a wrapped one.
pub fn mib(mb: usize) -> usize {
    mb.saturating_mul(1 << 20)
}

/// The bytes an environment variable gives in MiB, if it is set.
pub fn mib_from_env(name: &str) -> Result<Option<usize>> {
    let Ok(value) = std::env::var(name) else {
        return Ok(None);
    };
    let mb: usize = value
        .parse()
        .map_err(|_| anyhow!("{name} must be a number of MiB"))?;
    Ok(Some(mib(mb)))
}

fn load<T: for<'de> Deserialize<'de> + Default>(path: &Option<PathBuf>) -> Result<T> {
    match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))
        }
        None => Ok(T::default()),
    }
}

fn secret(cli: Option<String>, file: Option<String>) -> Result<ClusterSecret> {
    cli.or(file).map(ClusterSecret::new).ok_or_else(|| {
        anyhow!(
            "a cluster secret is required: --secret, TESSERA_SECRET or `secret` in the config file"
        )
    })
}

/// Flags of `tessera meta`.
#[derive(Args, Debug)]
pub struct MetaArgs {
    /// TOML file with any of these settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This voter's id.
    #[arg(long)]
    id: Option<u64>,
    /// Internal-protocol listen address.
    #[arg(long)]
    listen: Option<String>,
    /// Data directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// All voters as id=host:port, comma separated (omit for a single voter).
    #[arg(long, value_delimiter = ',')]
    voters: Vec<String>,
    /// Shards of the default keyspace.
    #[arg(long)]
    shards: Option<u32>,
    /// Copies of each shard (primary included).
    #[arg(long)]
    replicas: Option<u32>,
    #[arg(long, env = "TESSERA_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MetaFile {
    id: Option<u64>,
    listen: Option<String>,
    data: Option<PathBuf>,
    voters: Option<Vec<String>>,
    shards: Option<u32>,
    replicas: Option<u32>,
    secret: Option<String>,
}

fn parse_voters(list: &[String]) -> Result<Vec<(u64, String)>> {
    list.iter()
        .map(|v| {
            let (id, addr) = v
                .split_once('=')
                .ok_or_else(|| anyhow!("voter {v:?} is not id=host:port"))?;
            Ok((
                id.trim()
                    .parse()
                    .with_context(|| format!("voter id in {v:?}"))?,
                addr.trim().to_string(),
            ))
        })
        .collect()
}

impl MetaArgs {
    pub fn resolve(self) -> Result<replication::meta::MetaConfig> {
        let f: MetaFile = load(&self.config)?;
        let voters = if self.voters.is_empty() {
            f.voters.unwrap_or_default()
        } else {
            self.voters
        };
        Ok(replication::meta::MetaConfig {
            id: self.id.or(f.id).unwrap_or(1),
            listen: self
                .listen
                .or(f.listen)
                .unwrap_or_else(|| "127.0.0.1:7400".into()),
            data_dir: self
                .data
                .or(f.data)
                .unwrap_or_else(|| "tessera-data/meta".into()),
            voters: parse_voters(&voters)?,
            secret: secret(self.secret, f.secret)?,
            default_shards: self.shards.or(f.shards).unwrap_or(4),
            replication_factor: self.replicas.or(f.replicas).unwrap_or(2),
        })
    }
}

/// Flags of `tessera node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id (unique in the cluster).
    #[arg(long)]
    id: Option<u64>,
    /// Internal-protocol listen address.
    #[arg(long)]
    listen: Option<String>,
    /// Address other roles use to reach this node (default: the listen address).
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long)]
    data: Option<PathBuf>,
    /// Meta voter addresses, comma separated.
    #[arg(long, value_delimiter = ',')]
    meta: Vec<String>,
    /// Change-log records kept behind the newest before trimming.
    #[arg(long)]
    log_retain: Option<u64>,
    /// Bytes of change-log records kept per shard copy; over it, the oldest are trimmed
    /// (default 64 MiB).
    #[arg(long)]
    log_retain_bytes: Option<u64>,
    /// MiB of page cache per shard copy (default 1024).
    #[arg(long)]
    cache_mb: Option<usize>,
    #[arg(long, env = "TESSERA_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    id: Option<u64>,
    listen: Option<String>,
    advertise: Option<String>,
    data: Option<PathBuf>,
    meta: Option<Vec<String>>,
    log_retain: Option<u64>,
    log_retain_bytes: Option<u64>,
    cache_mb: Option<usize>,
    secret: Option<String>,
}

impl NodeArgs {
    pub fn resolve(self) -> Result<replication::node_runtime::NodeConfig> {
        let f: NodeFile = load(&self.config)?;
        let meta = if self.meta.is_empty() {
            f.meta.unwrap_or_default()
        } else {
            self.meta
        };
        if meta.is_empty() {
            return Err(anyhow!("--meta is required"));
        }
        let mut shard = engine::shard::ShardOptions::default();
        if let Some(n) = self.log_retain.or(f.log_retain) {
            shard.log_retain = n;
        }
        if let Some(n) = self.log_retain_bytes.or(f.log_retain_bytes) {
            shard.log_retain_bytes = n;
        }
        if let Some(mb) = self.cache_mb.or(f.cache_mb) {
            shard.cache_bytes = mib(mb);
        }
        Ok(replication::node_runtime::NodeConfig {
            id: self
                .id
                .or(f.id)
                .ok_or_else(|| anyhow!("--id is required"))?,
            listen: self
                .listen
                .or(f.listen)
                .unwrap_or_else(|| "127.0.0.1:7500".into()),
            advertise: self.advertise.or(f.advertise),
            data_dir: self
                .data
                .or(f.data)
                .unwrap_or_else(|| "tessera-data/node".into()),
            meta,
            secret: secret(self.secret, f.secret)?,
            shard,
            clock: Arc::new(protocol::clock::SystemClock),
        })
    }
}

/// Flags of `tessera router`.
#[derive(Args, Debug)]
pub struct RouterArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// Postgres listen address.
    #[arg(long)]
    listen: Option<String>,
    /// Meta voter addresses, comma separated.
    #[arg(long, value_delimiter = ',')]
    meta: Vec<String>,
    #[arg(long)]
    max_connections: Option<usize>,
    #[arg(long, env = "TESSERA_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Client authentication: scram-sha-256 (default), md5 or trust.
    #[arg(long)]
    auth: Option<router::auth::AuthMethod>,
    /// Name of the first superuser, created with --superuser-password on a new cluster.
    #[arg(long)]
    superuser: Option<String>,
    /// Password of the first superuser; used only while the cluster has no role.
    #[arg(long, env = "TESSERA_SUPERUSER_PASSWORD", hide_env_values = true)]
    superuser_password: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key, clients may connect with sslmode=require.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RouterFile {
    listen: Option<String>,
    meta: Option<Vec<String>>,
    max_connections: Option<usize>,
    secret: Option<String>,
    auth: Option<String>,
    superuser: Option<String>,
    superuser_password: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl RouterArgs {
    pub fn resolve(self) -> Result<router::RouterConfig> {
        let f: RouterFile = load(&self.config)?;
        let meta = if self.meta.is_empty() {
            f.meta.unwrap_or_default()
        } else {
            self.meta
        };
        if meta.is_empty() {
            return Err(anyhow!("--meta is required"));
        }
        Ok(router::RouterConfig {
            listen: self
                .listen
                .or(f.listen)
                .unwrap_or_else(|| "127.0.0.1:5432".into()),
            meta,
            secret: secret(self.secret, f.secret)?,
            max_connections: self.max_connections.or(f.max_connections).unwrap_or(500),
            row_budget: router::memtxn::DEFAULT_ROW_BUDGET,
            limits: router::guard::GuardLimits::default(),
            auth: match (self.auth, f.auth) {
                (Some(a), _) => a,
                (None, Some(text)) => text.parse().map_err(|e: String| anyhow!(e))?,
                (None, None) => router::auth::AuthMethod::default(),
            },
            bootstrap_superuser: self.superuser_password.or(f.superuser_password).map(|p| {
                let name = self
                    .superuser
                    .or(f.superuser)
                    .unwrap_or_else(|| "tessera".into());
                (name, p)
            }),
            tls: match (self.tls_cert.or(f.tls_cert), self.tls_key.or(f.tls_key)) {
                (Some(cert), Some(key)) => Some(router::tls::acceptor(&cert, &key)?),
                (None, None) => None,
                _ => return Err(anyhow!("tls_cert and tls_key go together")),
            },
            session_threads: crate::session_thread_count()?,
        })
    }
}
