//! The outside world's notifications: the EventBridge/CloudTrail event model and parser (here
//! now), and the SQS consumer and DLQ replay (issue "2 of 5").

pub mod event;
