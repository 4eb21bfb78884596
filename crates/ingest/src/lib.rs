//! The outside world's notifications: the EventBridge/CloudTrail event model and parser, the SQS
//! queue operations (receive, batch delete, delayed copy, visibility, dead-letter), DLQ inspection
//! and replay, and the SDK error classification shared by every AWS adapter. The consumer loop
//! that drives the queue is the worker's (`registrar_worker::consumer`).

pub mod dlq;
pub mod event;
pub mod sdk_error;
pub mod sqs;
