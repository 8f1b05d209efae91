use std::fmt;
use std::path::PathBuf;

/// Errors the log reports. Each maps to one Kafka error code at the protocol layer.
#[derive(Debug)]
pub enum StorageError {
    /// A batch failed validation (length, magic, CRC, counts): CORRUPT_MESSAGE.
    CorruptBatch(String),
    /// A batch is larger than the topic's `max.message.bytes`: MESSAGE_TOO_LARGE.
    RecordTooLarge { size_bytes: usize, max_bytes: usize },
    /// A read asked for an offset outside [log start, log end]: OFFSET_OUT_OF_RANGE.
    OffsetOutOfRange { offset: i64, log_start_offset: i64, log_end_offset: i64 },
    /// The partition found corruption it cannot repair and serves nothing: KAFKA_STORAGE_ERROR.
    Offline { path: PathBuf, position: u64, reason: String },
    /// Anything the file system said.
    Io { context: String, source: std::io::Error },
}

impl StorageError {
    pub fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> StorageError {
        StorageError::Io { context: context.into(), source: source.into() }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::CorruptBatch(reason) => write!(f, "corrupt record batch: {reason}"),
            StorageError::RecordTooLarge { size_bytes, max_bytes } => {
                write!(f, "record batch of {size_bytes} bytes exceeds max.message.bytes {max_bytes}")
            }
            StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset } => write!(
                f,
                "offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]"
            ),
            StorageError::Offline { path, position, reason } => write!(
                f,
                "partition offline: {} at byte {position}: {reason}",
                path.display()
            ),
            StorageError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for StorageError {}

pub type Result<T> = std::result::Result<T, StorageError>;
