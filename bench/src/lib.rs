//! Load generator that measures any Kafka-API broker side by side. Arrives with the bench issue;
//! the storage append benchmark lives in `storage/benches/append.rs`.
