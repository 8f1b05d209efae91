//! The `/metrics` endpoint (issue 21): scrapes every shard's counters (`crate::metrics`, the
//! bottom layer the hooks write to) over the shard router, renders Prometheus text, serves it
//! over HTTP on shard 0. A layer above `metrics`: this module may import `shard_context` and
//! `groups`; `metrics` must not (partitions call into it).

mod exposition;
pub mod gather;
pub mod http;
