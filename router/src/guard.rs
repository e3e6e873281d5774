//! The connection guard: every client byte passes a frame check before pgwire decodes it.
//!
//! ```text
//!  client TCP ──► guard: startup packets (SSLRequest → 'N' or 'S' + TLS handshake)
//!                   │
//!                   ▼
//!  Screened stream: each read is checked message by message (type byte + length,
//!                   4 ≤ length ≤ max_message; some types' bodies too) in place
//!                   │
//!                   ▼
//!  pgwire codec (Framed) → handlers, in the same task; responses written straight back
//! ```
//! pgwire alone would buffer a message of any length up to 1 GiB and drop a malformed one
//! without a word. The guard refuses a bad or oversized message the way PostgreSQL does —
//! ErrorResponse 08P01, then close — before pgwire allocates or decodes it, and drops a client
//! that does not finish its startup and authentication in time. TLS terminates here
//! (`crate::tls`): an SSLRequest is answered 'S' when the router has a certificate, and
//! everything after the handshake, the startup packet included, is read through the TLS
//! stream.
//!
//! The checks run inside `AsyncRead::poll_read` of the stream pgwire reads from
//! ([`Screened`]), and this module drives pgwire's per-message loop itself. An earlier
//! version relayed bytes to pgwire over a Unix socket pair: two more sends, two more
//! receives and three tasks per connection, a sixth of the router's CPU under pgbench -S.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::StreamExt;
use pgwire::api::PgWireServerHandlers;
use pgwire::api::{ClientInfo, DefaultClient, ErrorHandler, PgWireConnectionState};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{PgWireMessageServerCodec, process_error, process_message};
use pgwire::tokio::tokio_rustls::TlsAcceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;
/// The largest startup packet accepted (PostgreSQL uses 10 000 bytes too).
const MAX_STARTUP: usize = 10_000;

#[derive(Clone, Copy, Debug)]
pub struct GuardLimits {
    /// The largest frontend message body accepted, in bytes.
    pub max_message: usize,
    /// How long a client may take to send its startup packet and authenticate.
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
    let peer = client
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
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
                let stream = Screened::new(read.unsplit(write), packet, limits.max_message);
                converse(stream, peer, true, handlers, deadline).await;
            }
            return;
        }
        None => return,
    };
    let Ok(client) = read.reunite(write) else {
        return;
    };
    let stream = Screened::new(client, first, limits.max_message);
    converse(stream, peer, false, handlers, deadline).await
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

