//! What every request shares: the data, the counters, the pending faults and
//! the configuration. Handlers and the gate take this, never the test-facing
//! [`crate::Double`], so the HTTP layer does not depend on the façade above it.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::DoubleConfig;
use crate::faults::{Counters, Faults};
use crate::network::Conditions;
use crate::state::State;

/// The shared state of one double; handed to axum as `Arc<Store>`.
pub(crate) struct Store {
    pub(crate) config: DoubleConfig,
    state: Mutex<State>,
    pub(crate) counters: Counters,
    pub(crate) faults: Faults,
    pub(crate) network: Conditions,
}

impl Store {
    pub(crate) fn new(config: DoubleConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            faults: Faults::default(),
            network: Conditions::default(),
        })
    }

    /// The state lock. Poisoning is ignored: a panicking test thread must not
    /// turn every later request into a 500. Never held across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
