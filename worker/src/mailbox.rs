//! The development mailbox's SMTP listener: a real SMTP server on loopback, inside
//! `conveyor run`, that keeps every message it accepts in Postgres (`dev_mailbox`,
//! read by `conveyor mail list|show`). It exists so that a first run with no SMTP
//! server configured sends its emails somewhere a person can read them; production
//! roles never start it.
//!
//! It speaks enough SMTP for lettre (and any plain client): `EHLO`/`HELO`, `MAIL`,
//! `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT`; no TLS, no authentication. Every read is
//! bounded in time and size, and the connections at once are capped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use store::{NewDevMail, Store};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest command line accepted (RFC 5321 allows 512 octets; a little slack).
const MAX_LINE: usize = 1024;
/// Most bytes one read of a line takes; a longer line arrives in pieces.
const MAX_READ: u64 = 64 * 1024;
/// Largest message accepted (announced with `SIZE`).
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// Most recipients of one message.
const MAX_RECIPIENTS: usize = 100;
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;
/// How long the listener waits for each line from a client.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The listener, bound and not yet serving.
#[derive(Debug)]
pub struct DevMailbox {
    listener: TcpListener,
    addr: SocketAddr,
}

impl DevMailbox {
    /// Binds `127.0.0.1` on a port the OS picks.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn bind() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, addr })
    }

    /// Where it listens: the SMTP settings the mailer gets.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` fires, then ends its sessions and returns once they
    /// are gone. Messages are kept through `store`.
    pub async fn serve(self, store: Store, shutdown: CancellationToken) {
        let sessions = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    // Unreachable: the semaphore is never closed.
                    Err(_) => break,
                },
            };
            let stream = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "development mailbox: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let store = store.clone();
            let stop = shutdown.clone();
            sessions.spawn(async move {
                let (read, write) = stream.into_split();
                tokio::select! {
                    () = stop.cancelled() => {}
                    served = session(BufReader::new(read), write, &store) => {
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "development mailbox: session ended");
                        }
                    }
                }
                drop(permit);
            });
        }
        sessions.close();
        sessions.wait().await;
    }
}

/// Where a message is kept. [`Store`] in the process; a fake in the tests.
trait Keep {
    async fn keep(&self, mail: NewDevMail) -> Result<i64, store::Error>;
}

impl Keep for Store {
    async fn keep(&self, mail: NewDevMail) -> Result<i64, store::Error> {
        self.deliver_dev_mail(&mail).await
    }
}

