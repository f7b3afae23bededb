//! The Kafka edge: listeners in Kafka's syntax and their limits, the accept
//! loops, each connection's framing and SASL gate, and one handler per API.

pub mod connection;
pub mod handlers;
pub mod listener_limits;
pub mod listeners;
pub mod server;