/// pgwire's per-connection loop (as `pgwire::tokio::process_socket` runs it) over the
/// screened stream: decode a message, hand it to the handlers, report errors. Startup and
/// authentication must end by `deadline`. A message the screen refused ends the connection
/// with FATAL 08P01 and the reason.
async fn converse<S, H>(
    stream: Screened<S>,
    peer: SocketAddr,
    secure: bool,
    handlers: Arc<H>,
    deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    H: PgWireServerHandlers + Send + Sync + 'static,
{
    let startup_handler = handlers.startup_handler();
    let simple_query_handler = handlers.simple_query_handler();
    let extended_query_handler = handlers.extended_query_handler();
    let copy_handler = handlers.copy_handler();
    let cancel_handler = handlers.cancel_handler();
    let error_handler = handlers.error_handler();
    let mut socket = Framed::new(
        stream,
        PgWireMessageServerCodec::new(DefaultClient::new(peer, secure)),
    );
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    loop {
        let authenticating = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let next = if authenticating {
            tokio::time::timeout_at(deadline, socket.next())
                .await
                .ok()
                .flatten()
        } else {
            socket.next().await
        };
        let Some(Ok(message)) = next else {
            break;
        };
        // A Terminate ends the connection: some clients (asyncpg) wait for the close.
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let is_extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let is_cancel_request = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        socket.get_mut().hold = is_extended_query
            && !matches!(
                message,
                PgWireFrontendMessage::Sync(_) | PgWireFrontendMessage::Flush(_)
            );
        if let Err(mut e) = process_message(
            message,
            &mut socket,
            startup_handler.clone(),
            simple_query_handler.clone(),
            extended_query_handler.clone(),
            copy_handler.clone(),
            cancel_handler.clone(),
        )
        .await
        {
            error_handler.on_error(&socket, &mut e);
            let is_fatal = e.is_fatal();
            if process_error(&mut socket, e, is_extended_query)
                .await
                .is_err()
                || is_fatal
            {
                break;
            }
        }
        if is_cancel_request {
            break;
        }
        // Sent now: replies to anything but a held message (pgwire does not flush when it
        // ignores a Sync during COPY), and a CopyInResponse, which the client waits for
        // before it sends its data (PostgreSQL flushes before it waits for COPY data).
        let copying = matches!(socket.state(), PgWireConnectionState::CopyInProgress(_));
        if !socket.get_ref().hold || copying {
            socket.get_mut().hold = false;
            if futures::SinkExt::<pgwire::messages::PgWireBackendMessage>::flush(&mut socket)
                .await
                .is_err()
            {
                break;
            }
        }
    }
    // Replies queued but not yet flushed go before the FATAL.
    socket.get_mut().hold = false;
    let _ = futures::SinkExt::<pgwire::messages::PgWireBackendMessage>::flush(&mut socket).await;
    let stream = socket.get_mut();
    if let Some(reason) = stream.violation.take() {
        let _ = stream
            .inner
            .write_all(&error_response("FATAL", "08P01", &reason))
            .await;
    }
    let _ = stream.inner.shutdown().await;
}

/// The client's byte stream as pgwire reads it: the startup packet the guard already read
/// and checked, then whatever the client sends, checked by a [`Screen`] in each `poll_read`
/// before pgwire's buffer takes it. A refused read hands pgwire nothing and fails, so the
/// refused message is never decoded; writes pass straight through.
pub struct Screened<S> {
    inner: S,
    startup: Vec<u8>,
    startup_sent: usize,
    screen: Screen,
    /// Why the screen refused the client's bytes, once it has.
    violation: Option<String>,
    /// Replies written but not yet sent, from `out_sent` on.
    out: Vec<u8>,
    out_sent: usize,
    /// While set, a flush keeps the replies (up to `HELD_REPLIES_MAX`): set for the messages
    /// of an extended-protocol exchange before its Sync or Flush, whose replies PostgreSQL
    /// also sends only then. pgwire flushes after every reply; without this a prepared
    /// statement's BindComplete, RowDescription, DataRows and CommandComplete would go out in
    /// four writes (and four packets) instead of one.
    pub hold: bool,
}

/// Held replies beyond this are sent anyway.
const HELD_REPLIES_MAX: usize = 256 * 1024;

impl<S> Screened<S> {
    fn new(inner: S, startup: Vec<u8>, max_message: usize) -> Self {
        Screened {
            inner,
            startup,
            startup_sent: 0,
            screen: Screen::new(max_message),
            violation: None,
            out: Vec::new(),
            out_sent: 0,
            hold: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Screened<S> {
    /// Writes every held reply to the client.
    fn poll_send_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_sent < self.out.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_sent..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_sent += n;
        }
        self.out.clear();
        self.out_sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Screened<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.startup_sent < this.startup.len() {
            let n = (this.startup.len() - this.startup_sent).min(buf.remaining());
            buf.put_slice(&this.startup[this.startup_sent..this.startup_sent + n]);
            this.startup_sent += n;
            return Poll::Ready(Ok(()));
        }
        if this.violation.is_some() {
            return Poll::Ready(Err(refused()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Err(reason) = this.screen.inspect(&buf.filled()[before..]) {
            buf.set_filled(before);
            this.violation = Some(reason);
            return Poll::Ready(Err(refused()));
        }
        Poll::Ready(Ok(()))
    }
}

fn refused() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "frontend message refused")
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Screened<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() - this.out_sent >= HELD_REPLIES_MAX {
            std::task::ready!(this.poll_send_out(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.hold && this.out.len() - this.out_sent < HELD_REPLIES_MAX {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(this.poll_send_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
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

/// The frame checks over the messages after the startup packet, fed bytes as they arrive
/// (sans I/O). Bodies are not copied — an oversized message is refused from its header —
/// except those of the few types whose fields pgwire decodes without bounds checks
/// (`crate::wire_check`): their bodies are gathered (within the size limit, in one reused
/// buffer) and checked when the last byte arrives, in the same read that would complete them.
struct Screen {
    max: usize,
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to come.
    remaining: usize,
    /// Whether the current message's body is being gathered into `held` for a check.
    holding: bool,
    held: Vec<u8>,
}

/// A held body buffer larger than this is given back after its check.
const HELD_KEEP: usize = 64 * 1024;

impl Screen {
    fn new(max: usize) -> Self {
        Screen {
            max,
            header: [0; 5],
            have: 0,
            remaining: 0,
            holding: false,
            held: Vec::new(),
        }
    }

    /// Checks the next bytes of the stream; `Err` is the protocol violation to report.
    fn inspect(&mut self, mut input: &[u8]) -> Result<(), String> {
        while !input.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(input.len());
                if self.holding {
                    self.held.extend_from_slice(&input[..take]);
                }
                input = &input[take..];
                self.remaining -= take;
                if self.remaining == 0 {
                    self.release()?;
                }
                continue;
            }
            let take = (5 - self.have).min(input.len());
            self.header[self.have..self.have + take].copy_from_slice(&input[..take]);
            self.have += take;
            input = &input[take..];
            if self.have < 5 {
                continue;
            }
            self.have = 0;
            let h = self.header;
            let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
            if len < 4 {
                return Err(format!("invalid message length {len}"));
            }
            if len - 4 > self.max {
                return Err(format!(
                    "message of {} bytes exceeds the limit of {} bytes",
                    len - 4,
                    self.max
                ));
            }
            self.remaining = len - 4;
            if crate::wire_check::checked(h[0]) {
                self.holding = true;
                self.held.clear();
                if self.remaining == 0 {
                    self.release()?;
                }
            }
        }
        Ok(())
    }

    /// Checks a held message that is now complete.
    fn release(&mut self) -> Result<(), String> {
        if !self.holding {
            return Ok(());
        }
        self.holding = false;
        let checked = crate::wire_check::check(self.header[0], &self.held);
        if self.held.capacity() > HELD_KEEP {
            self.held = Vec::new();
        }
        checked
    }
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
    Screen::new(max_message).inspect(read)?;
    passed.extend_from_slice(read);
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

    #[test]
    fn refuses_bad_lengths_from_the_header() {
        let short = [b'Q', 0, 0, 0, 2];
        assert!(
            Screen::new(1024)
                .inspect(&short)
                .unwrap_err()
                .contains("invalid message length")
        );
        let huge = [b'Q', 0x7f, 0xff, 0xff, 0xff];
        assert!(
            Screen::new(1024)
                .inspect(&huge)
                .unwrap_err()
                .contains("exceeds")
        );
        // Byte by byte is the same as all at once.
        let mut screen = Screen::new(1024);
        for b in [b'Q', 0, 0, 0, 6, b'x', 0, b'Q', 0, 0, 0, 2] {
            if let Err(e) = screen.inspect(&[b]) {
                assert!(e.contains("invalid message length"));
                return;
            }
        }
        panic!("the second message's length was not refused");
    }

    /// A read that completes a refused message hands pgwire none of its bytes, and every
    /// later read fails too; the startup packet and good messages before it pass as sent.
    #[tokio::test]
    async fn screened_reads_stop_at_a_refused_message() {
        let startup = vec![0u8, 0, 0, 9, 0, 3, 0, 0, 0];
        let good = [b'Q', 0, 0, 0, 6, b'x', 0];
        // A Bind too short for its own fields (wire_check refuses it).
        let bad = [b'B', 0, 0, 0, 5, 0];
        let (mut client, server) = tokio::io::duplex(1024);
        let mut stream = Screened::new(server, startup.clone(), 1024);
        client.write_all(&good).await.unwrap();
        let mut got = vec![0u8; 64];
        let n = stream.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], &startup[..]);
        let n = stream.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], &good[..]);
        client.write_all(&bad).await.unwrap();
        let mut buf = ReadBuf::new(&mut got);
        let refused =
            std::future::poll_fn(|cx| Pin::new(&mut stream).poll_read(cx, &mut buf)).await;
        assert!(refused.is_err());
        assert!(buf.filled().is_empty());
        assert!(stream.violation.is_some());
        client.write_all(&good).await.unwrap();
        assert!(stream.read(&mut got).await.is_err());
    }

    /// Replies flushed while `hold` is set stay until a flush without it (the Sync), then go
    /// out together; a shutdown sends what is held.
    #[tokio::test]
    async fn held_replies_go_out_at_the_unheld_flush() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut stream = Screened::new(server, Vec::new(), 1024);
        stream.hold = true;
        stream.write_all(b"bind").await.unwrap();
        stream.flush().await.unwrap();
        stream.write_all(b"rows").await.unwrap();
        stream.flush().await.unwrap();
        let mut got = [0u8; 16];
        let nothing = tokio::time::timeout(Duration::from_millis(50), client.read(&mut got)).await;
        assert!(nothing.is_err(), "held replies were sent: {nothing:?}");
        stream.hold = false;
        stream.write_all(b"ready").await.unwrap();
        stream.flush().await.unwrap();
        let mut all = vec![0u8; 13];
        client.read_exact(&mut all).await.unwrap();
        assert_eq!(all, b"bindrowsready");
        stream.hold = true;
        stream.write_all(b"last").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"last");
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
