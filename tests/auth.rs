//! Client authentication and roles, through real connections: SCRAM-SHA-256 (the default),
//! md5 and trust routers over one meta, CREATE/ALTER/DROP ROLE, and PostgreSQL's SQLSTATEs.
//!
//! The script is a list of steps; each names the router (`scram`, `md5` or `trust`), the role
//! and password to log in with, and either the statements to run with what they must give
//! (`Pass`, a value, or an SQLSTATE), or, with no statements, what the login itself must give.

mod inproc;

use std::time::Duration;

use router::auth::AuthMethod;
use tokio_postgres::NoTls;

enum Want {
    Pass,
    Code(&'static str),
    /// The single value of the first row.
    Value(&'static str),
}

struct Step {
    router: &'static str,
    user: &'static str,
    password: &'static str,
    sql: &'static str,
    want: Want,
}

const fn step(
    router: &'static str,
    user: &'static str,
    password: &'static str,
    sql: &'static str,
    want: Want,
) -> Step {
    Step {
        router,
        user,
        password,
        sql,
        want,
    }
}

use Want::*;

/// Logins (empty sql) and statements, in order.
const SCRIPT: &[Step] = &[
    // The bootstrap superuser, SCRAM by default.
    step("scram", "tessera", "tessera", "", Pass),
    step("scram", "tessera", "wrong", "", Code("28P01")),
    step("scram", "nobody", "tessera", "", Code("28P01")),
    step(
        "scram",
        "tessera",
        "tessera",
        "SELECT current_user",
        Value("tessera"),
    ),
    step(
        "scram",
        "tessera",
        "tessera",
        "SHOW is_superuser",
        Value("on"),
    ),
    // Roles: CREATE USER logs in, CREATE ROLE does not.
    step(
        "scram",
        "tessera",
        "tessera",
        "CREATE USER alice WITH PASSWORD 'a1'",
        Pass,
    ),
    step(
        "scram",
        "tessera",
        "tessera",
        "CREATE ROLE alice",
        Code("42710"),
    ),
    step(
        "scram",
        "tessera",
        "tessera",
        "CREATE ROLE pg_x",
        Code("42939"),
    ),
    step(
        "scram",
        "tessera",
        "tessera",
        "CREATE ROLE grp PASSWORD 'g'",
        Pass,
    ),
    step("scram", "tessera", "tessera", "CREATE ROLE grp2", Pass),
    step("scram", "grp", "g", "", Code("28P01")),
    step(
        "scram",
        "alice",
        "a1",
        "SELECT session_user",
        Value("alice"),
    ),
    step("scram", "alice", "a1", "SHOW is_superuser", Value("off")),
    step("scram", "alice", "a1", "CREATE ROLE eve", Code("42501")),
    step(
        "scram",
        "alice",
        "a1",
        "ALTER ROLE alice SUPERUSER",
        Code("42501"),
    ),
    step("scram", "alice", "a1", "DROP ROLE grp", Code("42501")),
    // A role may change its own password; the old one stops working.
    step(
        "scram",
        "alice",
        "a1",
        "ALTER USER alice PASSWORD 'a2'",
        Pass,
    ),
    step("scram", "alice", "a1", "", Code("28P01")),
    step("scram", "alice", "a2", "", Pass),
    // A role made by another router's session logs in through the md5 router: its secret is
    // a SCRAM verifier, so md5 falls back to SCRAM as PostgreSQL does.
    step("md5", "alice", "a2", "SELECT current_user", Value("alice")),
    step("md5", "alice", "wrong", "", Code("28P01")),
    // An md5-hashed password, checked with the md5 exchange.
    step(
        "scram",
        "tessera",
        "tessera",
        "SET password_encryption = 'md5'; CREATE ROLE m LOGIN PASSWORD 'mm'",
        Pass,
    ),
    step(
        "scram",
        "tessera",
        "tessera",
        "SELECT substr(rolpassword, 1, 3) FROM pg_authid WHERE rolname = 'm'",
        Value("md5"),
    ),
    step("md5", "m", "mm", "", Pass),
    step("md5", "m", "nope", "", Code("28P01")),
    // Renaming clears an md5 password (it is salted with the name), as in PostgreSQL.
    step(
        "scram",
        "tessera",
        "tessera",
        "ALTER ROLE m RENAME TO m2",
        Pass,
    ),
    step("md5", "m2", "mm", "", Code("28P01")),
    // CREATEROLE may manage ordinary roles but not superusers.
    step(
        "scram",
        "tessera",
        "tessera",
        "CREATE ROLE admin LOGIN CREATEROLE PASSWORD 'ad'",
        Pass,
    ),
    step(
        "scram",
        "admin",
        "ad",
        "CREATE ROLE helper LOGIN PASSWORD 'h'",
        Pass,
    ),
    step(
        "scram",
        "admin",
        "ad",
        "CREATE ROLE boss SUPERUSER",
        Code("42501"),
    ),
    step("scram", "admin", "ad", "DROP ROLE tessera", Code("2BP01")),
    step(
        "scram",
        "admin",
        "ad",
        "ALTER ROLE tessera PASSWORD 'x'",
        Code("42501"),
    ),
    step("scram", "helper", "h", "", Pass),
    step("scram", "admin", "ad", "DROP ROLE helper", Pass),
    step("scram", "helper", "h", "", Code("28P01")),
    // DROP ROLE errors.
    step(
        "scram",
        "tessera",
        "tessera",
        "DROP ROLE tessera",
        Code("55006"),
    ),
    step(
        "scram",
        "tessera",
        "tessera",
        "DROP ROLE ghost",
        Code("42704"),
    ),
    step(
        "scram",
        "tessera",
        "tessera",
        "DROP ROLE IF EXISTS ghost, grp",
        Pass,
    ),
    step(
        "scram",
        "tessera",
        "tessera",
        "SELECT count(*) FROM pg_roles WHERE rolname = 'grp'",
        Value("0"),
    ),
    // NOLOGIN takes effect at once.
    step(
        "scram",
        "tessera",
        "tessera",
        "ALTER ROLE alice NOLOGIN",
        Pass,
    ),
    step("scram", "alice", "a2", "", Code("28P01")),
    // Trust needs no password, but still a role that may log in.
    step(
        "trust",
        "tessera",
        "",
        "SELECT current_user",
        Value("tessera"),
    ),
    step("trust", "whoever", "", "", Code("28000")),
    step("trust", "grp2", "", "", Code("28000")),
    // A password past its VALID UNTIL no longer logs in.
    step(
        "scram",
        "tessera",
        "tessera",
        "CREATE USER old PASSWORD 'o' VALID UNTIL '2001-01-01 00:00:00+00'",
        Pass,
    ),
    step("scram", "old", "o", "", Code("28P01")),
    step(
        "scram",
        "tessera",
        "tessera",
        "ALTER ROLE old VALID UNTIL 'infinity'",
        Pass,
    ),
    step("scram", "old", "o", "", Pass),
    // Only a superuser sees stored password hashes, or runs the cluster's admin functions.
    step(
        "scram",
        "admin",
        "ad",
        "SELECT count(rolpassword) FROM pg_authid",
        Value("0"),
    ),
    step(
        "scram",
        "admin",
        "ad",
        "SELECT tessera.remove_node(99)",
        Code("42501"),
    ),
];

async fn connect(port: u16, user: &str, password: &str) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .dbname("tessera")
        .connect_timeout(Duration::from_secs(5));
    if !password.is_empty() {
        config.password(password);
    }
    match config.connect(NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Ok(client)
        }
        Err(e) => Err(e
            .code()
            .map_or_else(|| format!("no SQLSTATE: {e}"), |c| c.code().to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_password_methods() {
    let cluster = inproc::start_cluster(1, 1, 1).await;
    let md5 = cluster.extra_router(AuthMethod::Md5).await;
    let trust = cluster.extra_router(AuthMethod::Trust).await;
    for (i, s) in SCRIPT.iter().enumerate() {
        let port = match s.router {
            "scram" => cluster.port,
            "md5" => md5.addr.port(),
            _ => trust.addr.port(),
        };
        // Role changes reach the other routers through meta; give them a moment.
        let mut tries = 0;
        let outcome = loop {
            let outcome = run(port, s).await;
            tries += 1;
            if outcome.is_ok() || tries == 20 || s.router == "scram" {
                break outcome;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Err(e) = outcome {
            panic!("step {i} ({} as {}: {:?}): {e}", s.router, s.user, s.sql);
        }
    }
}

/// Runs one step; `Err` says how the result differed from the wanted one.
async fn run(port: u16, s: &Step) -> Result<(), String> {
    let client = match (connect(port, s.user, s.password).await, &s.want) {
        (Err(code), Code(want)) if s.sql.is_empty() => {
            return if code == *want {
                Ok(())
            } else {
                Err(format!("login gave {code}, want {want}"))
            };
        }
        (Err(code), _) => return Err(format!("login failed with {code}")),
        (Ok(client), _) => client,
    };
    if s.sql.is_empty() {
        return match s.want {
            Pass => Ok(()),
            _ => Err("login succeeded".into()),
        };
    }
    match (client.simple_query(s.sql).await, &s.want) {
        (Ok(_), Pass) => Ok(()),
        (Ok(messages), Value(want)) => {
            let got = messages.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
                _ => None,
            });
            if got == Some(Some(want.to_string())) {
                Ok(())
            } else {
                Err(format!("got {got:?}, want {want}"))
            }
        }
        (Ok(_), Code(want)) => Err(format!("succeeded, want {want}")),
        (Err(e), Code(want)) if e.code().is_some_and(|c| c.code() == *want) => Ok(()),
        (Err(e), _) => Err(format!("failed: {e:?}")),
    }
}

/// TLS through psql: `sslmode=require` encrypts, `verify-full` checks the certificate against
/// its CA and the host name, and a plaintext client is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_psql() {
    if std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("psql is not installed: skipping the TLS check");
        return;
    }
    let cluster = inproc::start_cluster(1, 1, 1).await;
    let dir = std::env::temp_dir().join(format!("tessera-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let tls = cluster.tls_router(&cert, &key).await;
    let port = tls.addr.port();
    let psql = |conninfo: String| async move {
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new("psql")
                .env("PGPASSWORD", "tessera")
                .env_remove("PGSSLMODE")
                .args(["-X", "-At", "-d", &conninfo, "-c", "\\conninfo"])
                .output(),
        )
        .await
        .expect("psql finishes")
        .expect("psql runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let base = format!("host=127.0.0.1 port={port} user=tessera dbname=tessera");
    let (ok, text) = psql(format!("{base} sslmode=require")).await;
    assert!(ok && text.contains("SSL connection"), "{text}");
    let (ok, text) = psql(format!(
        "{base} sslmode=verify-full sslrootcert={}",
        cert.display()
    ))
    .await;
    assert!(ok && text.contains("SSL connection"), "{text}");
    // A certificate for other names fails verify-full.
    let other = rcgen::generate_simple_self_signed(vec!["elsewhere.example".into()]).unwrap();
    let other_ca = dir.join("other.crt");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let (ok, text) = psql(format!(
        "{base} sslmode=verify-full sslrootcert={}",
        other_ca.display()
    ))
    .await;
    assert!(!ok, "verify-full against the wrong CA must fail: {text}");
    let (ok, text) = psql(format!("{base} sslmode=disable")).await;
    assert!(ok && !text.contains("SSL connection"), "{text}");
    // The router without a certificate says no to TLS, as PostgreSQL does.
    let (ok, text) = psql(format!(
        "host=127.0.0.1 port={} user=tessera dbname=tessera sslmode=require",
        cluster.port
    ))
    .await;
    assert!(!ok && text.contains("does not support SSL"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A session keeps the role it logged in with by OID: once that role is dropped (even if
/// its name is taken again) the session has no privileges left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_role_sessions_keep_no_privileges() {
    let cluster = inproc::start_cluster(1, 1, 1).await;
    let admin = connect(cluster.port, "tessera", "tessera").await.unwrap();
    admin
        .batch_execute(
            "CREATE ROLE alice LOGIN CREATEROLE PASSWORD 'a'; CREATE ROLE bob LOGIN PASSWORD 'b'",
        )
        .await
        .unwrap();
    let alice = connect(cluster.port, "alice", "a").await.unwrap();
    let bob = connect(cluster.port, "bob", "b").await.unwrap();
    alice.batch_execute("DROP ROLE bob").await.unwrap();
    let code = |r: Result<(), tokio_postgres::Error>| {
        r.err()
            .and_then(|e| e.code().map(|c| c.code().to_string()))
            .unwrap_or_else(|| "ok".into())
    };
    assert_eq!(
        code(bob.batch_execute("CREATE ROLE evil SUPERUSER").await),
        "42501"
    );
    assert_eq!(
        code(bob.batch_execute("ALTER ROLE alice SUPERUSER").await),
        "42501"
    );
    assert_eq!(code(bob.batch_execute("CREATE ROLE evil2").await), "42501");
    // A new role under the old name is not the old session's role.
    admin
        .batch_execute("CREATE ROLE bob LOGIN SUPERUSER PASSWORD 'b2'")
        .await
        .unwrap();
    assert_eq!(code(bob.batch_execute("CREATE ROLE evil3").await), "42501");
    assert_eq!(code(alice.batch_execute("CREATE ROLE carol").await), "ok");
}
