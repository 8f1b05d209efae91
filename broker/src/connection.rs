//! One client connection: read a size-prefixed request, dispatch it, write the response, in
//! order. Requests on one connection are handled one at a time, as Kafka does (it mutes a
//! connection until its response is sent), which keeps responses in request order.

use std::rc::Rc;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shard::notify::Notify;

use crate::handlers::fetch_framing::{Piece, Records};
use crate::handlers::{dispatch, Outcome};
use crate::shard_context::Shard;
use crate::splice_sender::Outgoing;

/// How long a graceful shutdown lets a connection finish the request it is in.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

enum Next {
    Frame(Bytes),
    Closed,
    Shutdown,
}

pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    // Kafka reports a member's host as "/<ip>" (Java's InetAddress.toString).
    let client_host = stream.peer_addr().map(|a| format!("/{}", a.ip())).unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let max_request_bytes = shard.broker.config.socket_request_max_bytes;
    loop {
        let shutdown = shard.shutdown.ticket();
        if shard.broker.is_shutting_down() {
            break;
        }
        let next = futures_lite::future::or(
            async {
                match read_frame(&mut stream, max_request_bytes).await {
                    Ok(Some(frame)) => Next::Frame(frame),
                    Ok(None) => Next::Closed,
                    Err(reason) => {
                        tracing::warn!(peer, reason, "closing connection");
                        Next::Closed
                    }
                }
            },
            async {
                Notify::wait(shutdown, std::time::Duration::MAX / 4).await;
                Next::Shutdown
            },
        )
        .await;
        let frame = match next {
            Next::Frame(frame) => frame,
            Next::Closed | Next::Shutdown => break,
        };
        let mut timer = crate::metrics::RequestTimer::start(&frame);
        let outcome = dispatch(&shard, frame, &client_host).await;
        timer.handled();
        match outcome {
            Outcome::Respond(bytes) => {
                if let Err(e) = stream.write_all(&bytes).await {
                    tracing::debug!(peer, error = %e, "client went away before its response");
                    break;
                }
            }
            Outcome::RespondPieces(pieces) => {
                if let Err(e) = write_pieces(&shard, &mut stream, pieces).await {
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
    }
    let _ = stream.close().await;
}

/// Writes a response's pieces in order. With file regions among them, the whole response goes
/// through the shard's splice sender (framing included, as one chain on the same socket); else
/// with ordinary writes. The connection handles one request at a time, so nothing else writes
/// to the socket meanwhile.
async fn write_pieces(shard: &Shard, stream: &mut TcpStream, pieces: Vec<Piece<Records>>) -> Result<(), String> {
    let has_regions = pieces.iter().any(|piece| matches!(piece, Piece::Records(Records::InFile(_))));
    match &shard.splice_sender {
        Some(sender) if has_regions => {
            let outgoing = pieces
                .into_iter()
                .map(|piece| match piece {
                    Piece::Framing(bytes) | Piece::Records(Records::InMemory(bytes)) => Outgoing::Memory(bytes),
                    Piece::Records(Records::InFile(region)) => Outgoing::File(region),
                })
                .collect();
            sender.send(stream, outgoing).await.map_err(|e| e.to_string())
        }
        _ => {
            for piece in pieces {
                match piece {
                    Piece::Framing(bytes) | Piece::Records(Records::InMemory(bytes)) => {
                        stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
                    }
                    Piece::Records(Records::InFile(_)) => unreachable!("file regions are asked for only by shards with a splice sender"),
                }
            }
            Ok(())
        }
    }
}

/// Ok(None) on a clean end of stream between requests.
async fn read_frame(stream: &mut TcpStream, max_request_bytes: usize) -> Result<Option<Bytes>, String> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
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
