//! TLS for the HTTP endpoint (`[daemon] tls_cert_file`, `tls_key_file`), with rustls and the
//! AWS-LC provider the AWS SDK already links.
//!
//! The certificate is read at start-up and again at each reload (SIGHUP), so a rotated
//! certificate (cert-manager, certbot, a secret update) is presented from the next connection
//! without a restart; a reload that cannot read the new files keeps the certificate in use.
//! Handshakes run in their own tasks, so one slow or silent client cannot hold up the others,
//! the kubelet's liveness probe included.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use patchd_config::TlsFiles;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate the endpoint presents.
#[derive(Debug)]
pub(crate) struct Certificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Reads the certificate chain and key; the error names the file and the key that set it.
    pub(crate) fn load(files: &TlsFiles) -> Result<Arc<Certificate>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = RwLock::new(certified_key(files, &provider)?);
        Ok(Arc::new(Certificate { files: files.clone(), provider, current }))
    }

    /// Reads the files again; new connections get the new certificate. On error the current
    /// certificate stays.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let fresh = certified_key(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        Ok(())
    }

    pub(crate) fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn server_config(self: &Arc<Self>) -> Result<ServerConfig, String> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        // The endpoint speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
    }
}

fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let cert_path = files.cert_file.display();
    let key_path = files.key_file.display();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&files.cert_file).and_then(|certs| certs.collect()).map_err(|e| {
            format!("cannot read the certificate chain {cert_path} ([daemon] tls_cert_file): {e}")
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{cert_path} ([daemon] tls_cert_file) holds no certificate: expected PEM blocks \
             `-----BEGIN CERTIFICATE-----`, the server's certificate first"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| format!("cannot read the private key {key_path} ([daemon] tls_key_file): {e}"))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        format!("{cert_path} and {key_path} ([daemon] tls_cert_file, tls_key_file) do not make a usable pair: {e}")
    })?;
    Ok(Arc::new(certified))
}

/// Accepts TCP connections and hands over those whose TLS handshake completed.
#[derive(Debug)]
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, certificate: &Arc<Certificate>) -> Result<TlsListener, String> {
        let local = listener.local_addr().map_err(|e| format!("the HTTP endpoint's address: {e}"))?;
        let acceptor = TlsAcceptor::from(Arc::new(certificate.server_config()?));
        let (handed, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(%error, "the HTTP endpoint cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, handed) = (acceptor.clone(), handed.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = handed.send((stream, peer)).await;
                        }
                        // Plain HTTP sent to the TLS port, an untrusting client, a scanner.
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (aborted at shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
