//! Shared helpers for the black-box cluster tests: free ports, temporary directories, child
//! processes of the `tessera` binary (start, wait for readiness, kill -9, restart), a whole
//! 1 meta + 2 nodes + 1 router cluster, and small SQL / internal-protocol helpers.
//!
//! Every wait is bounded by a deadline; a failure message carries the tail of the logs of the
//! processes involved (each process writes stdout and stderr to a log file in its temp dir,
//! which is kept when the test panics).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use protocol::auth::ClusterSecret;
use protocol::message::{Request, Response};
use protocol::rpc::RpcClient;

/// How long a process may take to print its "listening" line.
pub const START_WAIT: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

// ---------------------------------------------------------------------------------------------
// Ports and directories
// ---------------------------------------------------------------------------------------------

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Test servers' ports: below Linux's ephemeral range (32768–60999), so that no outgoing
/// connection (a node dialing a peer that is not listening yet) is given one as its source
/// port before the server binds it, which made a test fail with "address in use" now and then.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port on 127.0.0.1 that was free a moment ago and that no other test holds: not handed
/// out before in this process (the tests of one binary run concurrently), and reserved in
/// a directory every test process shares (nextest runs each test in a process of its own).
pub fn free_port() -> u16 {
    let dir = std::env::temp_dir().join("tessera-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let me = std::process::id();
    loop {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), TEST_PORTS);
        if handed_out().lock().unwrap().contains(&port) || !reserve(&dir, port, me) {
            continue;
        }
        handed_out().lock().unwrap().insert(port);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Reserves `port` for this process with a file holding its pid; a reservation whose
/// process is gone is removed (and the port may be picked again later).
fn reserve(dir: &Path, port: u16, me: u32) -> bool {
    let path = dir.join(port.to_string());
    if let Ok(mut f) = OpenOptions::new().write(true).create_new(true).open(&path) {
        return writeln!(f, "{me}").is_ok();
    }
    let owner = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let stale = match owner {
        Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        // Being written right now, or left half-written long ago.
        None => std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60)),
    };
    if stale {
        let _ = std::fs::remove_file(&path);
    }
    false
}

/// A unique directory under the system temp dir, removed on drop (kept if the test panicked,
/// so its logs can be read).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "tessera-test-{tag}-{}-{}-{}",
            std::process::id(),
            nanos,
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, sub: &str) -> PathBuf {
        self.path.join(sub)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The last `n` lines of a file (for failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// One child process of the `tessera` binary.
pub struct Proc {
    pub name: String,
    args: Vec<String>,
    /// A substring of the stdout line that says the process is ready.
    ready: String,
    pub log: PathBuf,
    child: Option<Child>,
    /// The ready line as printed.
    pub ready_line: String,
    starts: u32,
}

impl Proc {
    /// Spawns `tessera ARGS` and waits (bounded) for a stdout line containing `ready`.
    pub async fn start(name: &str, args: Vec<String>, ready: &str, log_dir: &Path) -> Proc {
        let mut p = Proc {
            name: name.to_string(),
            args,
            ready: ready.to_string(),
            log: log_dir.join(format!("{name}.log")),
            child: None,
            ready_line: String::new(),
            starts: 0,
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        writeln!(
            log,
            "=== start #{} of {}: tessera {}",
            self.starts,
            self.name,
            self.args.join(" ")
        )
        .ok();
        let stderr = log.try_clone().expect("clone log handle");
        let mut child = Command::new(bin())
            .args(&self.args)
            .env_remove("TESSERA_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} ({}): {e}", self.name, bin()));
        let stdout = child.stdout.take().expect("piped stdout");
        // Copy stdout into the log, and hand every line to the readiness wait.
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let mut log_out = log;
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log_out, "{line}");
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) if line.contains(&self.ready) => {
                    self.ready_line = line;
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    let status = match self.child.as_mut() {
                        Some(c) => tokio::time::timeout(Duration::from_secs(5), c.wait()).await,
                        None => Ok(Err(std::io::Error::other("no child"))),
                    };
                    panic!(
                        "{} exited before printing {:?} (status {status:?}); log:\n{}",
                        self.name,
                        self.ready,
                        tail(&self.log, 40)
                    );
                }
                Err(_) => panic!(
                    "{} did not print {:?} within {START_WAIT:?}; log:\n{}",
                    self.name,
                    self.ready,
                    tail(&self.log, 40)
                ),
            }
        }
    }

    /// The `ADDR` at the end of a "... listening on ADDR" ready line.
    pub fn listen_addr(&self) -> String {
        self.ready_line
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, then reap (bounded).
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().ok();
            match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                Ok(Ok(_)) => {}
                other => panic!("{} did not die after SIGKILL: {other:?}", self.name),
            }
            if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log) {
                let _ = writeln!(log, "=== killed -9 by the test");
            }
        }
    }

    /// Starts the process again with the same arguments (after `kill9`).
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.spawn().await;
    }

    pub fn log_tail(&self, n: usize) -> String {
        format!(
            "--- {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            tail(&self.log, n)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(25));
        }
        // Dropping the `Child` (kill_on_drop) sends SIGKILL.
    }
}

