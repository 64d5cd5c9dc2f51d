//! Many client sessions over a few ME connections per DC. Each connection has a writer task
//! (queued RPC messages framed and encrypted in batches, plus a keepalive `RPC_PING` whose
//! `RPC_PONG` gives the round trip) and a reader task that hands every `RPC_PROXY_ANS`,
//! `RPC_SIMPLE_ACK` and `RPC_CLOSE_EXT` to the session of its connection id. A connection
//! that fails ends its sessions and leaves the pool; the next session dials a new one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::handshake::{Link, LinkReader, LinkWriter};
use super::rpc::{self, Answer};

/// ME connections kept per DC.
pub const CONNECTIONS_PER_DC: usize = 2;
/// How often an ME connection is pinged.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// Messages queued for one ME connection before senders wait.
const WRITE_QUEUE: usize = 1024;
/// Messages queued for one session before the ME connection waits for it.
const SESSION_QUEUE: usize = 256;
/// How long the ME connection waits for a session whose queue is full before it closes
/// that session: every session on the connection waits meanwhile (the ME protocol has no
/// per-session flow control), so a client that reads far slower than it asks is cut
/// rather than left to stall the others.
pub const SLOW_SESSION_GRACE: Duration = Duration::from_secs(1);

/// What the ME sent for one session.
#[derive(Debug)]
pub enum Incoming {
    /// A message for the client.
    Data(Vec<u8>, usize),
    /// A quick-ack confirmation for the client.
    Ack([u8; 4]),
}

/// One established ME connection.
pub struct MeConn {
    /// The DC it serves.
    pub dc: i16,
    /// The ME's address.
    pub server: SocketAddr,
    /// The proxy's address as the ME sees it (goes into every `RPC_PROXY_REQ`).
    pub proxy: SocketAddr,
    queue: mpsc::Sender<Vec<u8>>,
    sessions: Mutex<HashMap<u64, mpsc::Sender<Incoming>>>,
    alive: AtomicBool,
    /// The last keepalive round trip (microseconds; 0 before the first pong).
    pub rtt_micros: AtomicU64,
}

impl MeConn {
    /// Starts the tasks of an established `link` and returns the connection.
    pub fn start(link: Link, dc: i16, server: SocketAddr, proxy: SocketAddr) -> Arc<MeConn> {
        let (queue, rx) = mpsc::channel(WRITE_QUEUE);
        let conn = Arc::new(MeConn {
            dc,
            server,
            proxy,
            queue,
            sessions: Mutex::default(),
            alive: AtomicBool::new(true),
            rtt_micros: AtomicU64::new(0),
        });
        let pings = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(write_loop(
            link.writer,
            rx,
            Arc::downgrade(&conn),
            pings.clone(),
        ));
        tokio::spawn(read_loop(link.reader, conn.clone(), pings));
        conn
    }

    /// Whether the connection still works.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Relaxed)
    }

    /// Sessions on it now.
    pub fn load(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Incoming>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn die(&self) {
        self.alive.store(false, Relaxed);
        // Dropping the senders ends every session's receive loop.
        self.lock().clear();
    }

    /// Registers a new session with a fresh random connection id.
    pub fn open(self: &Arc<Self>) -> MeSession {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let mut sessions = self.lock();
        let conn_id = loop {
            let id = rand::random::<u64>();
            if !sessions.contains_key(&id) {
                break id;
            }
        };
        sessions.insert(conn_id, tx);
        drop(sessions);
        MeSession {
            conn: self.clone(),
            conn_id,
            incoming: rx,
        }
    }
}

/// One client session's share of an ME connection; dropping it tells the ME
/// (`RPC_CLOSE_CONN`).
pub struct MeSession {
    /// The connection it rides on.
    pub conn: Arc<MeConn>,
    /// Its connection id.
    pub conn_id: u64,
    /// What the ME sends for it; `None` once the ME closed it or the connection died.
    pub incoming: mpsc::Receiver<Incoming>,
}

impl MeSession {
    /// Takes the receiver of what the ME sends (a closed one is left in its place).
    pub fn take_incoming(&mut self) -> mpsc::Receiver<Incoming> {
        std::mem::replace(&mut self.incoming, mpsc::channel(1).1)
    }

    /// Queues one encoded RPC message; false when the connection is gone.
    pub async fn send(&self, message: Vec<u8>) -> bool {
        self.conn.is_alive() && self.conn.queue.send(message).await.is_ok()
    }
}

impl Drop for MeSession {
    fn drop(&mut self) {
        let was_open = self.conn.lock().remove(&self.conn_id).is_some();
        if was_open && self.conn.is_alive() {
            let _ = self
                .conn
                .queue
                .try_send(rpc::close_conn(self.conn_id).to_vec());
        }
    }
}

type Pings = Arc<Mutex<HashMap<u64, Instant>>>;

