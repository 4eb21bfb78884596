//! The outside world's notifications: the EventBridge/CloudTrail event model and parser, the SQS
//! queue operations (receive, batch delete, delayed copy, visibility, dead-letter), and the SDK
//! error classification shared by every AWS adapter. The consumer loop and DLQ replay arrive with
//! the rest of issue "2 of 5".

pub mod dlq;
pub mod event;
pub mod sdk_error;
pub mod sqs;
