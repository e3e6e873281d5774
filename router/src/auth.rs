//! Client authentication: who may connect, checked against the roles in meta.
//!
//! ```text
//!  StartupMessage(user) ─► method = trust │ md5 │ scram-sha-256   (router setting)
//!     trust:  AuthenticationOk
//!     scram:  AuthenticationSASL[SCRAM-SHA-256] ◄► client-first / server-first
//!             ◄► client-final / server-final (proof checked against the stored verifier)
//!     md5:    AuthenticationMD5Password(salt) ◄► md5(md5(password ‖ user) ‖ salt)
//!  then AuthenticationOk, ParameterStatus…, BackendKeyData, ReadyForQuery
//! ```
//! Roles live in meta (`ClusterState.roles`), so every router authenticates alike. The stored
//! secret is never the password: a SCRAM verifier or an md5 hash, in PostgreSQL's text forms.
//! As in PostgreSQL, `md5` falls back to SCRAM for a role whose secret is a SCRAM verifier, and
//! an unknown role, a role without a password or one that may not log in runs the same
//! exchange as a real one and fails at its end with 28P01, so a client cannot probe which
//! role names exist. The SCRAM arithmetic is pgwire's; this module picks the secret and keeps
//! the per-connection state between messages.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pgwire::api::auth::sasl::scram::{
    ScramSecret, ScramServerAuth, ScramServerAuthWaitingForClientFinal, gen_salted_password,
};
use protocol::cluster::ClusterState;
use sha2::{Digest, Sha256};

/// PostgreSQL's iteration count for new SCRAM verifiers.
pub const SCRAM_ITERATIONS: usize = 4096;
const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// How clients prove who they are (PostgreSQL's pg_hba methods of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// Anyone may connect as any user name.
    Trust,
    Md5,
    #[default]
    ScramSha256,
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "trust" => Ok(AuthMethod::Trust),
            "md5" => Ok(AuthMethod::Md5),
            "scram-sha-256" | "scram" => Ok(AuthMethod::ScramSha256),
            _ => Err(format!(
                "unknown auth method \"{s}\" (trust, md5 or scram-sha-256)"
            )),
        }
    }
}

/// One connection's authentication, between the messages of its exchange.
pub enum Exchange {
    /// AuthenticationSASL was sent; the client's SASLInitialResponse is next.
    ScramStart(ScramSecret),
    /// server-first was sent; the client's final message is next.
    ScramFinal(Box<ScramServerAuthWaitingForClientFinal>),
    /// AuthenticationMD5Password(salt) is to be sent; the answer must equal `expected`.
    Md5 { salt: [u8; 4], expected: String },
}

/// What to send first for `user`: the exchange to start, or `None` under trust.
pub fn begin(method: AuthMethod, state: &ClusterState, user: &str) -> Option<Exchange> {
    let role = state
        .roles
        .get(user)
        .filter(|r| r.can_login && !password_expired(r));
    let stored = role.and_then(|r| r.password.as_deref());
    match method {
        AuthMethod::Trust => None,
        AuthMethod::Md5 if stored.is_some_and(|s| !s.starts_with(SCRAM_PREFIX)) => {
            let salt: [u8; 4] = rand::random();
            let expected = stored
                .map(|hash| md5_answer(hash.trim_start_matches("md5"), &salt))
                .unwrap_or_default();
            Some(Exchange::Md5 { salt, expected })
        }
        AuthMethod::Md5 | AuthMethod::ScramSha256 => Some(Exchange::ScramStart(
            stored
                .and_then(scram_secret)
                .unwrap_or_else(|| mock_secret(user)),
        )),
    }
}

/// What a client answers to AuthenticationMD5Password(salt): `md5` ‖ hex(md5(hash ‖ salt)),
/// where hash is the hex of md5(password ‖ user).
pub fn md5_answer(hash_hex: &str, salt: &[u8; 4]) -> String {
    let mut bytes = hash_hex.as_bytes().to_vec();
    bytes.extend_from_slice(salt);
    format!("md5{:x}", md5::compute(bytes))
}

/// Whether the role's VALID UNTIL has passed (its password no longer logs in, as in
/// PostgreSQL; trust logins do not look at it).
fn password_expired(role: &protocol::cluster::RoleInfo) -> bool {
    let Some(text) = &role.valid_until else {
        return false;
    };
    match protocol::DataType::TimestampTz.parse_text(text) {
        Ok(protocol::Value::TimestampTz(until)) => {
            // Microseconds since 2000-01-01 UTC, as the value counts them.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64 - 946_684_800_000_000)
                .unwrap_or(0);
            until < now
        }
        _ => false,
    }
}

