//! Kafscale's Kubernetes operator: `KafscaleCluster` and `KafscaleTopic`
//! controllers, their CRDs, and the objects a cluster becomes.

pub mod controller;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod resources;
pub mod users;
