//! Where an exporter sends: a syslog receiver over UDP or TCP, or a JSON-lines file.

use std::io::Write as _;
use std::path::PathBuf;

use otwatch_rules::alert::Alert;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use super::syslog_line;
use crate::config::{Syslog, SyslogTransport};

/// What became of one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handed over (to the kernel for UDP, written for TCP and files).
    Sent,
    /// Refused by the system for good (a UDP datagram): counted lost, the exporter goes on.
    Lost,
    /// Not sent (the receiver is down, the file cannot be written): the exporter keeps its
    /// place and tries again later.
    Retry,
}

/// A destination for alerts.
#[derive(Debug)]
pub enum Sink {
    /// RFC 5424 syslog carrying CEF.
    Syslog {
        /// Where and how.
        config: Syslog,
        /// The HOSTNAME of each message.
        hostname: String,
        /// The socket UDP messages go from.
        udp: Option<UdpSocket>,
        /// The TCP connection, while it lasts.
        tcp: Option<TcpStream>,
    },
    /// One JSON alert per line, appended to a file.
    Jsonl {
        /// The file.
        path: PathBuf,
    },
}

impl Sink {
    /// A syslog destination (the socket is made on first use).
    pub fn syslog(config: Syslog, hostname: String) -> Self {
        Self::Syslog {
            config,
            hostname,
            udp: None,
            tcp: None,
        }
    }

    /// A JSON-lines file.
    pub fn jsonl(path: PathBuf) -> Self {
        Self::Jsonl { path }
    }

    /// The exporter's name in metrics and in the store (its lease and cursor).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Syslog { .. } => "syslog",
            Self::Jsonl { .. } => "jsonl",
        }
    }

    /// Sends one alert.
    pub async fn send(&mut self, alert: &Alert) -> Outcome {
        match self {
            Self::Syslog {
                config,
                hostname,
                udp,
                tcp,
            } => {
                let line = syslog_line(alert, hostname, config.max_message_bytes());
                match config.transport {
                    SyslogTransport::Udp => {
                        if udp.is_none() {
                            *udp = UdpSocket::bind("0.0.0.0:0").await.ok();
                        }
                        match udp {
                            Some(sock) => {
                                match sock.send_to(line.as_bytes(), &config.address).await {
                                    Ok(_) => Outcome::Sent,
                                    Err(_) => Outcome::Lost,
                                }
                            }
                            None => Outcome::Retry,
                        }
                    }
                    SyslogTransport::Tcp => {
                        if tcp.is_none() {
                            *tcp = TcpStream::connect(&config.address).await.ok();
                        }
                        let Some(stream) = tcp.as_mut() else {
                            return Outcome::Retry;
                        };
                        let frame = format!("{} {line}", line.len());
                        if stream.write_all(frame.as_bytes()).await.is_err() {
                            *tcp = None;
                            return Outcome::Retry;
                        }
                        Outcome::Sent
                    }
                }
            }
            Self::Jsonl { path } => {
                let path = path.clone();
                let line = serde_json::to_vec(alert);
                let written = tokio::task::spawn_blocking(move || {
                    let mut line = line.map_err(std::io::Error::other)?;
                    line.push(b'\n');
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)?
                        .write_all(&line)
                })
                .await;
                match written {
                    Ok(Ok(())) => Outcome::Sent,
                    _ => Outcome::Retry,
                }
            }
        }
    }
}