/// A verifier no password matches, the same for every try with one name on this router (an
/// unknown role looks like a known one whose password is wrong). The salt is keyed with a
/// random per-process secret, as PostgreSQL's mock salt is keyed with its own, so it cannot
/// be computed from the name to tell a mock exchange from a real one.
fn mock_secret(user: &str) -> ScramSecret {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let mut hasher = Sha256::new();
    hasher.update(key);
    hasher.update(user.as_bytes());
    let digest = hasher.finalize();
    ScramSecret::Verifier {
        salt: digest[..16].to_vec(),
        iterations: SCRAM_ITERATIONS,
        stored_key: rand::random::<[u8; 32]>().to_vec(),
        server_key: rand::random::<[u8; 32]>().to_vec(),
    }
}

/// Steps a SCRAM exchange with the client's first message; returns server-first.
pub fn scram_first(secret: ScramSecret, client_first: &[u8]) -> Result<(String, Exchange), String> {
    ScramServerAuth::new()
        .on_client_first_message_with_secret(client_first, secret)
        .map(|(server_first, next)| (server_first, Exchange::ScramFinal(Box::new(next))))
        .map_err(|e| e.to_string())
}

/// The stored secret for `password` under `password_encryption` (`scram-sha-256` or `md5`).
/// A password given already hashed in either form is stored as given, as PostgreSQL does.
pub fn encrypt_password(user: &str, password: &str, encryption: &str) -> String {
    if scram_secret(password).is_some() || is_md5_hash(password) {
        return password.to_string();
    }
    if encryption.eq_ignore_ascii_case("md5") {
        return format!("md5{:x}", md5::compute(format!("{password}{user}")));
    }
    let salt: [u8; 16] = rand::random();
    let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
    match ScramSecret::verifier_from_salted_password(salt.to_vec(), salted, SCRAM_ITERATIONS) {
        ScramSecret::Verifier {
            salt,
            iterations,
            stored_key,
            server_key,
        } => format!(
            "{SCRAM_PREFIX}{iterations}:{}${}:{}",
            STANDARD.encode(salt),
            STANDARD.encode(stored_key),
            STANDARD.encode(server_key)
        ),
        // verifier_from_salted_password only makes verifiers.
        ScramSecret::SaltedPassword { .. } => String::new(),
    }
}

fn is_md5_hash(s: &str) -> bool {
    s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses `SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`.
pub fn scram_secret(stored: &str) -> Option<ScramSecret> {
    let rest = stored.strip_prefix(SCRAM_PREFIX)?;
    let (iter_salt, keys) = rest.split_once('$')?;
    let (iterations, salt) = iter_salt.split_once(':')?;
    let (stored_key, server_key) = keys.split_once(':')?;
    let secret = ScramSecret::Verifier {
        salt: STANDARD.decode(salt).ok()?,
        iterations: iterations.parse().ok().filter(|i| *i > 0)?,
        stored_key: STANDARD.decode(stored_key).ok()?,
        server_key: STANDARD.decode(server_key).ok()?,
    };
    match &secret {
        ScramSecret::Verifier {
            stored_key,
            server_key,
            ..
        } if stored_key.len() == 32 && server_key.len() == 32 => Some(secret),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_verifier_round_trips_and_checks_a_real_client() {
        let stored = encrypt_password("alice", "s3cret", "scram-sha-256");
        assert!(stored.starts_with("SCRAM-SHA-256$4096:"));
        assert!(scram_secret(&stored).is_some());
        // Stored as given when already hashed.
        assert_eq!(encrypt_password("alice", &stored, "md5"), stored);
        assert!(scram_secret("SCRAM-SHA-256$4096:AAAA$x:y").is_none());
    }

    #[test]
    fn md5_matches_postgres() {
        // PostgreSQL: md5 || md5('secret' || 'bob')
        let stored = encrypt_password("bob", "secret", "md5");
        assert_eq!(stored, format!("md5{:x}", md5::compute("secretbob")));
        assert!(is_md5_hash(&stored));
        let salt = [1, 2, 3, 4];
        let client = md5_answer(&format!("{:x}", md5::compute("secretbob")), &salt);
        assert_eq!(client, md5_answer(stored.trim_start_matches("md5"), &salt));
    }

    #[test]
    fn unknown_role_gets_a_scram_exchange_that_cannot_succeed() {
        let state = ClusterState::default();
        assert!(matches!(
            begin(AuthMethod::Md5, &state, "nobody"),
            Some(Exchange::ScramStart(_))
        ));
        assert!(begin(AuthMethod::Trust, &state, "nobody").is_none());
    }
}
