//! The provisioning API, bound before it serves so a caller knows its
//! address (port 0 picks a free one) and a bind failure stops start-up.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

use super::config::ApiSettings;
use super::error::AppError;
use crate::api::{self, ApiState, ReadyCheck};
use crate::contract::SubjectRule;
use crate::ensure::Provisioner;

impl ApiSettings {
    /// Off loopback a token is required, so `/ensure` is never open to the
    /// network: checked before anything else starts.
    pub(crate) fn guard(&self) -> Result<(), AppError> {
        if !self.addr.ip().is_loopback() && self.token.is_none() {
            return Err(AppError::UnguardedApi {
                bind: self.addr.ip(),
            });
        }
        Ok(())
    }
}

/// A bound, not yet serving, provisioning API.
pub(crate) struct ProvisioningApi {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
}

impl ProvisioningApi {
    /// Binds `settings.addr`. Off loopback a token is required, so `/ensure`
    /// is never open to the network. `/ensure` reads identities by
    /// `subjects`, the contract's `BILLING_SUBJECT`.
    pub(crate) async fn bind(
        settings: &ApiSettings,
        provisioner: Provisioner,
        subjects: SubjectRule,
        ready: Option<ReadyCheck>,
    ) -> Result<Self, AppError> {
        settings.guard()?;
        let bind_error = |source| AppError::Bind {
            addr: settings.addr,
            source,
        };
        let listener = TcpListener::bind(settings.addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let router = api::router(ApiState {
            provisioner,
            subjects,
            token: settings.token.clone(),
            ready,
        });
        Ok(Self {
            listener,
            addr,
            router,
        })
    }

    /// The address bound (the real port when 0 was asked for).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then finishes the requests under way.
    pub(crate) async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        tracing::info!(addr = %self.addr, "provisioning API listening");
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "provisioning API stopped");
        }
    }
}
