//! An SMTP sink for the end-to-end tests: a real SMTP server (mailin-embedded) running
//! in-process on an ephemeral port. It records every message it accepts (envelope
//! recipients, Subject, Message-ID, body) and can be told to refuse the next N messages
//! with a given reply (451 for "try again later", 550 for "never").
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};

use mailin_embedded::response::OK;
use mailin_embedded::{Handler, Response, Server, SslConfig};

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct ReceivedEmail {
    /// Envelope sender (MAIL FROM).
    pub from: String,
    /// Envelope recipients (RCPT TO).
    pub to: Vec<String>,
    /// The Subject header.
    pub subject: String,
    /// The Message-ID header, angle brackets included.
    pub message_id: String,
    /// Everything after the headers, as sent (MIME parts and all).
    pub body: String,
}

#[derive(Default)]
struct State {
    received: Vec<ReceivedEmail>,
    /// Replies for the next messages, instead of accepting them.
    refusals: VecDeque<(u16, String)>,
    refused: usize,
}

/// A running sink. Cloning shares it.
#[derive(Clone)]
pub struct SmtpSink {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl SmtpSink {
    /// Starts a sink on 127.0.0.1 with a port the OS picks. The server thread lives as
    /// long as the test process.
    pub fn start() -> SmtpSink {
        // Handing the bound listener to the server leaves no window for another
        // process to take the port.
        let listener = TcpListener::bind("127.0.0.1:0").expect("the sink binds a port");
        let port = listener.local_addr().expect("a bound address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let handler = SinkHandler {
            state: Arc::clone(&state),
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        };
        let mut server = Server::new(handler);
        server
            .with_name("sink.test")
            // One thread per open SMTP session: pooled idle connections hold one each.
            .with_num_threads(32)
            .with_ssl(SslConfig::None)
            .expect("plain SMTP needs no TLS setup")
            .with_tcp_listener(listener);
        std::thread::Builder::new()
            .name(format!("smtp-sink-{port}"))
            .spawn(move || {
                let _ = server.serve();
            })
            .expect("the sink thread starts");
        SmtpSink { port, state }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers the next `n` messages' DATA command with `code` and `message` instead of
    /// accepting them.
    pub fn refuse_next(&self, n: usize, code: u16, message: &str) {
        let mut state = self.state();
        for _ in 0..n {
            state.refusals.push_back((code, message.to_owned()));
        }
    }

    /// Every message accepted so far, in order.
    pub fn received(&self) -> Vec<ReceivedEmail> {
        self.state().received.clone()
    }

    /// How many messages were refused so far.
    pub fn refused(&self) -> usize {
        self.state().refused
    }
}

/// One SMTP session's view (mailin clones the handler per connection).
#[derive(Clone)]
struct SinkHandler {
    state: Arc<Mutex<State>>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for SinkHandler {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        // Refusals answer the DATA command: mailin stays in its data state after an
        // error reply to the end of data, where the client's QUIT would go unanswered.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((code, message)) = state.refusals.pop_front() {
            state.refused += 1;
            return Response::custom(code, message);
        }
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.data.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let raw = String::from_utf8_lossy(&self.data).into_owned();
        state.received.push(parse(&self.from, &self.to, &raw));
        OK
    }
}

fn parse(from: &str, to: &[String], raw: &str) -> ReceivedEmail {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    // Unfold continuation lines, then find the headers by name.
    let mut headers: Vec<String> = Vec::new();
    for line in head.lines() {
        match headers.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => headers.push(line.to_owned()),
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find_map(|h| {
                let (key, value) = h.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    ReceivedEmail {
        from: from.to_owned(),
        to: to.to_vec(),
        subject: header("Subject"),
        message_id: header("Message-ID"),
        body: body.to_owned(),
    }
}
