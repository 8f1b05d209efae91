//! One client connection: read a size-prefixed request, dispatch it, write the response, in
//! order. Requests on one connection are handled one at a time, as Kafka does (it mutes a
//! connection until its response is sent), which keeps responses in request order.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shard::notify::Notify;

use crate::handlers::fetch_framing::{Piece, Records};
use crate::handlers::{dispatch, Outcome};
use crate::security::session::{Authenticated, Session};
use crate::security::transport::Transport;
use crate::shard_context::Shard;
use crate::splice_sender::Outgoing;

/// How long a graceful shutdown lets a connection finish the request it is in.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// A TLS handshake, and a SASL exchange, must finish within this: a client that connects and
/// says nothing (or garbage, slowly) holds a connection slot no longer.
const AUTHENTICATION_TIMEOUT_MS: u64 = 10_000;

enum Next {
    Frame(Bytes),
    Closed,
    Shutdown,
}

/// Serves a connection accepted on listener `listener` (an index in `config.listeners`): the
/// TLS handshake where the listener has TLS, then requests until the client goes.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, listener: usize) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    // Kafka reports a member's host as "/<ip>" (Java's InetAddress.toString).
    let client_host = stream.peer_addr().map(|a| format!("/{}", a.ip())).unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let security = &shard.broker.security.listeners[listener];
    let mut session = Session::new(listener, security.listener.protocol.uses_sasl(), client_host, shard.broker.security.authorizer.clone());
    session.reauth_ms = security.reauth_ms;
    let mut stream = match &security.tls {
        None => Transport::Plain(stream),
        Some(tls) => {
            let handshake = Box::pin(Transport::accept_tls(tls, stream, &mut session));
            let timeout = async {
                glommio::timer::sleep(Duration::from_millis(AUTHENTICATION_TIMEOUT_MS)).await;
                Err("the TLS handshake timed out".to_string())
            };
            match futures_lite::future::or(handshake, timeout).await {
                Ok(stream) => stream,
                Err(reason) => {
                    tracing::warn!(peer, listener = security.listener.name, reason, "closing connection: TLS handshake failed");
                    return;
                }
            }
        }
    };
    serve_requests(&shard, &mut stream, &mut session, &peer).await;
    let _ = stream.close().await;
}

