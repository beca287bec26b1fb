//! Who gets an association and for how long: the deadlines a watchdog enforces on each
//! connection, how many associations each peer address holds, and the A-ASSOCIATE-RJ a
//! connection over a limit gets (issue 38: silent or trickling peers held every slot, and the
//! peers over the limit were dropped without a word).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A connection's deadline, checked by the listener's watchdog: the connection is shut down once
/// it passes. Armed for the whole association request, then for each PDU from the moment the node
/// waits for it until it is read whole; disarmed while the node itself works. A socket read
/// timeout alone restarts with every byte, so a peer that trickles one byte at a time kept its
/// slot for as long as it liked (issue 38).
#[derive(Debug, Default)]
pub struct Deadline {
    /// Milliseconds after `epoch()`, 0 when disarmed.
    at_ms: std::sync::atomic::AtomicU64,
}

fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl Deadline {
    pub fn arm(&self, within: Duration) {
        let at = now_ms() + within.as_millis() as u64;
        self.at_ms.store(at, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn disarm(&self) {
        self.at_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn passed(&self) -> bool {
        let at = self.at_ms.load(std::sync::atomic::Ordering::Relaxed);
        at != 0 && now_ms() > at
    }
}

/// An open connection, as the listener sees it.
pub struct Conn {
    pub socket: std::net::TcpStream,
    pub peer: SocketAddr,
    pub deadline: Arc<Deadline>,
}

/// The open connections.
#[derive(Default)]
pub struct Connections {
    pub open: std::collections::HashMap<u64, Conn>,
}

impl Connections {
    /// How many connections `ip` holds (a handful of entries at most: `max_associations`).
    pub fn held_by(&self, ip: std::net::IpAddr) -> usize {
        self.open.values().filter(|c| c.peer.ip() == ip).count()
    }
}

/// Removes its connection from `Connections` when the association's thread ends.
pub struct Registered {
    pub id: u64,
    pub all: Arc<std::sync::Mutex<Connections>>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut c) = self.all.lock() {
            c.open.remove(&self.id);
        }
    }
}

/// How often the watchdog looks at the deadlines.
pub const WATCHDOG_TICK: Duration = Duration::from_millis(200);

/// Connections over a limit are answered with a reject by at most this many tasks at once;
/// beyond that they are closed at once (with a log line).
pub const MAX_REJECTING: usize = 64;

/// How long a connection over a limit may take to send its association request before it is
/// closed without an answer.
pub const REJECT_WAIT: Duration = Duration::from_secs(5);

/// A-ASSOCIATE-RJ: rejected-transient (2), by the service provider's presentation function (3),
/// local limit exceeded (2) (PS3.8 9.3.4).
const ASSOCIATE_RJ_LIMIT: [u8; 10] = [0x03, 0x00, 0, 0, 0, 4, 0x00, 0x02, 0x03, 0x02];

/// Read a connection's association request (within `REJECT_WAIT`), answer it with
/// `ASSOCIATE_RJ_LIMIT` and wait for the peer to close: a peer over a limit is told so rather than
/// dropped.
pub async fn reject(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.set_nodelay(true).ok();
    let mut head = [0u8; 6];
    stream.read_exact(&mut head).await?;
    if head[0] != 0x01 {
        return Ok(());
    }
    let len = u64::from(u32::from_be_bytes([head[2], head[3], head[4], head[5]]));
    let mut body = (&mut stream).take(len.min(1 << 20));
    tokio::io::copy(&mut body, &mut tokio::io::sink()).await?;
    stream.write_all(&ASSOCIATE_RJ_LIMIT).await?;
    // PS3.8 state Sta13: after an A-ASSOCIATE-RJ the acceptor waits for the requestor to close
    // the connection (the caller's timeout is the ARTIM). Closing first raced the peer's reading
    // of the reject: under load pynetdicom saw the connection end before the RJ and reported an
    // association neither established nor rejected.
    let mut rest = [0u8; 256];
    while stream.read(&mut rest).await.is_ok_and(|n| n > 0) {}
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_passes_only_while_armed() {
        let d = Deadline::default();
        assert!(!d.passed());
        d.arm(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert!(d.passed());
        d.disarm();
        assert!(!d.passed());
        d.arm(Duration::from_secs(60));
        assert!(!d.passed());
    }

    #[test]
    fn a_connection_over_a_limit_is_told_so() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = tokio::spawn(async move {
                let (s, _) = listener.accept().await.expect("accept");
                reject(s).await
            });
            let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
            // An A-ASSOCIATE-RQ header announcing 4 bytes, and those bytes.
            c.write_all(&[0x01, 0x00, 0, 0, 0, 4, 1, 2, 3, 4])
                .await
                .expect("send");
            let mut got = [0u8; ASSOCIATE_RJ_LIMIT.len()];
            c.read_exact(&mut got).await.expect("read");
            assert_eq!(got, ASSOCIATE_RJ_LIMIT);
            // The node waits for the requestor to close (Sta13), then ends too.
            assert!(!server.is_finished());
            drop(c);
            server.await.expect("join").expect("reject");
        });
    }
}
