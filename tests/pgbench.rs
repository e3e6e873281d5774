//! pgbench against `tessera dev` (2 nodes, 4 shards, 2 copies): `pgbench -i` (DROP, CREATE
//! without keys, COPY, VACUUM, ALTER TABLE ADD PRIMARY KEY), then 8 clients of the TPC-B-like
//! script in simple and prepared mode with no failed transaction, and the balances add up.
//! Needs the `pgbench` client (Debian's postgresql-client); without it the test says so and
//! passes, as the psql checks in dev_restart do.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn pgbench(port: u16, args: &[&str]) -> String {
    let out = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "tessera"])
        .args(args)
        .arg("tessera")
        .env("PGPASSWORD", "tessera")
        .output()
        .expect("pgbench runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

fn field(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '{prefix}' in pgbench output:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_runs_without_failures() {
    if Command::new("pgbench").arg("--version").output().is_err() {
        eprintln!("pgbench is not installed: skipping (install postgresql-client)");
        return;
    }
    let dir = TempDir::new("pgbench");
    let port = free_port();
    let args: Vec<String> = vec![
        "dev".into(),
        "--data".into(),
        dir.join("data").display().to_string(),
        "--port".into(),
        port.to_string(),
    ];
    let ready = format!("psql -h 127.0.0.1 -p {port} -U tessera -d tessera");
    let _dev = Proc::start("dev", args, &ready, dir.path()).await;
    within(Duration::from_secs(180), "pgbench", async move {
        tokio::task::spawn_blocking(move || {
            pgbench(port, &["-i", "-s", "1"]);
            for mode in ["simple", "prepared"] {
                let out = pgbench(port, &["-n", "-c", "8", "-j", "2", "-T", "8", "-M", mode]);
                assert_eq!(field(&out, "number of failed transactions: "), 0, "{out}");
                assert!(
                    field(&out, "number of transactions actually processed: ") > 0,
                    "{out}"
                );
            }
        })
        .await
        .expect("pgbench task");
        // Every transfer moved the same delta into an account, a teller and a branch, and
        // logged it (-n keeps pgbench from truncating the history between the runs).
        let c = try_connect(port).await.expect("connects");
        let mut sums: Vec<i64> = Vec::new();
        for sql in [
            "SELECT sum(abalance)::bigint FROM pgbench_accounts",
            "SELECT sum(tbalance)::bigint FROM pgbench_tellers",
            "SELECT sum(bbalance)::bigint FROM pgbench_branches",
            "SELECT sum(delta)::bigint FROM pgbench_history",
        ] {
            sums.push(c.query_one(sql, &[]).await.expect("sum").get(0));
        }
        assert!(sums.iter().all(|s| *s == sums[0]), "{sums:?}");
        let n: i64 = c
            .query_one("SELECT count(*) FROM pgbench_accounts", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 100_000);
    })
    .await;
}