// ---------------------------------------------------------------------------------------------
// SQL helpers
// ---------------------------------------------------------------------------------------------

/// The connection string for a router on `port`.
pub fn pg_config(port: u16) -> String {
    format!(
        "host=127.0.0.1 port={port} user=tessera password=tessera dbname=tessera connect_timeout=5"
    )
}

/// Connects once (bounded), spawning the connection task.
pub async fn try_connect(port: u16) -> Result<Client, String> {
    let config = pg_config(port);
    let fut = tokio_postgres::connect(&config, NoTls);
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(client)
        }
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(_) => Err("connect timed out".into()),
    }
}

/// Connects, retrying until `wait` has passed.
pub async fn connect(port: u16, wait: Duration) -> Client {
    let deadline = Instant::now() + wait;
    loop {
        match try_connect(port).await {
            Ok(c) => return c,
            Err(e) if Instant::now() >= deadline => {
                panic!("cannot connect to router on port {port} within {wait:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One row of a simple-protocol result, by column name (values in text format).
pub type TextRow = HashMap<String, Option<String>>;

/// Runs `sql` with the simple protocol; rows of the last result with their text values.
pub async fn query_text(client: &Client, sql: &str) -> Result<Vec<TextRow>, tokio_postgres::Error> {
    let msgs = client.simple_query(sql).await?;
    let mut rows = Vec::new();
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            let mut row = HashMap::new();
            for (i, c) in r.columns().iter().enumerate() {
                row.insert(c.name().to_string(), r.get(i).map(str::to_string));
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// A column of a text row parsed as an integer (`None` for NULL); panics on a missing column.
pub fn int(row: &TextRow, col: &str) -> Option<i64> {
    let v = row
        .get(col)
        .unwrap_or_else(|| panic!("no column {col:?} in {row:?}"));
    v.as_ref().map(|s| {
        s.trim()
            .parse::<i64>()
            .unwrap_or_else(|e| panic!("column {col} = {s:?} is not an integer: {e}"))
    })
}

pub fn text<'a>(row: &'a TextRow, col: &str) -> Option<&'a str> {
    row.get(col)
        .unwrap_or_else(|| panic!("no column {col:?} in {row:?}"))
        .as_deref()
}

/// The lines of an EXPLAIN.
pub async fn explain(client: &Client, stmt: &str) -> Vec<String> {
    let msgs = client
        .simple_query(&format!("EXPLAIN {stmt}"))
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {stmt}: {e:?}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or_default().to_string()),
            _ => None,
        })
        .collect()
}

/// The distinct shard ids named by "shard N on node M" lines of an EXPLAIN.
pub fn explained_shards(lines: &[String]) -> Vec<u32> {
    let mut shards = Vec::new();
    for l in lines {
        let mut parts = l.split_whitespace();
        if let (Some("shard"), Some(id), Some("on"), Some("node")) =
            (parts.next(), parts.next(), parts.next(), parts.next())
            && let Ok(id) = id.trim_end_matches(':').parse::<u32>()
            && !shards.contains(&id)
        {
            shards.push(id);
        }
    }
    shards.sort();
    shards
}

/// The rows of `tessera.shards`, ordered by shard.
pub async fn shards_view(client: &Client) -> Result<Vec<TextRow>, tokio_postgres::Error> {
    let mut rows = query_text(client, "SELECT * FROM tessera.shards").await?;
    rows.sort_by_key(|r| int(r, "shard"));
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------------------------

/// Reads until the peer closes the connection (EOF or an error such as a reset) within
/// `wait`; returns what was received before, or `Err` if the connection is still open.
pub async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(got),
            Ok(Ok(0)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return Ok(got),
        }
    }
}

/// Deterministic junk bytes (xorshift).
pub fn junk(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Internal protocol helpers
// ---------------------------------------------------------------------------------------------

pub async fn meta_client(addrs: Vec<String>, secret: &str) -> replication::meta::MetaClient {
    match tokio::time::timeout(
        Duration::from_secs(15),
        replication::meta::MetaClient::connect(addrs.clone(), ClusterSecret::new(secret)),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("MetaClient::connect({addrs:?}): {e:?}"),
        Err(_) => panic!("MetaClient::connect({addrs:?}) timed out"),
    }
}

/// One internal call, bounded in time.
pub async fn rpc_call(addr: &str, secret: &str, req: Request) -> Result<Response, String> {
    let fut = async {
        let c = RpcClient::connect(addr, &ClusterSecret::new(secret))
            .await
            .map_err(|e| format!("connect {addr}: {e:?}"))?;
        c.call(req).await.map_err(|e| format!("call {addr}: {e:?}"))
    };
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("call to {addr} timed out")),
    }
}

