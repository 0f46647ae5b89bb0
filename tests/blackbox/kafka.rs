//! The collector over a real Kafka-protocol broker (tansu) on loopback:
//! `e2e` the paths every event takes, `faults` what once stopped billing in
//! silence.

mod e2e;
mod faults;
