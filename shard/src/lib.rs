//! Thread-per-core runtime: one glommio executor per chosen core, each owning a set of partitions,
//! and the channels that carry requests between them. Arrives with the standalone broker issue.