/// For every shard of the current map: (node, checksum or error) of its primary then its
/// replicas.
pub type Checksums = BTreeMap<u32, Vec<(u64, Result<u64, String>)>>;

pub async fn shard_checksums(meta: &replication::meta::MetaClient, secret: &str) -> Checksums {
    let state = meta.state();
    let mut out = BTreeMap::new();
    for (id, shard) in &state.shards {
        let mut per = Vec::new();
        for node in std::iter::once(shard.primary).chain(shard.replicas.iter().copied()) {
            let r = match state.node_addr(node) {
                None => Err(format!("node {node} has no address in the map")),
                Some(addr) => {
                    match rpc_call(addr, secret, Request::ShardChecksum { shard: *id }).await {
                        Ok(Response::Checksum(c)) => Ok(c),
                        Ok(other) => Err(format!("unexpected answer {other:?}")),
                        Err(e) => Err(e),
                    }
                }
            };
            per.push((node, r));
        }
        out.insert(*id, per);
    }
    out
}

/// True when every shard has at least two copies, all answered, and all agree.
pub fn checksums_agree(c: &Checksums) -> bool {
    !c.is_empty()
        && c.values().all(|per| {
            per.len() >= 2
                && per.iter().all(|(_, r)| r.is_ok())
                && per
                    .iter()
                    .all(|(_, r)| r.as_ref().ok() == per[0].1.as_ref().ok())
        })
}

// ---------------------------------------------------------------------------------------------
// A cluster of separate processes
// ---------------------------------------------------------------------------------------------

pub const SHARDS: usize = 4;

/// 1 meta + 2 nodes + 1 router, each its own process on its own 127.0.0.1 port.
/// Field order matters: processes are killed (dropped) before the directory is removed.
pub struct Cluster {
    pub meta: Proc,
    pub nodes: Vec<Proc>,
    pub router: Proc,
    pub secret: String,
    pub meta_addr: String,
    pub router_port: u16,
    pub dir: TempDir,
}

