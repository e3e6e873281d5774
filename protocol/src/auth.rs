//! The connection handshake: protocol version and mutual proof of the cluster secret.
//!
//! ```text
//! client                                   server
//!   Hello { magic, version, client_nonce } ──►
//!   ◄── Challenge { version, server_nonce, server_proof = HMAC(secret, "S" ‖ cn ‖ sn) }
//!   Proof { HMAC(secret, "C" ‖ sn ‖ cn) } ──►
//!   ◄── Welcome                (or Refused { reason } and the server closes)
//! ```
//! Nonces are 32 random bytes; HMAC is HMAC-SHA-256. The server serves no request before the
//! client's proof checks, and the client sends none before the server's does, so neither side
//! talks to a peer that lacks the secret. Handshake frames are limited to `HANDSHAKE_MAX` bytes.

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result, sqlstate};
use crate::frame::{HANDSHAKE_MAX, read_frame, write_frame};

pub const MAGIC: [u8; 4] = *b"TSRA";
pub const PROTOCOL_VERSION: u16 = 1;

/// The shared cluster secret every role is started with.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        ClusterSecret(secret.as_ref().to_vec())
    }

    fn mac(&self, label: u8, a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(&[label]);
        mac.update(a);
        mac.update(b);
        mac.finalize().into_bytes().into()
    }

    fn verify(&self, label: u8, a: &[u8; 32], b: &[u8; 32], proof: &[u8]) -> bool {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(&[label]);
        mac.update(a);
        mac.update(b);
        mac.verify_slice(proof).is_ok()
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

#[derive(Serialize, Deserialize)]
enum Handshake {
    Hello {
        magic: [u8; 4],
        version: u16,
        nonce: [u8; 32],
    },
    Challenge {
        version: u16,
        nonce: [u8; 32],
        proof: Vec<u8>,
    },
    Proof {
        proof: Vec<u8>,
    },
    Welcome,
    Refused {
        reason: String,
    },
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

fn refused(reason: &str) -> Error {
    Error::new(
        sqlstate::INVALID_AUTHORIZATION,
        format!("internal handshake refused: {reason}"),
    )
}

/// Runs the client side of the handshake.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
) -> Result<()> {
    let cn = nonce();
    write_frame(
        stream,
        &Handshake::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            nonce: cn,
        },
    )
    .await?;
    let sn = match read_frame(stream, HANDSHAKE_MAX).await? {
        Some(Handshake::Challenge {
            version,
            nonce,
            proof,
        }) => {
            if version != PROTOCOL_VERSION {
                return Err(refused(&format!(
                    "server speaks protocol version {version}"
                )));
            }
            if !secret.verify(b'S', &cn, &nonce, &proof) {
                let reason = "server does not know the cluster secret";
                let _ = write_frame(
                    stream,
                    &Handshake::Refused {
                        reason: reason.into(),
                    },
                )
                .await;
                return Err(refused(reason));
            }
            nonce
        }
        Some(Handshake::Refused { reason }) => return Err(refused(&reason)),
        _ => return Err(Error::protocol("unexpected handshake message")),
    };
    write_frame(
        stream,
        &Handshake::Proof {
            proof: secret.mac(b'C', &sn, &cn).to_vec(),
        },
    )
    .await?;
    match read_frame(stream, HANDSHAKE_MAX).await? {
        Some(Handshake::Welcome) => Ok(()),
        Some(Handshake::Refused { reason }) => Err(refused(&reason)),
        _ => Err(Error::protocol("unexpected handshake message")),
    }
}

/// Runs the server side of the handshake; an error means the connection must be closed.
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
) -> Result<()> {
    let cn = match read_frame(stream, HANDSHAKE_MAX).await? {
        Some(Handshake::Hello {
            magic,
            version,
            nonce,
        }) if magic == MAGIC => {
            if version != PROTOCOL_VERSION {
                let reason = format!("unsupported protocol version {version}");
                let _ = write_frame(
                    stream,
                    &Handshake::Refused {
                        reason: reason.clone(),
                    },
                )
                .await;
                return Err(refused(&reason));
            }
            nonce
        }
        _ => return Err(Error::protocol("not a Tessera peer")),
    };
    let sn = nonce();
    let proof = secret.mac(b'S', &cn, &sn).to_vec();
    write_frame(
        stream,
        &Handshake::Challenge {
            version: PROTOCOL_VERSION,
            nonce: sn,
            proof,
        },
    )
    .await?;
    match read_frame(stream, HANDSHAKE_MAX).await? {
        Some(Handshake::Proof { proof }) if secret.verify(b'C', &sn, &cn, &proof) => {
            write_frame(stream, &Handshake::Welcome).await?;
            Ok(())
        }
        _ => {
            let _ = write_frame(
                stream,
                &Handshake::Refused {
                    reason: "bad cluster secret".into(),
                },
            )
            .await;
            Err(refused("peer does not know the cluster secret"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(client: &str, server: &str) -> (Result<()>, Result<()>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let cs = ClusterSecret::new(client);
        let ss = ClusterSecret::new(server);
        tokio::join!(client_handshake(&mut a, &cs), server_handshake(&mut b, &ss))
    }

    #[tokio::test]
    async fn same_secret_passes() {
        let (c, s) = run("k", "k").await;
        c.unwrap();
        s.unwrap();
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_both_ways() {
        let (c, s) = run("k", "other").await;
        assert!(c.is_err());
        assert!(s.is_err());
    }
}
