//! Payload codecs: how a message becomes bytes and back.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A codec could not encode or decode a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Turns values of `T` into bytes and back. Object-safe per `T` (`Arc<dyn Codec<T>>`), so a
/// binary codec can replace [`Json`] type by type (see
/// [`Remote::set_codec`](crate::Remote::set_codec)).
///
/// `encode` appends to `out` (the endpoint's outbound buffer: no intermediate allocation);
/// it must append nothing else on error (the endpoint truncates anyway).
pub trait Codec<T>: Send + Sync + 'static {
    /// Appends the encoding of `value` to `out`.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;
    /// Decodes a value from exactly `bytes`.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// The default codec: JSON via serde.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T: Serialize + DeserializeOwned> Codec<T> for Json {
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(|e| CodecError(e.to_string()))
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
    }
}
