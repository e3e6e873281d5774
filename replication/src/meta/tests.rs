//! End-to-end tests of the meta group on loopback: bootstrap, placement, restart from disk,
//! leader loss in a three-voter group, and watch latency.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::auth::ClusterSecret;
use protocol::cluster::{ClusterState, MetaCommand, NodeInfo};
use protocol::sqlstate;

use super::{MetaClient, MetaConfig, MetaServer};

fn secret() -> ClusterSecret {
    ClusterSecret::new("meta-test-secret")
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "tessera-meta-{name}-{}-{nanos}",
        std::process::id()
    ))
}

fn config(id: u64, listen: &str, dir: PathBuf, voters: Vec<(u64, String)>) -> MetaConfig {
    MetaConfig {
        id,
        listen: listen.to_string(),
        data_dir: dir,
        voters,
        secret: secret(),
        default_shards: 4,
        replication_factor: 2,
    }
}

fn node(id: u64) -> MetaCommand {
    MetaCommand::RegisterNode(NodeInfo {
        id,
        addr: format!("127.0.0.1:{}", 9000 + id),
    })
}

/// Waits (bounded) until the client's map satisfies `pred`.
async fn wait_until(
    client: &MetaClient,
    what: &str,
    pred: impl Fn(&ClusterState) -> bool,
) -> Arc<ClusterState> {
    let mut rx = client.subscribe();
    match tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| pred(s))).await {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("timed out waiting for {what}; map: {:?}", client.state()),
    }
}

