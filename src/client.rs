//! The SMTP/LMTP client over tokio: a [`Connection`] moves the bytes of
//! [`crate::smtp::client`] over TCP and TLS with timeouts, and a [`Client`] is the session
//! the relay keeps (greeting, EHLO/LHLO, STARTTLS, AUTH, then transactions with a reply per
//! recipient). `probe` drives a [`Connection`] step by step with a transcript; the load
//! generator drives one as fast as it can.

use std::time::{Duration, Instant};

use base64::Engine;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::smtp::client::{
    bdat_command, dot_stuff, Capabilities, Envelope, Exchange, ReplyError, ReplyReader, Step,
};
use crate::smtp::Reply;
use crate::spool::{Spilled, StoredMessage};
use crate::trust::TlsInfo;

/// A byte stream a session runs over: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Client failures that end the session.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed or was lost.
    #[error("connection to the SMTP server: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection where a reply was due.
    #[error("the SMTP server closed the connection")]
    Closed,
    /// The server did not answer in time.
    #[error("the SMTP server did not answer within {0:?}")]
    Timeout(Duration),
    /// The server said something that is not SMTP.
    #[error("protocol error from the SMTP server: {0}")]
    Protocol(#[from] ReplyError),
    /// The server refused the session (greeting, EHLO, STARTTLS or AUTH), or a step
    /// expected another reply.
    #[error("the SMTP server refused the session: {0}")]
    Refused(Reply),
    /// TLS was required but the server does not offer STARTTLS: nothing is sent in
    /// plaintext.
    #[error("the SMTP server does not offer STARTTLS, which is required")]
    StartTlsUnavailable,
    /// The TLS handshake after STARTTLS failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// One connection to an SMTP server: replies read through a [`ReplyReader`], every read
/// and write bounded by a timeout.
pub struct Connection {
    io: Box<dyn Io>,
    reader: ReplyReader,
    chunk: Box<[u8]>,
    timeout: Duration,
    /// What TLS negotiated, after [`Connection::upgrade`].
    pub tls: Option<TlsInfo>,
    /// The chain the server presented at the upgrade (leaf first), for the caller's
    /// trust decision: the handshake itself may accept any chain.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// `C:` and `S:` lines, when recording.
    transcript: Option<Vec<String>>,
}

impl Connection {
    /// Connects over TCP within `connect_timeout`; replies are then awaited for at most
    /// `timeout`.
    pub async fn open(
        addr: std::net::SocketAddr,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(connect_timeout))??;
        let _ = tcp.set_nodelay(true);
        Ok(Connection::over(tcp, timeout))
    }

    /// A session over a stream already connected.
    pub fn over(io: impl Io + 'static, timeout: Duration) -> Connection {
        Connection {
            io: Box::new(io),
            reader: ReplyReader::new(),
            chunk: vec![0u8; 16 * 1024].into_boxed_slice(),
            timeout,
            tls: None,
            peer_certificates: Vec::new(),
            transcript: None,
        }
    }

    /// Records every command and reply line from now on (see [`Connection::take_transcript`]).
    pub fn record(&mut self) {
        self.transcript.get_or_insert_with(Vec::new);
    }

    /// The lines recorded since the last call.
    pub fn take_transcript(&mut self) -> Vec<String> {
        self.transcript
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Notes a line in the transcript (a summary of what was written, say).
    pub fn note(&mut self, line: impl Into<String>) {
        if let Some(t) = &mut self.transcript {
            t.push(line.into());
        }
    }

    /// The next reply.
    pub async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        let timeout = self.timeout;
        let reply = tokio::time::timeout(timeout, self.read_reply_inner())
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        if let Some(t) = &mut self.transcript {
            let wire = String::from_utf8_lossy(self.reader.last_wire());
            t.extend(wire.lines().map(|l| format!("S: {l}")));
        }
        Ok(reply)
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, ClientError> {
        loop {
            if let Some(reply) = self.reader.next_reply()? {
                return Ok(reply);
            }
            let n = match self.io.read(&mut self.chunk).await {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.reader.feed(&self.chunk[..n]);
        }
    }

    /// Writes and flushes `parts`, within the reply timeout plus one second per MiB: a
    /// server that stops reading must not hold a delivery worker (and its message) forever.
    pub async fn write(&mut self, parts: &[&[u8]]) -> Result<(), ClientError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let limit = self.timeout + Duration::from_secs((len / (1024 * 1024)) as u64);
        let io = &mut self.io;
        tokio::time::timeout(limit, async {
            for p in parts {
                io.write_all(p).await?;
            }
            io.flush().await
        })
        .await
        .map_err(|_| ClientError::Timeout(limit))??;
        Ok(())
    }

    /// Sends one command line (CRLF is added) and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, ClientError> {
        self.note(format!("C: {line}"));
        self.write(&[line.as_bytes(), b"\r\n"]).await?;
        self.read_reply().await
    }

    /// Reads a reply and fails with [`ClientError::Refused`] unless its code is `code`.
    pub async fn expect(&mut self, code: u16) -> Result<Reply, ClientError> {
        let reply = self.read_reply().await?;
        if reply.code == code {
            Ok(reply)
        } else {
            Err(ClientError::Refused(reply))
        }
    }

    /// EHLO (or LHLO) and the capabilities of a 250 reply.
    pub async fn hello(&mut self, lmtp: bool, name: &str) -> Result<Capabilities, ClientError> {
        let verb = if lmtp { "LHLO" } else { "EHLO" };
        let reply = self.command(&format!("{verb} {name}")).await?;
        if reply.code != 250 {
            return Err(ClientError::Refused(reply));
        }
        Ok(Capabilities::of(&reply))
    }

    /// The STARTTLS upgrade point, once the server said 220 to STARTTLS: the TLS
    /// handshake over this connection. Anything the server sent after its 220 is dropped
    /// with the plaintext buffer: only bytes read through TLS are trusted.
    pub async fn upgrade(
        &mut self,
        connector: &tokio_rustls::TlsConnector,
        name: ServerName<'static>,
    ) -> Result<(), ClientError> {
        let dropped = self.reader.discard();
        if dropped > 0 {
            tracing::debug!(bytes = dropped, "plaintext after the STARTTLS 220 dropped");
        }
        let plain = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        let tls = tokio::time::timeout(self.timeout, connector.connect(name, plain))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
            .map_err(ClientError::Handshake)?;
        let (_, conn) = tls.get_ref();
        self.tls = Some(TlsInfo::of(conn));
        self.peer_certificates = conn
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        self.io = Box::new(tls);
        Ok(())
    }

    /// Says QUIT and closes, best effort, within five seconds.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            self.write(&[b"QUIT\r\n"]).await?;
            let _ = self.read_reply().await;
            self.io.shutdown().await?;
            Ok::<_, ClientError>(())
        })
        .await;
    }

    /// The underlying stream, to close it without QUIT.
    pub fn into_inner(self) -> Box<dyn Io> {
        self.io
    }
}

