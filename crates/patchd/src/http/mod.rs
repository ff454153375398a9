//! The HTTP endpoint of `patchd run` on `[daemon] listen`: a live status page (`/`), liveness
//! (`/healthz`), readiness (`/readyz`), Prometheus metrics (`/metrics`) and a read-only JSON
//! API (`/v1/...`).
//! docs/operations.md documents every path.
//!
//! One fallback handler dispatches by path, so authentication sits in one place: when a token
//! is configured (`[daemon] api_token_file`, required off loopback) every path but `/healthz`
//! needs `Authorization: Bearer <token>`, compared in constant time.

mod api;
mod auth;
pub(crate) mod metrics;
mod state;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use chrono::Utc;
use tokio::net::TcpListener;

pub(crate) use auth::ApiToken;
pub(crate) use state::heartbeat_recent;
pub(crate) use state::Setup;
use state::{HttpState, Inner};
pub(crate) use tls::Certificate;

/// Binds `addr`; a taken port fails start-up naming the address and the key that set it.
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "the address is already in use (another patchd?)".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        anyhow::anyhow!(
            "cannot listen on {addr} ([daemon] listen): {why}; stop what holds it or set another \
             address in [daemon] listen"
        )
    })
}

/// A running server; [`Server::stop`] ends it.
#[derive(Debug)]
pub(crate) struct Server {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        // Open keep-alive connections end with the server; do not wait on idle clients long.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Serves on `listener` until [`Server::stop`], over TLS when `setup.tls` says so.
pub(crate) fn serve(listener: TcpListener, setup: Setup) -> anyhow::Result<Server> {
    let addr = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let tls = setup.tls.clone();
    let state = HttpState {
        inner: Arc::new(Inner {
            setup,
            listen: addr,
            started: Instant::now(),
            started_at: Utc::now(),
            metrics: Default::default(),
        }),
    };
    let app = Router::new().fallback(handle).with_state(state);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = match &tls {
        None => tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(%error, "the HTTP endpoint stopped with an error");
            }
        }),
        Some(certificate) => {
            let listener = tls::TlsListener::new(listener, certificate).map_err(|e| anyhow::anyhow!(e))?;
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                    tracing::error!(%error, "the HTTP endpoint stopped with an error");
                }
            })
        }
    };
    Ok(Server { addr, stop, task })
}

async fn handle(State(state): State<HttpState>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n")
            .map(|mut r| {
                r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
                r
            })
            .unwrap_or_else(plain_500);
    }
    if path == "/healthz" {
        return text(StatusCode::OK, "ok\n").unwrap_or_else(plain_500);
    }
    if let Some(token) = &state.inner.setup.token {
        let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !token.accepts(presented) {
            return auth::unauthorized();
        }
    }
    let response = match path.as_str() {
        "/" => api::status_page(&state).await,
        "/readyz" => api::readyz(&state).await,
        "/metrics" => metrics::handle(&state).await,
        "/v1/status" => api::status(&state).await,
        "/v1/windows" => api::windows(&state, &query),
        "/v1/runs" => api::runs(&state, &query).await,
        "/v1/findings" => api::findings(&state, &query).await,
        _ => api::error(StatusCode::NOT_FOUND, &format!("no such path: {path}")),
    };
    if request.method() == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    response
}

fn text(status: StatusCode, body: &str) -> Option<Response> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body.to_string()))
        .ok()
}

fn plain_500() -> Response {
    let mut r = Response::new(Body::from("internal error\n"));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}
