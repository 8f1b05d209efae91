//! Helpers shared by the storage tests: a batch builder, a seeded random source, temp dirs.
#![allow(dead_code)]

use std::path::PathBuf;

/// xorshift64*: deterministic, so a failing seed can be replayed.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[allow(unused_imports)] // not every test binary builds plain batches
pub use storage::test_support::build_batch;

/// The batch as the log stores it: base offset rewritten.
pub fn with_base_offset(mut batch: Vec<u8>, base_offset: i64) -> Vec<u8> {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch
}

pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("storage-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    pub fn partition(&self) -> PathBuf {
        self.0.join("topic-0")
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Closes `log` cleanly (or drops it: a crash, as far as its files know) and opens it again.
pub async fn reopen(log: storage::Log, dir: &std::path::Path, config: storage::LogConfig, clean: bool) -> storage::Log {
    if clean {
        log.close().await.unwrap();
    } else {
        drop(log);
    }
    storage::Log::open(dir, config, clean).await.unwrap()
}

/// Runs an async test body on a glommio executor.
pub fn run<F: std::future::Future<Output = ()> + 'static>(body: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { body().await })
        .unwrap()
        .join()
        .unwrap();
}