/// How to reach and greet a server.
#[derive(Clone)]
pub struct ClientOptions {
    /// The server.
    pub addr: std::net::SocketAddr,
    /// LHLO and per-recipient replies after the body.
    pub lmtp: bool,
    /// Our name in EHLO.
    pub helo: String,
    /// STARTTLS with this connector and expected server name.
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// AUTH PLAIN user and password.
    pub auth: Option<(String, String)>,
    /// Longest wait for any reply.
    pub timeout: Duration,
    /// Longest wait for the TCP connection to be established.
    pub connect_timeout: Duration,
}

/// A relay session: greeted, upgraded and authenticated as configured, ready for
/// transactions, and reusable after one (the relay pools them).
pub struct Client {
    conn: Connection,
    /// What the server offered (after STARTTLS, the second EHLO's answer).
    pub caps: Capabilities,
    lmtp: bool,
    /// When this session last finished a transaction (for the pool's idle timeout).
    pub last_used: Instant,
    /// The connection broke after some replies were read: it must not be reused.
    broken: bool,
}

/// One message to send.
pub struct Transaction<'a> {
    /// Sender, recipients and the parameters declared.
    pub envelope: Envelope<'a>,
    /// Bytes sent before the body (our `Received:` header).
    pub prefix: &'a [u8],
    /// The message exactly as received.
    pub body: Payload<'a>,
}

/// The message bytes of a transaction.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// In memory.
    Bytes(&'a [u8]),
    /// Left in a spool file: read a piece at a time while it is sent, so that a large
    /// message never sits whole in memory.
    File(&'a Spilled),
}

impl Payload<'_> {
    /// The payload of a message loaded from the spool.
    pub fn of(message: &StoredMessage) -> Payload<'_> {
        match &message.rest {
            Some(spilled) => Payload::File(spilled),
            None => Payload::Bytes(&message.body),
        }
    }

    fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::File(f) => f.len,
        }
    }
}

/// How much of a payload is read, dot-stuffed and written at a time.
const PIECE: usize = 64 * 1024;

/// A payload read a piece at a time. A file that ends early or cannot be read is an
/// error: the caller must then drop the session, never end the message.
struct Pieces<'a> {
    payload: Payload<'a>,
    file: Option<tokio::fs::File>,
    buf: Vec<u8>,
    /// Bytes of the payload handed out so far.
    done: u64,
}

