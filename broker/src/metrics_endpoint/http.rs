//! The `/metrics` endpoint: a tiny HTTP/1.1 GET responder in a low-priority task queue on shard 0.
//!
//! Hand-written because all it does is answer one GET and close: an HTTP crate (hyper and the
//! like) would bring a tokio runtime beside glommio for that. One scrape at a time (scrapers
//! poll every few seconds), each bounded: a request head of at most 8 KiB read within 5 s, so a
//! stuck client cannot hold the endpoint. The socket is bound without SO_REUSEPORT (glommio's
//! `TcpListener::bind` sets it), so a port already taken is an error at start, not a silently
//! shared port.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::{exposition, gather};
#[cfg(test)]
use crate::metrics::parse_listener;
use crate::shard_context::Shard;

/// Against the default queue's 1000 shares: a scrape runs in the core's spare time.
const ENDPOINT_SHARES: usize = 10;
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// On shard 0 with `metrics.listener` set: binds and serves until the task is dropped. A bind
/// failure stops the broker (Err, the shutdown flag set), as the client listener's does.
pub fn start(shard: Rc<Shard>) -> Result<Option<glommio::Task<()>>, ()> {
    let Some(address) = shard.broker.config.metrics_listener.filter(|_| shard.id() == 0) else { return Ok(None) };
    let listener = match bind(address) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(%address, error = %e, "cannot listen for metrics.listener");
            shard.broker.shutting_down.store(true, std::sync::atomic::Ordering::Release);
            return Err(());
        }
    };
    tracing::info!(%address, "serving metrics at http://{address}/metrics");
    let queue = glommio::executor().create_task_queue(glommio::Shares::Static(ENDPOINT_SHARES), glommio::Latency::NotImportant, "metrics");
    match glommio::spawn_local_into(serve(shard, listener), queue) {
        Ok(task) => Ok(Some(task)),
        Err(e) => {
            tracing::error!(error = %e, "the metrics endpoint could not start");
            Ok(None)
        }
    }
}

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(64)?;
    // SAFETY: a bound, listening TCP socket whose descriptor glommio takes over.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(e) = answer(&shard, stream).await {
            tracing::debug!(error = %e, "metrics endpoint: a scrape ended early");
        }
    }
}

async fn answer(shard: &Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let head = read_head(&mut stream).await?;
    let (status, content_type, body) = match request_target(&head) {
        Some(("GET", "/metrics")) => {
            let (shards, broker) = gather::gather(shard).await;
            ("200 OK", exposition::CONTENT_TYPE, exposition::render(&shards, &broker))
        }
        Some(("GET", _)) => ("404 Not Found", "text/plain", "only /metrics is served here\n".to_string()),
        Some(_) => ("405 Method Not Allowed", "text/plain", "GET only\n".to_string()),
        None => ("400 Bad Request", "text/plain", "not an HTTP request\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.close().await
}

/// Reads up to the blank line ending the request head.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD_BYTES {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request head over 8 KiB"));
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break; // a client that half-closed after its request line is answered too
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(head)
}

/// (method, path without its query) of the request line.
fn request_target(head: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/") {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_values() {
        assert_eq!(parse_listener("k", "http://127.0.0.1:9404").unwrap(), "127.0.0.1:9404".parse().unwrap());
        assert_eq!(parse_listener("k", "127.0.0.1:9404/").unwrap(), "127.0.0.1:9404".parse().unwrap());
        assert!(parse_listener("k", "https://127.0.0.1:9404").is_err());
        assert!(parse_listener("k", "http://127.0.0.1").is_err());
    }

    #[test]
    fn request_lines() {
        assert_eq!(request_target(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"), Some(("GET", "/metrics")));
        assert_eq!(request_target(b"\x16\x03\x01garbage"), None);
    }
}