async fn write_loop(
    mut writer: LinkWriter,
    mut rx: mpsc::Receiver<Vec<u8>>,
    conn: std::sync::Weak<MeConn>,
    pings: Pings,
) {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some(first) = next else { break };
                batch.push(first);
                while batch.len() < 64 {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
            }
            _ = keepalive.tick() => {
                let id = rand::random::<u64>();
                let mut pending = pings.lock().unwrap_or_else(PoisonError::into_inner);
                pending.retain(|_, sent: &mut Instant| sent.elapsed() < KEEPALIVE * 6);
                pending.insert(id, Instant::now());
                batch.push(rpc::ping(id).to_vec());
            }
        }
        let sent = writer.send_all(batch.iter().map(Vec::as_slice)).await;
        batch.clear();
        if sent.is_err() {
            break;
        }
    }
    if let Some(conn) = conn.upgrade() {
        conn.die();
    }
}

async fn read_loop(mut reader: LinkReader, conn: Arc<MeConn>, pings: Pings) {
    let why = loop {
        let frame = match reader.recv().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break "the middle proxy closed the connection".to_string(),
            Err(e) => break e.to_string(),
        };
        let Some(answer) = rpc::parse_answer(&frame) else {
            break "a truncated RPC answer".to_string();
        };
        let (conn_id, incoming) = match answer {
            Answer::ProxyAns { conn_id, data } => (conn_id, Some(Incoming::Data(frame, data))),
            Answer::SimpleAck { conn_id, confirm } => (conn_id, Some(Incoming::Ack(confirm))),
            Answer::CloseExt { conn_id } => (conn_id, None),
            Answer::Ping { id } => {
                let _ = conn.queue.try_send(rpc::pong(id).to_vec());
                continue;
            }
            Answer::Pong { id } => {
                let sent = pings
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                if let Some(sent) = sent {
                    let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    conn.rtt_micros.store(micros.max(1), Relaxed);
                }
                continue;
            }
            Answer::Other(kind) => {
                tracing::debug!(
                    kind = format_args!("{kind:#010x}"),
                    "ignored middle-proxy message"
                );
                continue;
            }
        };
        let session = match incoming {
            Some(_) => conn.lock().get(&conn_id).cloned(),
            None => conn.lock().remove(&conn_id),
        };
        if let (Some(session), Some(incoming)) = (session, incoming) {
            // A session that is gone has dropped its receiver; nothing to do then.
            let sent = session.send_timeout(incoming, SLOW_SESSION_GRACE).await;
            if let Err(mpsc::error::SendTimeoutError::Timeout(_)) = sent {
                cut_slow_session(&conn, conn_id);
            }
        }
    };
    tracing::warn!(dc = conn.dc, middle_proxy = %conn.server, reason = %why, "middle-proxy connection lost");
    conn.die();
}

/// Closes session `conn_id`, whose client has not taken [`SESSION_QUEUE`] messages for
/// [`SLOW_SESSION_GRACE`]: its queue is dropped (its relay ends) and the ME is told.
fn cut_slow_session(conn: &MeConn, conn_id: u64) {
    if conn.lock().remove(&conn_id).is_some() {
        let _ = conn.queue.try_send(rpc::close_conn(conn_id).to_vec());
        tracing::info!(
            dc = conn.dc,
            middle_proxy = %conn.server,
            "closed a middle-proxy session whose client reads too slowly: it held up the \
             other sessions on the connection"
        );
    }
}

/// After a failed dial, sessions of the DC skip dialling (and go straight to the fallback)
/// for this long while no connection is live, so an unreachable ME costs one connect
/// timeout, not one per session.
pub const REDIAL_AFTER: Duration = Duration::from_secs(5);

/// One DC's ME connections.
#[derive(Default)]
pub struct DcPool {
    conns: Mutex<Vec<Arc<MeConn>>>,
    dialing: tokio::sync::Mutex<()>,
    /// Until when dialling is skipped after a failure (with the failure's text).
    failed: Mutex<Option<(Instant, String)>>,
}

impl DcPool {
    /// The live connections (dead ones are dropped from the pool).
    pub fn live(&self) -> Vec<Arc<MeConn>> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|c| c.is_alive());
        conns.clone()
    }

    /// The least loaded live connection, dialling one more (with `dial`) while the pool has
    /// fewer than [`CONNECTIONS_PER_DC`]; one dial at a time per DC.
    /// After a failure, dialling is skipped for [`REDIAL_AFTER`] while nothing is live: then
    /// `skipped` makes the error from the last failure's text.
    pub async fn pick<F, Fut, E>(
        &self,
        dial: F,
        skipped: impl FnOnce(String) -> E,
    ) -> Result<Arc<MeConn>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<MeConn>, E>>,
        E: std::fmt::Display,
    {
        let least = |live: &[Arc<MeConn>]| live.iter().min_by_key(|c| c.load()).cloned();
        let live = self.live();
        if live.len() >= CONNECTIONS_PER_DC {
            if let Some(conn) = least(&live) {
                return Ok(conn);
            }
        }
        let _dialing = self.dialing.lock().await;
        let live = self.live();
        if live.len() >= CONNECTIONS_PER_DC {
            if let Some(conn) = least(&live) {
                return Ok(conn);
            }
        }
        let recent = self
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|(until, _)| Instant::now() < *until);
        if let Some((_, why)) = recent {
            return least(&live).ok_or_else(|| skipped(why));
        }
        match dial().await {
            Ok(conn) => {
                *self.failed.lock().unwrap_or_else(PoisonError::into_inner) = None;
                self.conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                *self.failed.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now() + REDIAL_AFTER, e.to_string()));
                least(&live).ok_or(e)
            }
        }
    }
}
