//! Length-prefixed frames over a byte stream.
//!
//! ```text
//! +----------------+---------------------------------------------+
//! | length: u32 BE | body: `length` bytes, bincode 2 (standard)  |
//! +----------------+---------------------------------------------+
//! ```
//! Before authentication the reader accepts bodies of at most `HANDSHAKE_MAX` bytes, after it
//! `MAX_FRAME`; a longer length is refused before any buffer is allocated.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// The largest frame body accepted from an authenticated peer.
pub const MAX_FRAME: usize = 256 << 20;
/// The largest frame body accepted during the handshake.
pub const HANDSHAKE_MAX: usize = 1024;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a message body with bincode 2's standard configuration.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(msg, config())
        .map_err(|e| Error::internal(format!("encode: {e}")))
}

/// Decodes a message body; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (msg, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| Error::protocol(format!("malformed message: {e}")))?;
    if used != bytes.len() {
        return Err(Error::protocol("trailing bytes after message"));
    }
    Ok(msg)
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> Result<()> {
    let body = encode(msg)?;
    write_raw(w, &body).await
}

pub async fn write_raw<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<()> {
    let mut buf = Vec::with_capacity(4 + body.len());
    push_raw(&mut buf, body)?;
    // One write per frame: a separate length write would cost a syscall and a TCP segment.
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Appends one frame (length prefix and body) to `buf`, so several frames can go out in
/// one write.
pub fn push_frame<T: Serialize>(buf: &mut Vec<u8>, msg: &T) -> Result<()> {
    let body = encode(msg)?;
    push_raw(buf, &body)
}

fn push_raw(buf: &mut Vec<u8>, body: &[u8]) -> Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| Error::internal("frame too large"))?;
    if body.len() > MAX_FRAME {
        return Err(Error::internal(format!(
            "frame of {} bytes exceeds the limit",
            body.len()
        )));
    }
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    Ok(())
}

/// Writes every message queued on `rx` as frames, batching what is queued together into
/// one write, until the channel closes or a write fails.
pub async fn write_queued<W, T>(w: &mut W, rx: &mut tokio::sync::mpsc::Receiver<T>) -> Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut buf = Vec::new();
    while let Some(msg) = rx.recv().await {
        buf.clear();
        push_frame(&mut buf, &msg)?;
        // Responses that finished meanwhile share the write (bounded, to keep latency low).
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => push_frame(&mut buf, &more)?,
                Err(_) => break,
            }
        }
        w.write_all(&buf).await?;
        w.flush().await?;
    }
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(Error::protocol(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Request;
    use crate::value::Value;

    #[tokio::test]
    async fn roundtrip_and_limits() {
        let req = Request::Execute {
            shard: 3,
            epoch: 1,
            sql: "SELECT 1".into(),
            params: vec![Value::Int(7)],
            txn: None,
            timeout_ms: 0,
            lock_timeout_ms: 0,
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &(9u64, req.clone())).await.unwrap();
        let got: Option<(u64, Request)> = read_frame(&mut buf.as_slice(), MAX_FRAME).await.unwrap();
        assert_eq!(got, Some((9, req)));
        // A length over the limit is refused before reading the body.
        let err = read_frame::<_, (u64, Request)>(&mut buf.as_slice(), 4)
            .await
            .unwrap_err();
        assert_eq!(err.code, crate::error::sqlstate::PROTOCOL_VIOLATION);
        // Garbage is a protocol error, not a panic.
        let garbage = [0u8, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(
            read_frame::<_, (u64, Request)>(&mut garbage.as_slice(), MAX_FRAME)
                .await
                .is_err()
        );
        assert_eq!(
            read_frame::<_, (u64, Request)>(&mut [].as_slice(), MAX_FRAME)
                .await
                .unwrap(),
            None
        );
    }
}
