//! The operator's metrics (`kafscale_operator_…`).

use std::sync::Arc;

use kafscale_telemetry::prometheus_client::encoding::EncodeLabelSet;
use kafscale_telemetry::prometheus_client::metrics::counter::Counter;
use kafscale_telemetry::prometheus_client::metrics::family::Family;
use kafscale_telemetry::prometheus_client::metrics::gauge::Gauge;
use kafscale_telemetry::prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

pub struct OperatorMetrics {
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Counter,
    pub leader: Gauge,
}

impl OperatorMetrics {
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self {
            reconciles: Family::default(),
            reconcile_errors: Counter::default(),
            leader: Gauge::default(),
        });
        let r = registry.sub_registry_with_prefix("kafscale_operator");
        r.register(
            "reconciles",
            "Reconciles started, by resource kind",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconciles that failed and were retried",
            m.reconcile_errors.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader lease",
            m.leader.clone(),
        );
        m
    }
}
