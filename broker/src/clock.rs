//! Wall-clock milliseconds, as Kafka stamps records, commits and sessions.

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
