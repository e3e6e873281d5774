//! The one place roles touch the network.
//!
//! Built normally it is tokio's TCP; with the `sim` feature it is turmoil's simulated TCP, so a
//! whole cluster runs inside one deterministic simulation (see docs/TESTING.md). Everything
//! above connects by `host:port` text and never names a socket type directly.

#[cfg(not(feature = "sim"))]
pub use tokio::net::{TcpListener, TcpStream};
#[cfg(feature = "sim")]
pub use turmoil::net::{TcpListener, TcpStream};

/// Opens a connection to `addr` (`host:port`).
pub async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    #[cfg(not(feature = "sim"))]
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Listens on `addr` (`host:port`; port 0 picks a free port).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