async fn serve_requests(shard: &Rc<Shard>, stream: &mut Transport, session: &mut Session, peer: &str) {
    let max_request_bytes = shard.broker.config.socket_request_max_bytes;
    let idle_ms = shard.broker.config.connections_max_idle_ms;
    let authentication_deadline = std::time::Instant::now() + Duration::from_millis(AUTHENTICATION_TIMEOUT_MS);
    loop {
        let shutdown = shard.shutdown.ticket();
        if shard.broker.is_shutting_down() {
            break;
        }
        // Until authenticated, the exchange has a deadline. Any wait for a request ends after
        // `connections.max.idle.ms` (Kafka's Selector closes a connection idle that long); the
        // wait starts when the last response was written, Kafka's last activity.
        let authentication_left_ms = if session.authenticated() {
            u64::MAX
        } else {
            authentication_deadline.saturating_duration_since(std::time::Instant::now()).as_millis() as u64
        };
        let wait_ms = idle_ms.min(authentication_left_ms);
        let next = futures_lite::future::or(
            async {
                match read_frame(stream, max_request_bytes).await {
                    Ok(Some(frame)) => Next::Frame(frame),
                    Ok(None) => Next::Closed,
                    Err(reason) => {
                        tracing::warn!(peer, reason, "closing connection");
                        Next::Closed
                    }
                }
            },
            async {
                let in_time = Notify::wait(shutdown, Duration::from_millis(wait_ms)).await;
                if !in_time && authentication_left_ms <= idle_ms {
                    tracing::warn!(peer, "closing connection: not authenticated in time");
                } else if !in_time {
                    tracing::debug!(peer, idle_ms, "closing an idle connection (connections.max.idle.ms)");
                }
                Next::Shutdown
            },
        )
        .await;
        let frame = match next {
            Next::Frame(frame) => frame,
            Next::Closed | Next::Shutdown => break,
        };
        if session.expects_bare_token() {
            // SaslHandshake v0: SASL tokens come and go size-prefixed, without Kafka headers.
            let settings = shard.broker.security.listeners[session.listener].sasl.as_ref();
            let reply = match session.authenticate(&frame, settings, &shard.broker.security.credentials) {
                Authenticated::Continue(bytes) | Authenticated::Done(bytes) => bytes,
                Authenticated::Failed(_) => break,
            };
            let mut framed = (reply.len() as i32).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).await.is_err() {
                break;
            }
            continue;
        }
        let mut timer = crate::metrics::RequestTimer::start(&frame);
        // Boxed (one allocation per request): inline, the largest handler's state would be part
        // of every connection's task, idle ones included (5.7 KiB each, measured).
        let outcome = Box::pin(dispatch(shard, frame, session)).await;
        timer.handled();
        match outcome {
            Outcome::Respond(bytes) => {
                if let Err(e) = stream.write_all(&bytes).await {
                    tracing::debug!(peer, error = %e, "client went away before its response");
                    break;
                }
            }
            Outcome::RespondPieces(pieces) => {
                if let Err(e) = Box::pin(write_pieces(shard, stream, pieces)).await {
                    tracing::debug!(peer, error = %e, "closing connection: a fetch response could not be sent whole");
                    break;
                }
            }
            Outcome::NoResponse => {}
            Outcome::Close(reason) => {
                tracing::warn!(peer, reason, "closing connection after a bad request");
                break;
            }
        }
        if session.close_after_response {
            let _ = stream.flush().await;
            // As Kafka (connection.failed.authentication.delay.ms): the error first, the close
            // later, so the client reads the error before it sees the connection end.
            glommio::timer::sleep(Duration::from_millis(shard.broker.security.failed_authentication_delay_ms)).await;
            break;
        }
    }
}

/// Writes a response's pieces in order. With file regions among them, the whole response goes
/// through the shard's splice sender (framing included, as one chain on the same socket); else
/// with ordinary writes. The connection handles one request at a time, so nothing else writes
/// to the socket meanwhile.
async fn write_pieces(shard: &Shard, stream: &mut Transport, pieces: Vec<Piece<Records>>) -> Result<(), String> {
    let has_regions = pieces.iter().any(|piece| matches!(piece, Piece::Records(Records::InFile(_))));
    if let (Some(sender), Transport::Plain(socket), true) = (&shard.splice_sender, &*stream, has_regions) {
        let outgoing = pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Framing(bytes) | Piece::Records(Records::InMemory(bytes)) => Outgoing::Memory(bytes),
                Piece::Records(Records::InFile(region)) => Outgoing::File(region),
            })
            .collect();
        return sender.send(socket, outgoing).await.map_err(|e| e.to_string());
    }
    for piece in pieces {
        match piece {
            Piece::Framing(bytes) | Piece::Records(Records::InMemory(bytes)) => {
                stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
            }
            Piece::Records(Records::InFile(_)) => {
                unreachable!("file regions are asked for only by shards with a splice sender, on plaintext connections")
            }
        }
    }
    Ok(())
}

/// Ok(None) on a clean end of stream between requests.
async fn read_frame(stream: &mut Transport, max_request_bytes: usize) -> Result<Option<Bytes>, String> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(format!("bad TLS record: {e}")),
        Err(e) => return Err(format!("reading a request size: {e}")),
    }
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > max_request_bytes {
        return Err(format!("request of {size} bytes exceeds socket.request.max.bytes {max_request_bytes}"));
    }
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body).await.map_err(|e| format!("reading a {size}-byte request: {e}"))?;
    Ok(Some(Bytes::from(body)))
}
