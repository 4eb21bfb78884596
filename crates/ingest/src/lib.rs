//! The outside world's notifications: the EventBridge/CloudTrail event model and parser, and
//! the SQS consumer (long poll, batching, visibility heartbeat, ack / wait / retry /
//! dead-letter), and DLQ replay.
//!
//! Empty until the event-driven worker lands (issue "2 of 5"); the crate exists now so that the
//! workspace has the layout `design.md` asks for and its dependency rules can be enforced.
