//! The HTTP server: assembles the axum router (the routes, the gate every
//! request passes, the body limit) over a [`Store`] and serves it with a
//! hand-rolled accept loop (instead of `axum::serve`) so that a handler can
//! make the server close a connection without writing any response bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::config::DoubleConfig;
use crate::gate::DropConnection;
use crate::store::Store;

/// The API over `store` (both `/api/v3` and `/v3` prefixes).
pub(crate) fn router(store: Arc<Store>) -> Router {
    crate::validate::warm_up();
    let api = crate::routes::api();
    let max_body = store.config.max_body_bytes;
    Router::new()
        .nest("/api/v3", api.clone())
        .nest("/v3", api)
        .fallback(crate::routes::fallback)
        .layer(axum::middleware::from_fn_with_state(
            store.clone(),
            crate::gate::gate,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(store)
}

/// An accept loop running in a task. Dropping it stops the server and closes
/// every open connection.
pub(crate) struct Serving {
    pub(crate) addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Serving {
    /// Stop accepting, close connections and wait for the server task.
    pub(crate) async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The error a connection's service returns to make hyper hang up.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by openmeter-double fault injection")
    }
}

impl std::error::Error for Dropped {}

async fn serve_connection(stream: TcpStream, router: Router) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            let resp = match router.oneshot(req.map(Body::new)).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            if resp.extensions().get::<DropConnection>().is_some() {
                return Err(Dropped);
            }
            Ok::<_, Dropped>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

async fn accept_loop(listener: TcpListener, router: Router, mut stop: oneshot::Receiver<()>) {
    let mut conns: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(stream, router.clone()));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Dropping the JoinSet aborts the open connections.
}

/// Bind `addr` (port 0 picks a free port) and serve `store` in a tokio task.
pub(crate) async fn spawn(store: Arc<Store>, addr: SocketAddr) -> std::io::Result<Serving> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, router(store), rx));
    Ok(Serving {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Serve a fresh double on `addr` until the process ends (for a `double`
/// CLI subcommand). Returns only if binding fails.
pub async fn serve(addr: SocketAddr, config: DoubleConfig) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let (_keep_open, rx) = oneshot::channel::<()>();
    accept_loop(listener, router(Store::new(config)), rx).await;
    Ok(())
}
