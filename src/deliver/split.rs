//! Split and self-heal: a chunk OpenMeter refused is ensured afresh once,
//! then halved until each refused event stands alone, dead-lettered with
//! OpenMeter's detail; the rest is sent.

use std::collections::HashSet;

use super::hold::Round;
use super::{Chunk, Deliverer};
use crate::dlq::DeadLetterKind;
use crate::domain::CustomerKey;
use crate::openmeter::ApiError;

impl Deliverer {
    /// A chunk OpenMeter refused: ensure its customers afresh once, then
    /// split it until the refused events stand alone, and dead-letter those.
    pub(super) fn rejected(
        &self,
        chunk: Chunk,
        e: &ApiError,
        todo: &mut Vec<Chunk>,
        round: &mut Round,
    ) {
        if !chunk.healed {
            let keys: HashSet<CustomerKey> = chunk
                .events
                .iter()
                .map(|p| p.identity.customer_key())
                .collect();
            for key in &keys {
                self.provisioner.forget(key);
            }
        }
        let mut left = chunk.events;
        match (left.len(), chunk.healed) {
            (1, true) => {
                let reason = format!("OpenMeter rejected the event: {}", e.detail());
                round.dead_letter(left, DeadLetterKind::Rejected, &reason);
            }
            (1, false) => todo.push(Chunk {
                events: left,
                healed: true,
            }),
            _ => {
                let right = left.split_off(left.len() / 2);
                todo.push(Chunk {
                    events: right,
                    healed: true,
                });
                todo.push(Chunk {
                    events: left,
                    healed: true,
                });
            }
        }
    }
}
