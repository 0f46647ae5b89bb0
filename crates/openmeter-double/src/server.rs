//! A hand-rolled accept loop (instead of `axum::serve`) so that a handler can
//! make the server close a connection without writing any response bytes.

use std::net::SocketAddr;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::double::{Double, DoubleConfig};
use crate::gate::DropConnection;

/// A double serving on a socket. Dropping it stops the server and closes
/// every open connection.
pub struct RunningDouble {
    pub addr: SocketAddr,
    pub double: Double,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningDouble {
    /// `http://127.0.0.1:PORT/api/v3` (the self-hosted OpenMeter base).
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v3", self.addr)
    }

    /// `http://127.0.0.1:PORT/v3` (the Konnect-style base).
    pub fn konnect_base_url(&self) -> String {
        format!("http://{}/v3", self.addr)
    }

    /// `base_url()` + `path` (e.g. `"/openmeter/customers"`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// Stop accepting, close connections and wait for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningDouble {
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

pub(crate) async fn spawn(double: Double, addr: SocketAddr) -> std::io::Result<RunningDouble> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, double.router(), rx));
    Ok(RunningDouble {
        addr,
        double,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Serve a fresh double on `addr` until the process ends (for a `double`
/// CLI subcommand). Returns only if binding fails.
pub async fn serve(addr: SocketAddr, config: DoubleConfig) -> std::io::Result<()> {
    let double = Double::new(config);
    let listener = TcpListener::bind(addr).await?;
    let (_keep_open, rx) = oneshot::channel::<()>();
    accept_loop(listener, double.router(), rx).await;
    Ok(())
}
