//! The one place domain errors become Kafka's error codes.

use kafka_protocol::error::ResponseError as E;

use crate::partitions::log::LogError;
use crate::partitions::producer_state::SequenceError;
use crate::partitions::record_validation::RecordError;
use crate::partitions::service::PartitionError;

/// A Kafka error code and the message that says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaError {
    pub error: E,
    pub message: String,
}

impl KafkaError {
    pub fn new(error: E, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
        }
    }

    pub fn code(&self) -> i16 {
        self.error.code()
    }
}

impl From<&LogError> for KafkaError {
    fn from(e: &LogError) -> Self {
        let error = match e {
            LogError::StorageUnavailable(_) => E::KafkaStorageError,
            LogError::Fenced(_) | LogError::NotLeader(_) => E::NotLeaderOrFollower,
            LogError::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
            LogError::Deleted => E::UnknownTopicOrPartition,
            LogError::Sequence(SequenceError::OutOfOrder { .. }) => E::OutOfOrderSequenceNumber,
            LogError::Sequence(SequenceError::StaleEpoch { .. }) => E::InvalidProducerEpoch,
        };
        Self {
            error,
            message: e.to_string(),
        }
    }
}

impl From<&PartitionError> for KafkaError {
    fn from(e: &PartitionError) -> Self {
        use PartitionError as P;
        let error = match e {
            P::Log(log) => return log.into(),
            P::TopicAuthorization { .. } => E::TopicAuthorizationFailed,
            P::UnknownTopic(_) | P::UnknownPartition { .. } => E::UnknownTopicOrPartition,
            P::UnknownTopicId(_) => E::UnknownTopicId,
            P::NotLeader(_) | P::Draining(_) => E::NotLeaderOrFollower,
            P::FencedLeaderEpoch { .. } => E::FencedLeaderEpoch,
            P::UnknownLeaderEpoch { .. } => E::UnknownLeaderEpoch,
            P::StorageRefusing { .. } => E::KafkaStorageError,
            P::InvalidAcks(_) => E::InvalidRequiredAcks,
            P::DeletePolicy { .. } => E::PolicyViolation,
            // Non-retriable, so the producer fails fast instead of resending
            // the same bytes.
            P::TransactionsUnsupported => E::InvalidRecord,
            P::NoBatch | P::CorruptBatch(_) => E::CorruptMessage,
            // Java producers split the batch and retry.
            P::BatchTooLarge { .. } | P::Record(RecordError::TooLarge { .. }) => E::MessageTooLarge,
            P::Record(_) | P::KeylessRecord { .. } => E::InvalidRecord,
            P::AdmissionTimeout(_) | P::NotDurableInTime(_) | P::LogStartNotStored(_) => {
                E::RequestTimedOut
            }
        };
        Self {
            error,
            message: e.to_string(),
        }
    }
}

impl From<PartitionError> for KafkaError {
    fn from(e: PartitionError) -> Self {
        (&e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_errors_get_kafkas_codes_and_keep_their_advice() {
        let denied = KafkaError::from(PartitionError::TopicAuthorization {
            principal: "User:bob".into(),
            operation: crate::security::acl::Operation::Write,
            topic: "orders".into(),
        });
        assert_eq!(denied.error, E::TopicAuthorizationFailed);
        assert!(
            denied.message.contains("kafka-acls --add"),
            "{}",
            denied.message
        );
        let fenced = KafkaError::from(PartitionError::FencedLeaderEpoch {
            client: 1,
            leader: 2,
        });
        assert_eq!(fenced.error, E::FencedLeaderEpoch);
        let stored = KafkaError::from(PartitionError::Log(LogError::StorageUnavailable(
            "timeout".into(),
        )));
        assert_eq!(stored.error, E::KafkaStorageError);
    }
}
