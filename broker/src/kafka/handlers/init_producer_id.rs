//! InitProducerId v0–v5 for idempotent (non-transactional) producers.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{allowed, RequestContext};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::Broker;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        // Transactions are a non-goal; this code makes the client fail fast
        // (TransactionalIdAuthorizationException) instead of retrying forever.
        return resp.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    // As Kafka: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic.
    let may = allowed(
        broker,
        ctx,
        Operation::IdempotentWrite,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) || broker.authorizer.allows_any(
        &ctx.principal,
        ctx.host(),
        Operation::Write,
        ResourceType::Topic,
    );
    if !may {
        return resp.with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    // Always a fresh id, as Kafka answers a request without a transactional
    // id, even when it names an id and epoch (KIP-360's bump). Bumping the
    // named id would let any writer take over another producer's id (ids are
    // sequential), after which the victim's retries are answered as
    // duplicates without being stored. A fresh id loses nothing for the
    // honest caller: it resets its sequences, as the Java producer does.
    match broker.producer_ids.next().await {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::warn!(error = %e, "allocating a producer id failed");
            resp.with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}