/// One line, bounded in time and length; `None` at the end of the stream.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    buf.clear();
    let mut limited = (&mut *reader).take(MAX_READ);
    let n = tokio::time::timeout(READ_TIMEOUT, limited.read_until(b'\n', buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client too slow"))??;
    Ok((n > 0).then_some(n))
}

/// The address inside the argument of `MAIL FROM:<…>` / `RCPT TO:<…>` (`FROM:<…> SIZE=…`).
fn path_of(argument: &str) -> String {
    let argument = argument
        .split_once(':')
        .map_or(argument, |(_, rest)| rest)
        .trim();
    let inner = argument
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(argument, |(address, _)| address);
    inner.trim().to_owned()
}

/// One client connection: greet, answer each command, keep each message.
async fn session<R, W, K>(mut reader: R, mut writer: W, keep: &K) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    K: Keep,
{
    writer
        .write_all(b"220 conveyor development mailbox ESMTP\r\n")
        .await?;
    let mut line = Vec::with_capacity(256);
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    loop {
        let Some(_) = read_line(&mut reader, &mut line).await? else {
            return Ok(());
        };
        if line.len() > MAX_LINE {
            writer.write_all(b"500 line too long\r\n").await?;
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        let (verb, argument) = text.split_once([' ', ':']).unwrap_or((text, ""));
        let reply: &[u8] = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => b"250-conveyor development mailbox\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n",
            "HELO" => b"250 conveyor development mailbox\r\n",
            "MAIL" => {
                from = Some(path_of(argument));
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" if from.is_none() => b"503 MAIL first\r\n",
            "RCPT" if to.len() >= MAX_RECIPIENTS => b"452 too many recipients\r\n",
            "RCPT" => {
                to.push(path_of(argument));
                b"250 OK\r\n"
            }
            "DATA" if from.is_none() || to.is_empty() => b"503 MAIL and RCPT first\r\n",
            "DATA" => {
                writer.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let Some(raw) = read_data(&mut reader, &mut line).await? else {
                    return Ok(());
                };
                let mail = NewDevMail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    raw: String::new(),
                };
                match raw {
                    Data::TooLarge => b"552 message too large\r\n",
                    Data::Message(raw) => match keep.keep(NewDevMail { raw, ..mail }).await {
                        Ok(id) => {
                            tracing::info!(mail = id, "development mailbox: message kept (`conveyor mail show {id}`)");
                            b"250 kept\r\n"
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "development mailbox: the database refused a message");
                            b"451 cannot keep the message now; try again later\r\n"
                        }
                    },
                }
            }
            "RSET" => {
                from = None;
                to.clear();
                b"250 OK\r\n"
            }
            "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                writer.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        writer.write_all(reply).await?;
    }
}

/// A message's data, or that it was over [`MAX_MESSAGE`] (read to its end anyway).
enum Data {
    Message(String),
    TooLarge,
}

/// Reads the data up to the lone `.` line, undoing dot-stuffing; `None` when the
/// client left first.
async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<Data>> {
    let mut data: Vec<u8> = Vec::new();
    let mut too_large = false;
    loop {
        let Some(_) = read_line(reader, line).await? else {
            return Ok(None);
        };
        if line.as_slice() == b".\r\n" || line.as_slice() == b".\n" {
            break;
        }
        let content = line.strip_prefix(b".").unwrap_or(line);
        if data.len() + content.len() > MAX_MESSAGE {
            too_large = true;
            data.clear();
        }
        if !too_large {
            data.extend_from_slice(content);
        }
    }
    Ok(Some(if too_large {
        Data::TooLarge
    } else {
        Data::Message(String::from_utf8_lossy(&data).into_owned())
    }))
}

/// A session over one duplex stream (the tests' in-memory connection).
#[cfg(test)]
async fn session_over<S: tokio::io::AsyncRead + AsyncWrite + Unpin, K: Keep>(stream: S, keep: &K) {
    let (read, write) = tokio::io::split(stream);
    let _ = session(BufReader::new(read), write, keep).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[derive(Default)]
    struct Kept(Mutex<Vec<NewDevMail>>);

    impl Keep for Kept {
        async fn keep(&self, mail: NewDevMail) -> Result<i64, store::Error> {
            let mut kept = self.0.lock().expect("not poisoned");
            kept.push(mail);
            Ok(i64::try_from(kept.len()).unwrap_or_default())
        }
    }

    async fn converse(script: &str) -> (String, Vec<NewDevMail>) {
        let kept = Kept::default();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(script.as_bytes()).await.unwrap();
        client.shutdown().await.unwrap();
        session_over(server, &kept).await;
        let mut replies = String::new();
        client.read_to_string(&mut replies).await.unwrap();
        (replies, kept.0.into_inner().unwrap())
    }

    #[tokio::test]
    async fn a_message_is_kept_with_its_envelope_and_dots_unstuffed() {
        let (replies, kept) = converse(
            "EHLO me\r\nMAIL FROM:<shop@example.com> SIZE=10\r\nRCPT TO:<ada@example.com>\r\nDATA\r\n\
             Subject: Hi\r\n\r\n..leading dot\r\nend\r\n.\r\nQUIT\r\n",
        )
        .await;

        assert!(replies.starts_with("220 "), "{replies}");
        assert!(replies.contains("354 "), "{replies}");
        assert!(replies.contains("250 kept"), "{replies}");
        assert!(replies.ends_with("221 bye\r\n"), "{replies}");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].from, "shop@example.com");
        assert_eq!(kept[0].to, ["ada@example.com"]);
        assert_eq!(kept[0].raw, "Subject: Hi\r\n\r\n.leading dot\r\nend\r\n");
    }

    #[tokio::test]
    async fn data_before_an_envelope_is_refused_and_nothing_kept() {
        let (replies, kept) = converse("HELO me\r\nDATA\r\nRCPT TO:<a@b.c>\r\nQUIT\r\n").await;

        assert!(replies.contains("503 MAIL and RCPT first"), "{replies}");
        assert!(replies.contains("503 MAIL first"), "{replies}");
        assert!(kept.is_empty());
    }
}
