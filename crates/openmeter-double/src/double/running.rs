//! A double bound to a socket.

use std::net::SocketAddr;

use super::Double;
use crate::server::Serving;

/// A double serving on a socket. Dropping it stops the server and closes
/// every open connection.
pub struct RunningDouble {
    pub addr: SocketAddr,
    pub double: Double,
    serving: Serving,
}

impl Double {
    /// Bind `addr` (port 0 picks a free port) and serve in a tokio task until
    /// the returned handle is dropped or shut down.
    pub async fn spawn(&self, addr: SocketAddr) -> std::io::Result<RunningDouble> {
        let serving = crate::server::spawn(self.store.clone(), addr).await?;
        Ok(RunningDouble {
            addr: serving.addr,
            double: self.clone(),
            serving,
        })
    }
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
    pub async fn shutdown(self) {
        self.serving.shutdown().await;
    }
}
