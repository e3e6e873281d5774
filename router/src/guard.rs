//! The connection guard: every client byte passes a frame check before pgwire sees it.
//!
//! ```text
//!  client TCP ──► guard: startup packets (SSLRequest → 'N'), then per message:
//!                 type byte + length; 4 ≤ length ≤ max_message, body streamed through
//!                        │ unix socket pair
//!                        ▼
//!                 pgwire (sessions, queries)  ──responses──► copied back to the client
//! ```
//! pgwire alone would buffer a message of any length up to 1 GiB and drop a malformed one
//! without a word. The guard refuses a bad or oversized message the way PostgreSQL does —
//! ErrorResponse 08P01, then close — before allocating it, and drops a client that does not
//! finish its startup packet (and TLS handshake) in time. TLS terminates here (`crate::tls`):
//! an SSLRequest is answered 'S' when the router has a certificate, and everything after the
//! handshake, the startup packet included, is read through the TLS stream.

use std::sync::Arc;
use std::time::Duration;

use pgwire::api::PgWireServerHandlers;
use pgwire::tokio::tokio_rustls::TlsAcceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;
/// The largest startup packet accepted (PostgreSQL uses 10 000 bytes too).
const MAX_STARTUP: usize = 10_000;

#[derive(Clone, Copy, Debug)]
pub struct GuardLimits {
    /// The largest frontend message body accepted, in bytes.
    pub max_message: usize,
    /// How long a client may take to send its startup packet.
    pub startup_timeout: Duration,
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            max_message: 64 << 20,
            startup_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves one client connection through the guard, over TLS when the client asks for it and
/// `tls` is set.
pub async fn serve<H: PgWireServerHandlers + Send + Sync + 'static>(
    client: TcpStream,
    handlers: Arc<H>,
    limits: GuardLimits,
    tls: Option<TlsAcceptor>,
) {
    let deadline = tokio::time::Instant::now() + limits.startup_timeout;
    let (mut read, mut write) = client.into_split();
    let first = match startup(&mut read, &mut write, deadline, tls.is_some()).await {
        Some(Startup::Packet(packet)) => packet,
        Some(Startup::Tls) => {
            let (Some(acceptor), Ok(client)) = (tls, read.reunite(write)) else {
                return;
            };
            let Ok(Ok(stream)) = tokio::time::timeout_at(deadline, acceptor.accept(client)).await
            else {
                return;
            };
            let (mut read, mut write) = tokio::io::split(stream);
            if let Some(Startup::Packet(packet)) =
                startup(&mut read, &mut write, deadline, false).await
            {
                relay(read, write, packet, handlers, limits).await;
            }
            return;
        }
        None => return,
    };
    relay(read, write, first, handlers, limits).await
}

enum Startup {
    /// The StartupMessage or CancelRequest to hand to pgwire.
    Packet(Vec<u8>),
    /// The client asked for TLS and was told yes ('S').
    Tls,
}

/// Reads the startup packets within the deadline; `None` when the client left or was told why
/// not (FATAL 08P01).
async fn startup<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    read: &mut R,
    write: &mut W,
    deadline: tokio::time::Instant,
    offer_tls: bool,
) -> Option<Startup> {
    let message =
        match tokio::time::timeout_at(deadline, read_startup(read, write, offer_tls)).await {
            Ok(Ok(Some(startup))) => return Some(startup),
            Ok(Ok(None)) => return None,
            Ok(Err(message)) => message,
            Err(_) => "timeout while waiting for the startup packet".to_string(),
        };
    let _ = write
        .write_all(&error_response("FATAL", "08P01", &message))
        .await;
    None
}

/// Relays an accepted connection (plain or TLS) to pgwire over a socket pair, checking every
/// frontend message on the way.
async fn relay<R, W, H>(
    mut client_read: R,
    mut client_write: W,
    first: Vec<u8>,
    handlers: Arc<H>,
    limits: GuardLimits,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    H: PgWireServerHandlers + Send + Sync + 'static,
{
    let (front, back) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot create a socket pair: {e}");
            return;
        }
    };
    let pg = tokio::spawn(pgwire::tokio::process_socket_unix(back, handlers));
    let (mut front_read, mut front_write) = front.into_split();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let mut downstream = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                n = front_read.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        // A TLS writer buffers: flush so each response reaches the client.
                        if client_write.write_all(&buf[..n]).await.is_err()
                            || client_write.flush().await.is_err()
                        {
                            break;
                        }
                    }
                },
            }
        }
        client_write
    });
    let upstream = async {
        front_write.write_all(&first).await.map_err(|_| None)?;
        forward_messages(&mut client_read, &mut front_write, limits.max_message).await
    };
    let mut relay_done = false;
    let outcome: Result<(), Option<String>> = tokio::select! {
        r = upstream => r,
        _ = &mut downstream => {
            relay_done = true;
            Ok(())
        }
    };
    match outcome {
        Err(Some(message)) if !relay_done => {
            // Stop relaying pgwire's output between messages, then say why we hang up.
            let _ = stop.send(());
            if let Ok(mut w) = downstream.await {
                let _ = w
                    .write_all(&error_response("FATAL", "08P01", &message))
                    .await;
                let _ = w.shutdown().await;
            }
        }
        _ if !relay_done => {
            drop(front_write);
            if let Ok(mut w) = downstream.await {
                let _ = w.shutdown().await;
            }
        }
        _ => {}
    }
    pg.abort();
}

