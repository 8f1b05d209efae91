//! A connection's byte stream: the socket itself, or TLS over it (rustls through futures-rustls,
//! over glommio's TcpStream, which implements futures' AsyncRead/AsyncWrite). Both ends use it:
//! the listeners' connections (server side) and this broker's to other brokers (`client.rs`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::{TlsAcceptor, TlsStream};
use glommio::net::TcpStream;

use super::principal;
use super::session::Session;
use super::tls::TlsSettings;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// The TLS handshake; a client certificate (verified against the trust store) names the
    /// session's principal.
    pub async fn accept_tls(settings: &TlsSettings, stream: TcpStream, session: &mut Session) -> Result<Transport, String> {
        let stream = TlsAcceptor::from(settings.config.clone()).accept(stream).await.map_err(|e| e.to_string())?;
        if let Some(certificate) = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()) {
            session.principal = principal::from_certificate(certificate, &settings.principal_rules)?;
            tracing::info!(principal = session.principal, client = session.client_host, "TLS client certificate accepted");
        }
        Ok(Transport::Tls(Box::new(TlsStream::Server(stream))))
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_close(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_close(cx),
        }
    }
}
