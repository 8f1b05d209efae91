//! The fetcher's side of a session (Kafka's `FetchSessionHandler`), for the replica fetcher:
//! a full fetch first; once the leader answers with a session id, incremental fetches that carry
//! only the partitions whose fetch parameters changed and the partitions to forget. Any session
//! error, or a lost connection, starts over with a full fetch that closes the old session.
//! The replica fetcher fetches by topic name (Fetch v11), so its partitions are keyed by name.

use std::collections::HashMap;

use super::{next_epoch, FetchParams, PartitionKey, INITIAL_EPOCH, INVALID_SESSION_ID};

/// What one fetch carries.
pub struct NextFetch {
    pub session_id: i32,
    pub epoch: i32,
    /// Partitions to send (all of them in a full fetch), in the order given to `build`.
    pub send: Vec<(PartitionKey, FetchParams)>,
    pub forgotten: Vec<PartitionKey>,
}

impl NextFetch {
    pub fn is_full(&self) -> bool {
        self.epoch == INITIAL_EPOCH
    }
}

#[derive(Default)]
pub struct SessionHandler {
    session_id: i32,
    /// 0 (INITIAL_EPOCH) when the next fetch is a full one.
    epoch: i32,
    /// What the leader's session holds for each partition, as of the last fetch sent.
    sent: HashMap<PartitionKey, FetchParams>,
}

impl SessionHandler {
    /// The next fetch for `wanted`. The session then holds exactly `wanted`.
    pub fn build(&mut self, wanted: &[(PartitionKey, FetchParams)]) -> NextFetch {
        let (send, forgotten) = if self.epoch == INITIAL_EPOCH {
            (wanted.to_vec(), Vec::new())
        } else {
            let send = wanted.iter().filter(|(key, params)| self.sent.get(key) != Some(params)).cloned().collect();
            let still: std::collections::HashSet<&PartitionKey> = wanted.iter().map(|(key, _)| key).collect();
            let forgotten = self.sent.keys().filter(|key| !still.contains(key)).cloned().collect();
            (send, forgotten)
        };
        self.sent = wanted.iter().cloned().collect();
        NextFetch { session_id: self.session_id, epoch: self.epoch, send, forgotten }
    }

    /// The response's top-level error code and session id. Returns false when the response
    /// is a session error (its partitions, none, must not be read as "nothing changed").
    pub fn on_response(&mut self, sent: &NextFetch, error_code: i16, session_id: i32) -> bool {
        if error_code != 0 {
            // Kafka: FETCH_SESSION_ID_NOT_FOUND starts afresh; other errors close the session.
            if error_code == 70 {
                self.session_id = INVALID_SESSION_ID;
            }
            self.epoch = INITIAL_EPOCH;
            return false;
        }
        if sent.is_full() {
            // Id 0: the leader keeps no session (disabled or full): full fetches go on.
            self.session_id = session_id;
            self.epoch = if session_id == INVALID_SESSION_ID { INITIAL_EPOCH } else { next_epoch(INITIAL_EPOCH) };
        } else {
            self.epoch = next_epoch(self.epoch);
        }
        true
    }

    /// The connection failed: the next fetch is full and closes the session (Kafka's
    /// `handleError`, `nextCloseExisting`).
    pub fn reset(&mut self) {
        self.epoch = INITIAL_EPOCH;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(offsets: &[(i32, i64)]) -> Vec<(PartitionKey, FetchParams)> {
        offsets.iter().map(|&(p, o)| (("t".to_string(), p), FetchParams { fetch_offset: o, max_bytes: 1, log_start_offset: 0 })).collect()
    }

    #[test]
    fn full_then_incremental_then_reset() {
        let mut handler = SessionHandler::default();
        let first = handler.build(&wanted(&[(0, 0), (1, 0)]));
        assert!(first.is_full() && first.send.len() == 2 && first.session_id == 0);
        assert!(handler.on_response(&first, 0, 42));
        let second = handler.build(&wanted(&[(0, 5), (1, 0)]));
        assert_eq!((second.session_id, second.epoch, second.send.len()), (42, 1, 1));
        assert!(handler.on_response(&second, 0, 42));
        let third = handler.build(&wanted(&[(0, 5)]));
        assert_eq!((third.epoch, third.send.len(), third.forgotten.len()), (2, 0, 1));
        assert!(!handler.on_response(&third, 71, 0));
        let fourth = handler.build(&wanted(&[(0, 5)]));
        assert!(fourth.is_full() && fourth.session_id == 42, "closes the old session");
    }
}
