//! Three meta voters as separate processes: a leader is elected; after kill -9 of the leader
//! the two survivors elect a new one, keep serving the cluster map and commit new changes; the
//! killed voter rejoins after a restart.

mod common;

use std::time::Duration;

use common::*;
use protocol::cluster::{DEFAULT_KEYSPACE, MetaCommand, NodeInfo};
use replication::meta::MetaClient;
use tokio::time::Instant;

/// The leader the voters at `addrs` agree on (every one of them that answers names it).
async fn agreed_leader(client: &MetaClient, addrs: &[String]) -> Result<u64, String> {
    let mut seen = Vec::new();
    for a in addrs {
        match tokio::time::timeout(Duration::from_secs(5), client.status(a)).await {
            Ok(Ok(s)) => seen.push((a.clone(), s.leader)),
            Ok(Err(e)) => return Err(format!("status of {a}: {e:?}")),
            Err(_) => return Err(format!("status of {a} timed out")),
        }
    }
    match seen.first() {
        Some((_, Some(l))) if seen.iter().all(|(_, x)| *x == Some(*l)) => Ok(*l),
        _ => Err(format!("no agreed leader: {seen:?}")),
    }
}

async fn wait_leader(
    client: &MetaClient,
    addrs: &[String],
    wait: Duration,
    not: Option<u64>,
) -> u64 {
    let deadline = Instant::now() + wait;
    loop {
        let last = match agreed_leader(client, addrs).await {
            Ok(l) if Some(l) != not => return l,
            Ok(l) => format!("still led by {l}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("no leader (other than {not:?}) among {addrs:?} within {wait:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_elects_a_new_leader() {
    let dir = TempDir::new("meta3");
    let secret = "meta-voters-secret";
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let voters_arg = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let t0 = Instant::now();
    let mut voters = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i + 1;
        let args = vec![
            "meta".to_string(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--data".into(),
            dir.join(&format!("meta{id}")).display().to_string(),
            "--shards".into(),
            "4".into(),
            "--replicas".into(),
            "2".into(),
            "--secret".into(),
            secret.into(),
            "--voters".into(),
            voters_arg.clone(),
        ];
        voters.push(Proc::start(&format!("meta{id}"), args, "meta listening on", dir.path()).await);
    }
    within(
        Duration::from_secs(90),
        "leader_kill9_elects_a_new_leader",
        leader_kill9_body(&mut voters, &addrs, secret, t0),
    )
    .await;
}

async fn leader_kill9_body(voters: &mut [Proc], addrs: &[String], secret: &str, t0: Instant) {
    let addrs = addrs.to_vec();

    let client = meta_client(addrs.clone(), secret).await;
    let leader = wait_leader(&client, &addrs, Duration::from_secs(15), None).await;
    assert!((1..=3).contains(&leader), "leader id {leader}");
    // The group bootstraps the default keyspace.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !client.state().keyspaces.contains_key(DEFAULT_KEYSPACE) {
        assert!(
            Instant::now() < deadline,
            "keyspace {DEFAULT_KEYSPACE:?} not created within 15 s: {:?}",
            client.state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let version_before = client.state().version;
    eprintln!(
        "leader {leader} elected after {:?}, map version {version_before}",
        t0.elapsed()
    );
    drop(client);

    // kill -9 the leader.
    let li = (leader - 1) as usize;
    voters[li].kill9().await;
    let t_kill = Instant::now();
    let survivors: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, a)| a.clone())
        .collect();

    let client = meta_client(survivors.clone(), secret).await;
    let state = client.state();
    assert!(state.version > 0, "survivors serve an empty map: {state:?}");
    assert!(
        state.version >= version_before,
        "map went back from {version_before}: {state:?}"
    );
    assert!(state.keyspaces.contains_key(DEFAULT_KEYSPACE), "{state:?}");

    let new_leader = wait_leader(&client, &survivors, Duration::from_secs(15), Some(leader)).await;
    assert_ne!(new_leader, leader);
    eprintln!("new leader {new_leader} after {:?}", t_kill.elapsed());

    // The new leader commits: a proposal through the survivors is applied.
    let fake = NodeInfo {
        id: 77,
        addr: "127.0.0.1:9".into(),
    };
    let after = tokio::time::timeout(
        Duration::from_secs(15),
        client.propose(MetaCommand::RegisterNode(fake.clone())),
    )
    .await
    .expect("proposal finishes within 15 s")
    .expect("proposal after failover");
    assert!(
        after.version > state.version,
        "version did not move: {} -> {}",
        state.version,
        after.version
    );
    assert_eq!(after.nodes.get(&77), Some(&fake));

    // The killed voter comes back, follows the new leader and catches up on the map.
    voters[li].restart().await;
    let all = meta_client(vec![addrs[li].clone()], secret).await;
    wait_leader(&all, &addrs, Duration::from_secs(15), None).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = all.state();
        if st.version >= after.version && st.nodes.get(&77) == Some(&fake) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted voter's map did not catch up to version {}: {st:?}",
            after.version
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("meta voters test took {:?}", t0.elapsed());
}
