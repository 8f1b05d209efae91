//! End-to-end tests that start the real broker binary and drive it with third-party Kafka
//! clients. Arrive with the standalone broker issue.