impl<'a> Pieces<'a> {
    fn new(payload: Payload<'a>) -> Pieces<'a> {
        Pieces {
            payload,
            file: None,
            buf: Vec::new(),
            done: 0,
        }
    }

    /// The next piece, `None` at the end.
    async fn next(&mut self) -> Result<Option<&[u8]>, ClientError> {
        let left = self.payload.len() - self.done;
        if left == 0 {
            return Ok(None);
        }
        let n = usize::try_from(left).map_or(PIECE, |l| l.min(PIECE));
        let start = self.done;
        self.done += n as u64;
        match self.payload {
            Payload::Bytes(bytes) => Ok(bytes.get(start as usize..start as usize + n)),
            Payload::File(spilled) => {
                if self.file.is_none() {
                    use tokio::io::AsyncSeekExt;
                    let mut file = tokio::fs::File::open(&spilled.path).await?;
                    file.seek(std::io::SeekFrom::Start(spilled.offset)).await?;
                    self.file = Some(file);
                    self.buf = vec![0u8; PIECE];
                }
                if let Some(file) = &mut self.file {
                    file.read_exact(&mut self.buf[..n]).await?;
                }
                Ok(Some(&self.buf[..n]))
            }
        }
    }
}

impl Client {
    /// Connects, reads the greeting, says EHLO/LHLO, upgrades with STARTTLS and
    /// authenticates as configured.
    pub async fn connect(opts: &ClientOptions) -> Result<Client, ClientError> {
        let mut conn = Connection::open(opts.addr, opts.connect_timeout, opts.timeout).await?;
        let greeting = conn.read_reply().await?;
        if greeting.code != 220 {
            return Err(ClientError::Refused(greeting));
        }
        let mut caps = conn.hello(opts.lmtp, &opts.helo).await?;
        if let Some((connector, name)) = &opts.tls {
            if !caps.starttls {
                return Err(ClientError::StartTlsUnavailable);
            }
            let r = conn.command("STARTTLS").await?;
            if r.code != 220 {
                return Err(ClientError::Refused(r));
            }
            conn.upgrade(connector, name.clone()).await?;
            caps = conn.hello(opts.lmtp, &opts.helo).await?;
        }
        if let Some((user, password)) = &opts.auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            let r = conn.command(&format!("AUTH PLAIN {token}")).await?;
            if r.code != 235 {
                return Err(ClientError::Refused(r));
            }
        }
        Ok(Client {
            conn,
            caps,
            lmtp: opts.lmtp,
            last_used: Instant::now(),
            broken: false,
        })
    }

    /// What TLS negotiated, when STARTTLS was used.
    pub fn tls(&self) -> Option<TlsInfo> {
        self.conn.tls
    }

    /// The certificate chain the server presented at STARTTLS (leaf first).
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.conn.peer_certificates
    }

    /// Whether the session broke and must be dropped rather than pooled.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Resets the session before it is reused.
    pub async fn rset(&mut self) -> Result<(), ClientError> {
        let r = self.conn.command("RSET").await?;
        if r.is_success() {
            Ok(())
        } else {
            Err(ClientError::Refused(r))
        }
    }

    /// Says QUIT and closes, best effort.
    pub async fn quit(self) {
        self.conn.quit().await;
    }

    /// Writes the message as DATA: dot-stuffed piece by piece (no second copy of a large
    /// message in memory), then `.` CRLF.
    async fn write_data(&mut self, t: &Transaction<'_>) -> Result<(), ClientError> {
        let mut bol = true;
        let mut out = Vec::with_capacity(PIECE + PIECE / 32);
        for part in [Payload::Bytes(t.prefix), t.body] {
            let mut pieces = Pieces::new(part);
            while let Some(piece) = pieces.next().await? {
                out.clear();
                dot_stuff(&mut out, piece, &mut bol);
                self.conn.write(&[&out]).await?;
            }
        }
        let end: &[u8] = if bol { b".\r\n" } else { b"\r\n.\r\n" };
        self.conn.write(&[end]).await
    }

    /// Writes the message as one BDAT LAST chunk (its length is known beforehand).
    async fn write_bdat(&mut self, t: &Transaction<'_>) -> Result<(), ClientError> {
        let bdat = bdat_command(t.prefix.len() as u64 + t.body.len());
        match t.body {
            Payload::Bytes(body) => self.conn.write(&[bdat.as_bytes(), t.prefix, body]).await,
            Payload::File(_) => {
                self.conn.write(&[bdat.as_bytes(), t.prefix]).await?;
                let mut pieces = Pieces::new(t.body);
                while let Some(piece) = pieces.next().await? {
                    self.conn.write(&[piece]).await?;
                }
                Ok(())
            }
        }
    }

    /// Sends one message; returns the reply that decided each recipient's fate, in the
    /// order of the recipients. An `Err` means the session broke: nothing is known about
    /// recipients whose reply was not read and the session must be dropped.
    pub async fn send(&mut self, t: &Transaction<'_>) -> Result<Vec<Reply>, ClientError> {
        let (mut exchange, mut step) = Exchange::start(&t.envelope, &self.caps, self.lmtp);
        loop {
            match step {
                Step::Send(commands) => self.conn.write(&[commands.as_bytes()]).await?,
                Step::SendBody { chunking: true } => self.write_bdat(t).await?,
                Step::SendBody { chunking: false } => self.write_data(t).await?,
                Step::Reset => self.conn.write(&[b"RSET\r\n"]).await?,
                Step::Read => {}
                Step::Done => break,
            }
            let reply = match self.conn.read_reply().await {
                Ok(r) => r,
                Err(e) => {
                    self.broken = true;
                    return match exchange.connection_lost(&e.to_string()) {
                        Some(results) => Ok(results),
                        None => Err(e),
                    };
                }
            };
            step = exchange.on_reply(reply).map_err(ClientError::Refused)?;
        }
        self.last_used = Instant::now();
        Ok(exchange.results())
    }
}