/// Reads packets until the StartupMessage (or a CancelRequest), answering GSSAPI encryption
/// requests with 'N' and SSL requests with 'S' when `offer_tls`, else 'N'. Returns `None` if
/// the client left.
async fn read_startup<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    offer_tls: bool,
) -> Result<Option<Startup>, String> {
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).await.is_err() {
            return Ok(None);
        }
        let n = u32::from_be_bytes(len) as usize;
        if !(8..=MAX_STARTUP).contains(&n) {
            return Err(format!("invalid length of startup packet ({n})"));
        }
        let mut packet = vec![0u8; n];
        packet[..4].copy_from_slice(&len);
        if r.read_exact(&mut packet[4..]).await.is_err() {
            return Ok(None);
        }
        let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        match code {
            SSL_REQUEST if offer_tls => {
                w.write_all(b"S").await.map_err(|e| e.to_string())?;
                return Ok(Some(Startup::Tls));
            }
            SSL_REQUEST | GSSENC_REQUEST => {
                w.write_all(b"N").await.map_err(|e| e.to_string())?;
            }
            // A pid and a secret key of 4 to 256 bytes (protocol 3.2 allows long keys).
            CANCEL_REQUEST if (16..=268).contains(&n) => return Ok(Some(Startup::Packet(packet))),
            CANCEL_REQUEST => return Err(format!("invalid length of cancel request ({n})")),
            c if c >> 16 == 3 => {
                crate::wire_check::check_startup_parameters(&packet[8..])?;
                return Ok(Some(Startup::Packet(packet)));
            }
            c => {
                return Err(format!(
                    "unsupported frontend protocol {}.{}",
                    c >> 16,
                    c & 0xffff
                ));
            }
        }
    }
}

/// Relays frontend messages after checking each header; `Err(Some(msg))` is a protocol
/// violation to report, `Err(None)` a closed connection.
///
/// Whatever one read brings in is checked and passed on in one write, so a pipelined
/// Bind/Execute/Sync costs one syscall each way rather than several per message. Bodies
/// stream through, so an oversized message is refused from its header without being
/// allocated — except the few types whose fields pgwire decodes without bounds checks
/// (`crate::wire_check`): those are held whole (within the size limit) and checked first.
async fn forward_messages<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    max: usize,
) -> Result<(), Option<String>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut header = [0u8; 5];
    let mut have = 0usize;
    // Body bytes of the current message still to come.
    let mut remaining = 0usize;
    // The current message, header included, while it is held for a check.
    let mut held: Option<Vec<u8>> = None;
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
        out.clear();
        let mut i = 0;
        while i < n {
            if remaining > 0 {
                let take = remaining.min(n - i);
                match held.as_mut() {
                    Some(message) => message.extend_from_slice(&buf[i..i + take]),
                    None => out.extend_from_slice(&buf[i..i + take]),
                }
                i += take;
                remaining -= take;
                if remaining == 0 {
                    release(&mut held, &mut out)?;
                }
                continue;
            }
            let take = (5 - have).min(n - i);
            header[have..have + take].copy_from_slice(&buf[i..i + take]);
            have += take;
            i += take;
            if have == 5 {
                have = 0;
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                if len < 4 {
                    return Err(Some(format!("invalid message length {len}")));
                }
                if len - 4 > max {
                    return Err(Some(format!(
                        "message of {} bytes exceeds the limit of {max} bytes",
                        len - 4
                    )));
                }
                remaining = len - 4;
                if crate::wire_check::checked(header[0]) {
                    let mut message = Vec::with_capacity(len + 1);
                    message.extend_from_slice(&header);
                    held = Some(message);
                    if remaining == 0 {
                        release(&mut held, &mut out)?;
                    }
                } else {
                    out.extend_from_slice(&header);
                }
            }
        }
        if !out.is_empty() {
            w.write_all(&out).await.map_err(|_| None)?;
        }
    }
}

/// Checks a held message that is now complete and queues it to pass on.
fn release(held: &mut Option<Vec<u8>>, out: &mut Vec<u8>) -> Result<(), Option<String>> {
    if let Some(message) = held.take() {
        crate::wire_check::check(message[0], &message[5..]).map_err(Some)?;
        out.extend_from_slice(&message);
    }
    Ok(())
}

