//! Session threads: the threads client connections run on.
//!
//! ```text
//!  accept loop ──► fewest sessions? ──► session thread 0: single-threaded runtime, own epoll
//!  (shared pool)                    ├─► session thread 1:   sessions A, C, ...
//!                                   └─► ...                 (each stays on its thread)
//!
//!  shared multi-threaded runtime: node services, replication streams, meta, accept loop
//! ```
//! A session's socket, its pgwire loop, its planning and the first poll of an in-process
//! call (`protocol::rpc::local`, where most point statements finish) all run on the one
//! thread the session was given when it connected. Each thread waits in its own `epoll`,
//! so a client's message wakes exactly the thread that serves it, the way a PostgreSQL
//! backend is woken.
//!
//! *Why:* on the shared work-stealing runtime, the worker that polls the reactor hands a
//! woken session to whichever worker is free and wakes a parked sibling to steal the rest:
//! a futex wake-up and often a cross-CPU interrupt per query, paid on both sides of the
//! socket. With sessions on their own threads (four on two cores), pgbench select-only ran
//! 55–66k tps prepared against 42–43k, and 59–63k simple against 49–52k, in alternating
//! runs on one build (benches/RESULTS.md, "The tenth pass"). TPC-B did not move: its time
//! is in commits, on blocking threads either way.
//!
//! What a session blocks on still never blocks its thread: statements, commits and the
//! router's own executor run on blocking threads (`spawn_blocking`, here from the session
//! thread's runtime), so a long query only takes its thread for the encoding of its rows.
//! Sessions are placed on the thread with the fewest, and stay there: moving a session
//! would bring back the hand-offs this avoids. Dropping [`SessionThreads`] stops its
//! threads and ends the sessions on them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use protocol::error::{Error, Result};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The session threads of one router.
pub struct SessionThreads {
    threads: Vec<SessionThread>,
}

struct SessionThread {
    runtime: Handle,
    /// Sessions running on this thread now.
    sessions: Arc<AtomicUsize>,
    /// Dropped to stop the thread.
    _stop: oneshot::Sender<()>,
}

/// Counts a session on its thread for as long as the session runs.
struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SessionThreads {
    /// Starts `n` session threads.
    pub fn start(n: usize) -> Result<SessionThreads> {
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io(format!("starting session thread {i}: {e}")))?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("tessera-session-{i}"))
                .spawn(move || {
                    // Returns when the sender is dropped (the router stops).
                    let _ = runtime.block_on(stopped);
                    // Its sessions are cancelled; blocking work they started finishes alone.
                    runtime.shutdown_background();
                })
                .map_err(|e| Error::io(format!("starting session thread {i}: {e}")))?;
            threads.push(SessionThread {
                runtime: handle,
                sessions: Arc::default(),
                _stop: stop,
            });
        }
        Ok(SessionThreads { threads })
    }

    /// Sessions running on each thread now, in thread order.
    pub fn loads(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|t| t.sessions.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs `serve(socket)` on the thread with the fewest sessions. The socket moves to that
    /// thread's reactor; if it cannot (it was closed meanwhile), the session is dropped.
    pub fn spawn<F, Fut>(&self, socket: tokio::net::TcpStream, serve: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self
            .threads
            .iter()
            .min_by_key(|t| t.sessions.load(Ordering::Relaxed))
        else {
            return;
        };
        let socket = match socket.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("handing a connection to a session thread failed: {e}");
                return;
            }
        };
        thread.sessions.fetch_add(1, Ordering::Relaxed);
        let seat = Seat(thread.sessions.clone());
        thread.runtime.spawn(async move {
            let _seat = seat;
            // Registers the socket with this thread's reactor (it must run on the thread).
            match tokio::net::TcpStream::from_std(socket) {
                Ok(socket) => serve(socket).await,
                Err(e) => tracing::debug!("registering a connection failed: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sessions go to the thread with the fewest, run there (not on the caller's runtime),
    /// and leave their seat when they end.
    #[tokio::test]
    async fn sessions_spread_over_threads_and_run_on_them() {
        let threads = SessionThreads::start(2).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let (names_tx, mut names_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            let names = names_tx.clone();
            threads.spawn(socket, move |mut socket| async move {
                let name = std::thread::current().name().map(str::to_string);
                let _ = names.send(name);
                // An echo until the client hangs up.
                let mut buf = [0u8; 16];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            clients.push(client);
        }
        assert_eq!(threads.loads(), vec![2, 2]);
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(names_rx.recv().await.unwrap().unwrap_or_default());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "tessera-session-0",
                "tessera-session-0",
                "tessera-session-1",
                "tessera-session-1"
            ]
        );
        // The sockets work from their new thread.
        for client in &mut clients {
            client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
        }
        // Sessions that end give their seat back.
        clients.truncate(1);
        for _ in 0..100 {
            if threads.loads().iter().sum::<usize>() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(threads.loads().iter().sum::<usize>(), 1);
    }
}
