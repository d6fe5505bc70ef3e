//! A TCP proxy a test controls, put between Conveyor and Postgres or RabbitMQ so one
//! test can take a server away without disturbing the others sharing it.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Close every connection and refuse new ones (a server that is down).
    Refuse,
    /// Keep connections open but forward nothing (a server that hangs).
    Stall,
    /// Forward both ways at about this many bytes a second each (a slow link).
    Throttle(u32),
}

pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy on an ephemeral loopback port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, watcher) = watch::channel(Mode::Pass);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *watcher.borrow() == Mode::Refuse {
                    drop(client);
                    continue;
                }
                let watcher = watcher.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pump(client_read, server_write, watcher.clone()) => {}
                        () = pump(server_read, client_write, watcher) => {}
                    }
                });
            }
        });
        Proxy { addr, mode, task }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_for(&self, url: &str, target: &str) -> String {
        url.replacen(target, &self.addr.to_string(), 1)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction, obeying the mode before forwarding each chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        // Wait while stalled; give up when refused.
        if !passing(&mut mode).await {
            return;
        }
        // A slow link forwards a tenth of a second's worth at a time.
        let rate = match *mode.borrow() {
            Mode::Throttle(rate) => Some(rate.max(1) as usize),
            _ => None,
        };
        let chunk = rate.map_or(buffer.len(), |r| (r / 10).clamp(1, buffer.len()));
        let n = tokio::select! {
            read = from.read(&mut buffer[..chunk]) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        // Data read while the mode flipped is held until it passes again.
        if !passing(&mut mode).await {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
        if let Some(rate) = rate {
            // Pacing the link, not waiting for a state.
            tokio::time::sleep(std::time::Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
    }
}

/// Waits while the proxy stalls; `true` once it passes, `false` when it refuses.
async fn passing(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Pass | Mode::Throttle(_) => return true,
            Mode::Refuse => return false,
            Mode::Stall => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}