/// Runs the guard's checks over `input` as if a client had sent it — startup packets (TLS not
/// offered), then messages — and returns the bytes that would reach pgwire, or the FATAL
/// message the guard would send. The fuzz target `fuzz/fuzz_targets/frontend_messages.rs`
/// drives this with arbitrary bytes.
pub async fn screen(input: &[u8], max_message: usize) -> Result<Vec<u8>, String> {
    let mut read = input;
    let mut replies = Vec::new();
    let mut passed = match read_startup(&mut read, &mut replies, false).await? {
        Some(Startup::Packet(packet)) => packet,
        Some(Startup::Tls) | None => return Ok(Vec::new()),
    };
    forward_messages(&mut read, &mut passed, max_message)
        .await
        .map_err(|e| e.unwrap_or_default())?;
    Ok(passed)
}

/// Decodes what [`screen`] passed as pgwire's server would, startup first: the fuzz target
/// and the tests check that this never panics.
pub fn decode_passed(passed: &[u8]) {
    use pgwire::messages::{DecodeContext, PgWireFrontendMessage};
    let mut buf = bytes::BytesMut::from(passed);
    let mut ctx = DecodeContext::default();
    ctx.awaiting_frontend_ssl = false;
    while let Ok(Some(message)) = PgWireFrontendMessage::decode(&mut buf, &ctx) {
        if let PgWireFrontendMessage::Startup(_) = message {
            ctx.awaiting_frontend_startup = false;
        }
        if ctx.awaiting_frontend_startup {
            // A CancelRequest ends the connection.
            break;
        }
    }
}

/// A backend ErrorResponse message.
pub fn error_response(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, text) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(text.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(&body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_bad_lengths_before_reading_bodies() {
        let mut out = Vec::new();
        let short = [b'Q', 0, 0, 0, 2];
        assert!(
            forward_messages(&mut &short[..], &mut out, 1024)
                .await
                .unwrap_err()
                .unwrap()
                .contains("invalid message length")
        );
        let huge = [b'Q', 0x7f, 0xff, 0xff, 0xff];
        assert!(
            forward_messages(&mut &huge[..], &mut out, 1024)
                .await
                .unwrap_err()
                .unwrap()
                .contains("exceeds")
        );
        assert!(
            out.is_empty(),
            "nothing is forwarded from a refused message"
        );
        let ok = [b'Q', 0, 0, 0, 6, b'x', 0];
        forward_messages(&mut &ok[..], &mut out, 1024)
            .await
            .unwrap();
        assert_eq!(out, ok);
    }

    /// Inputs the fuzz target `frontend_messages` found: whatever the guard lets through must
    /// decode in pgwire without a panic.
    #[test]
    fn fuzz_findings_do_not_reach_pgwire() {
        use base64::Engine;
        for found in [
            // A Parse whose type-oid count runs past its end.
            "AAAADAADAAAMAFsAJQAACAD//wAAUAAAAAwAAwAADAAADAMAAAwsCAAMAwAADCwIAAMA////AAj//xD/////Xv//A/8AAA==",
            // A startup packet whose parameters lack their NUL: pgwire read on into the
            // following bytes and so framed a Parse the guard never saw.
            "AAAACQADCAAENQAACBD///////8iIiIiIiIjIiIiIiIiIv//////AAAAUAAAAAMIAAQAACwAAAAAAAAAAAAAAAAAAAAAAP/3AAAy",
        ] {
            let input = base64::engine::general_purpose::STANDARD
                .decode(found)
                .unwrap();
            if let Ok(passed) = futures::executor::block_on(screen(&input, 4096)) {
                decode_passed(&passed);
            }
        }
    }

    #[tokio::test]
    async fn answers_ssl_request_with_n_and_returns_startup() {
        let mut input = Vec::new();
        input.extend_from_slice(&8u32.to_be_bytes());
        input.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        let startup = [0u8, 0, 0, 9, 0, 3, 0, 0, 0];
        input.extend_from_slice(&startup);
        let mut replies = Vec::new();
        let got = read_startup(&mut &input[..], &mut replies, false)
            .await
            .unwrap();
        assert_eq!(replies, b"N");
        assert!(matches!(got, Some(Startup::Packet(p)) if p == startup));
        let bad = [0u8, 0, 0, 4];
        assert!(
            read_startup(&mut &bad[..], &mut replies, false)
                .await
                .is_err()
        );
        // With a certificate, the SSLRequest is answered 'S' and the TLS handshake is next.
        let mut replies = Vec::new();
        let got = read_startup(&mut &input[..], &mut replies, true)
            .await
            .unwrap();
        assert_eq!(replies, b"S");
        assert!(matches!(got, Some(Startup::Tls)));
    }
}