impl Cluster {
    pub async fn start(tag: &str) -> Cluster {
        let dir = TempDir::new(tag);
        let secret = format!("secret-{tag}-{}", std::process::id());
        let meta_port = free_port();
        let meta = Proc::start(
            "meta",
            vec![
                "meta".into(),
                "--id".into(),
                "1".into(),
                "--listen".into(),
                format!("127.0.0.1:{meta_port}"),
                "--data".into(),
                dir.join("meta").display().to_string(),
                "--shards".into(),
                SHARDS.to_string(),
                "--replicas".into(),
                "2".into(),
                "--secret".into(),
                secret.clone(),
            ],
            "meta listening on",
            dir.path(),
        )
        .await;
        let meta_addr = format!("127.0.0.1:{meta_port}");
        let mut nodes = Vec::new();
        for id in 1..=2u64 {
            nodes.push(start_node(&dir, id, &meta_addr, &secret).await);
        }
        let router_port = free_port();
        let router = Proc::start(
            "router",
            vec![
                "router".into(),
                "--listen".into(),
                format!("127.0.0.1:{router_port}"),
                "--meta".into(),
                meta_addr.clone(),
                "--secret".into(),
                secret.clone(),
                "--superuser-password".into(),
                "tessera".into(),
            ],
            "router listening on",
            dir.path(),
        )
        .await;
        let cluster = Cluster {
            meta,
            nodes,
            router,
            secret,
            meta_addr,
            router_port,
            dir,
        };
        cluster.wait_ready(Duration::from_secs(20)).await;
        cluster
    }

    /// Waits until the router answers `SELECT 1` and `tessera.shards` shows every shard with a
    /// primary and a replica that answer.
    pub async fn wait_ready(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let client = connect(self.router_port, wait).await;
        let mut last;
        loop {
            match client.simple_query("SELECT 1").await {
                Ok(_) => match shards_view(&client).await {
                    Ok(rows)
                        if rows.len() == SHARDS
                            && rows.iter().all(|r| {
                                int(r, "primary_lsn").is_some() && int(r, "replica_lsn").is_some()
                            }) =>
                    {
                        return;
                    }
                    Ok(rows) => last = format!("tessera.shards: {rows:?}"),
                    Err(e) => last = format!("tessera.shards: {e:?}"),
                },
                Err(e) => last = format!("SELECT 1: {e:?}"),
            }
            if Instant::now() >= deadline {
                panic!("cluster not ready within {wait:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts node `id` (its own process and data directory); it registers itself in meta
    /// and holds nothing until a move places copies on it.
    pub async fn add_node(&mut self, id: u64) {
        let node = start_node(&self.dir, id, &self.meta_addr, &self.secret).await;
        self.nodes.push(node);
    }

    /// The data directory of node `id`.
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.join(&format!("node{id}"))
    }

    pub async fn client(&self) -> Client {
        connect(self.router_port, Duration::from_secs(10)).await
    }

    pub async fn meta_client(&self) -> replication::meta::MetaClient {
        meta_client(vec![self.meta_addr.clone()], &self.secret).await
    }

    /// The tails of all logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in std::iter::once(&self.meta)
            .chain(self.nodes.iter())
            .chain(std::iter::once(&self.router))
        {
            s.push_str(&p.log_tail(25));
            s.push('\n');
        }
        s
    }
}

async fn start_node(dir: &TempDir, id: u64, meta_addr: &str, secret: &str) -> Proc {
    let port = free_port();
    Proc::start(
        &format!("node{id}"),
        vec![
            "node".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data".into(),
            dir.join(&format!("node{id}")).display().to_string(),
            "--meta".into(),
            meta_addr.to_string(),
            "--secret".into(),
            secret.to_string(),
        ],
        &format!("node {id} listening on"),
        dir.path(),
    )
    .await
}

/// Runs a test body with an overall deadline, so that a statement the product never answers
/// fails the test instead of hanging it (the caller's `Cluster` still exists when this panics,
/// so its logs are printed and its directory kept).
pub async fn within<T>(
    wait: Duration,
    what: &str,
    body: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(wait, body).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {wait:?} (a statement or wait hung)"),
    }
}