fn check_placement(state: &ClusterState) {
    let shards = state.keyspace_shards("default");
    assert_eq!(shards.len(), 4);
    assert_eq!(shards[0].range.start, 0);
    assert_eq!(shards[3].range.end, u64::MAX);
    for w in shards.windows(2) {
        assert_eq!(w[0].range.end + 1, w[1].range.start);
    }
    let mut ids: Vec<u32> = shards.iter().map(|s| s.id).collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2, 3]);
    for s in shards {
        assert_eq!(s.replicas.len(), 1);
        assert!(!s.replicas.contains(&s.primary));
        assert!(state.nodes.contains_key(&s.primary));
        assert_eq!(s.epoch, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_voter_bootstraps_places_and_recovers() {
    let dir = temp_dir("single");
    let server = MetaServer::start(config(1, "127.0.0.1:0", dir.clone(), vec![]))
        .await
        .unwrap();
    assert!(server.initialized_here);
    let addr = server.addr();
    let client = MetaClient::connect(vec![addr.clone()], secret())
        .await
        .unwrap();
    wait_until(&client, "default keyspace", |s| {
        s.keyspaces.contains_key("default")
    })
    .await;

    // One node is not enough for two copies; the second one triggers placement.
    client.propose(node(10)).await.unwrap();
    assert!(client.state().shards.is_empty());
    client.propose(node(11)).await.unwrap();
    let placed = wait_until(&client, "shards", |s| s.shards.len() == 4).await;
    check_placement(&placed);

    // Refusals come back with their SQLSTATE.
    let ks = placed.keyspaces["default"].clone();
    let err = client
        .propose(MetaCommand::CreateKeyspace(ks))
        .await
        .unwrap_err();
    assert_eq!(err.code, sqlstate::DUPLICATE_OBJECT);
    let err = client
        .propose(MetaCommand::DropTable {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, sqlstate::UNDEFINED_TABLE);

    let status = client.status(&addr).await.unwrap();
    assert_eq!(status.leader, Some(1));
    assert_eq!(status.voters, vec![1]);
    client.heartbeat(10).await.unwrap();
    assert!(server.last_heartbeats().contains_key(&10));

    let before = client.state();
    drop(client);
    server.shutdown().await;
    drop(server);

    // Same data dir (and address): the map is back and the group is not initialized again.
    let server = MetaServer::start(config(1, &addr, dir.clone(), vec![]))
        .await
        .unwrap();
    assert!(!server.initialized_here);
    let client = MetaClient::connect(vec![server.addr()], secret())
        .await
        .unwrap();
    assert_eq!(*client.state(), *before);
    // It becomes leader again and still accepts proposals; nothing was re-bootstrapped.
    let after = client.propose(node(12)).await.unwrap();
    assert_eq!(after.version, before.version + 1);
    assert_eq!(after.shards, before.shards);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_survive_leader_loss() {
    let dirs: Vec<PathBuf> = (1..=3).map(|i| temp_dir(&format!("three-{i}"))).collect();
    // Voters 2 and 3 never initialize (not the lowest id), so they can start first on port 0;
    // voter 1 then initializes the group with their bound addresses.
    let servers = start_three(&dirs).await;
    assert!(
        servers[0].initialized_here && !servers[1].initialized_here && !servers[2].initialized_here
    );
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();

    let client = MetaClient::connect(addrs.clone(), secret()).await.unwrap();
    wait_until(&client, "default keyspace", |s| {
        s.keyspaces.contains_key("default")
    })
    .await;
    client.propose(node(10)).await.unwrap();
    client.propose(node(11)).await.unwrap();
    let placed = wait_until(&client, "shards", |s| s.shards.len() == 4).await;
    check_placement(&placed);

    // Find the leader through any voter's status.
    let status = client.status(&addrs[1]).await.unwrap();
    assert_eq!(status.voters, vec![1, 2, 3]);
    let leader = status.leader.expect("a leader");
    let leader_idx = servers.iter().position(|s| s.id() == leader).unwrap();
    servers[leader_idx].shutdown().await;
    let started = Instant::now();

    // A client that only knows the survivors gets the map and can propose within bounds.
    let rest: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader_idx)
        .map(|(_, a)| a.clone())
        .collect();
    let survivor = MetaClient::connect(rest, secret()).await.unwrap();
    // A follower may not yet know the dead leader's last commit index: its map catches up once
    // the new leader commits, which the watch delivers.
    wait_until(&survivor, "map from survivors", |s| {
        s.version >= placed.version
    })
    .await;
    let after = survivor.propose(node(12)).await.unwrap();
    assert!(after.nodes.contains_key(&12));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failover took {:?}",
        started.elapsed()
    );
    // The first client (which knew the dead leader) follows too.
    client.propose(node(13)).await.unwrap();
    wait_until(&client, "node 12", |s| s.nodes.contains_key(&12)).await;

    for (i, s) in servers.iter().enumerate() {
        if i != leader_idx {
            s.shutdown().await;
        }
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_changes_promptly() {
    let dir = temp_dir("watch");
    let server = MetaServer::start(config(1, "127.0.0.1:0", dir.clone(), vec![]))
        .await
        .unwrap();
    let writer = MetaClient::connect(vec![server.addr()], secret())
        .await
        .unwrap();
    let reader = MetaClient::connect(vec![server.addr()], secret())
        .await
        .unwrap();
    wait_until(&reader, "default keyspace", |s| {
        s.keyspaces.contains_key("default")
    })
    .await;
    // Let the reader settle into a long poll before the change.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut rx = reader.subscribe();
    let seen = rx.borrow_and_update().version;
    let started = Instant::now();
    let after = writer.propose(node(20)).await.unwrap();
    assert!(after.version > seen);
    tokio::time::timeout(Duration::from_secs(2), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(rx.borrow().nodes.contains_key(&20));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "watch took {:?}",
        started.elapsed()
    );
    reader
        .wait_for_version(after.version, Duration::from_secs(1))
        .await
        .unwrap();
    let err = reader
        .wait_for_version(after.version + 100, Duration::from_millis(50))
        .await;
    assert!(err.is_err());

    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts voters 3, 2, then 1 (which initializes the group with the others' bound addresses).
async fn start_three(dirs: &[PathBuf]) -> Vec<Arc<MetaServer>> {
    let unknown = vec![(1, String::new()), (2, String::new()), (3, String::new())];
    let s3 = MetaServer::start(config(3, "127.0.0.1:0", dirs[2].clone(), unknown.clone()))
        .await
        .unwrap();
    let s2 = MetaServer::start(config(2, "127.0.0.1:0", dirs[1].clone(), unknown))
        .await
        .unwrap();
    let voters = vec![(1, String::new()), (2, s2.addr()), (3, s3.addr())];
    let s1 = MetaServer::start(config(1, "127.0.0.1:0", dirs[0].clone(), voters))
        .await
        .unwrap();
    vec![s1, s2, s3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_voter_catches_up_from_a_snapshot() {
    let dirs: Vec<PathBuf> = (1..=3).map(|i| temp_dir(&format!("snap-{i}"))).collect();
    let mut servers = start_three(&dirs).await;
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let client = MetaClient::connect(addrs.clone(), secret()).await.unwrap();
    wait_until(&client, "default keyspace", |s| {
        s.keyspaces.contains_key("default")
    })
    .await;
    client.propose(node(10)).await.unwrap();

    let leader = client
        .status(&addrs[0])
        .await
        .unwrap()
        .leader
        .expect("a leader");
    let lagging = servers.iter().position(|s| s.id() != leader).unwrap();
    let lagging_id = servers[lagging].id();
    servers[lagging].shutdown().await;

    // Changes the stopped voter misses, then a snapshot on the leader and a purge of the log
    // behind it: the stopped voter can now only catch up by installing the snapshot.
    for id in 11..16 {
        client.propose(node(id)).await.unwrap();
    }
    let target = client.state();
    let leader_server = servers.iter().find(|s| s.id() == leader).unwrap().clone();
    let raft = &leader_server.raft;
    let applied = raft.metrics().borrow().last_applied.expect("applied").index;
    raft.trigger().snapshot().await.unwrap();
    raft.wait(Some(Duration::from_secs(5)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied),
            "snapshot built",
        )
        .await
        .unwrap();
    raft.trigger().purge_log(applied).await.unwrap();
    raft.wait(Some(Duration::from_secs(5)))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index >= applied),
            "log purged",
        )
        .await
        .unwrap();

    let cfg = config(lagging_id, &addrs[lagging], dirs[lagging].clone(), vec![]);
    servers[lagging] = MetaServer::start(cfg).await.unwrap();
    assert!(!servers[lagging].initialized_here);
    let restarted = servers[lagging].clone();
    restarted
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied),
            "snapshot installed",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while restarted.state().version < target.version {
        assert!(
            Instant::now() < deadline,
            "restarted voter stuck at {:?}",
            restarted.state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*restarted.state(), *target);

    for s in &servers {
        s.shutdown().await;
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}
