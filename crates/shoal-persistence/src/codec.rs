//! Event and snapshot serialization: JSON via serde, a manifest naming the type, a schema
//! version, and upcasters that turn old versions into the current one.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{EventRecord, SnapshotRecord};

/// An event type of an event-sourced entity, stored as JSON.
///
/// The manifest names the type in storage and must never change once events are stored. Bump
/// [`VERSION`](Event::VERSION) when the JSON shape changes incompatibly, and register an
/// upcaster from the old version (see [`Upcasters`]).
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Names the type in storage.
    const MANIFEST: &'static str;
    /// The schema version written with new events.
    const VERSION: u32 = 1;
}

/// Converts one schema version of a payload into the next.
pub type Upcaster =
    Arc<dyn Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync>;

/// Upcasters by `(manifest, from_version)`. Reading a record of version `v < current` applies
/// the upcasters for `v`, `v + 1`, … until the current version; a missing step is an error.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Upcaster>,
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step that turns version `from_version` of `manifest` into
    /// `from_version + 1`.
    pub fn add(
        mut self,
        manifest: &str,
        from_version: u32,
        step: impl Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.steps
            .insert((manifest.to_owned(), from_version), Arc::new(step));
        self
    }

    /// Decodes a payload of `manifest` at `version` into `T` at `current` version.
    pub fn decode<T: DeserializeOwned>(
        &self,
        manifest: &str,
        version: u32,
        current: u32,
        payload: &[u8],
    ) -> Result<T, CodecError> {
        if version == current {
            return serde_json::from_slice(payload).map_err(|e| CodecError::Payload {
                manifest: manifest.to_owned(),
                version,
                reason: e.to_string(),
            });
        }
        if version > current {
            return Err(CodecError::NewerVersion {
                manifest: manifest.to_owned(),
                version,
                current,
            });
        }
        let mut value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| CodecError::Payload {
                manifest: manifest.to_owned(),
                version,
                reason: e.to_string(),
            })?;
        for v in version..current {
            let step = self.steps.get(&(manifest.to_owned(), v)).ok_or_else(|| {
                CodecError::MissingUpcaster {
                    manifest: manifest.to_owned(),
                    from_version: v,
                }
            })?;
            value = step(value).map_err(|reason| CodecError::Payload {
                manifest: manifest.to_owned(),
                version: v,
                reason,
            })?;
        }
        serde_json::from_value(value).map_err(|e| CodecError::Payload {
            manifest: manifest.to_owned(),
            version: current,
            reason: e.to_string(),
        })
    }

    /// Decodes a stored event of type `E`.
    pub fn decode_event<E: Event>(&self, record: &EventRecord) -> Result<E, CodecError> {
        if record.manifest != E::MANIFEST {
            return Err(CodecError::UnknownManifest {
                found: record.manifest.clone(),
                expected: E::MANIFEST,
            });
        }
        self.decode(
            &record.manifest,
            record.schema_version,
            E::VERSION,
            &record.payload,
        )
    }
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<_> = self.steps.keys().collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

/// Encodes a value as a JSON payload.
pub fn encode_json<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a snapshot payload; the snapshot's manifest must be `manifest`. Snapshots are not
/// upcast: a snapshot of another version is skipped by recovery, which then replays events.
pub fn decode_snapshot<T: DeserializeOwned>(
    record: &SnapshotRecord,
    manifest: &'static str,
    version: u32,
) -> Result<T, CodecError> {
    if record.manifest != manifest {
        return Err(CodecError::UnknownManifest {
            found: record.manifest.clone(),
            expected: manifest,
        });
    }
    if record.schema_version != version {
        return Err(CodecError::NewerVersion {
            manifest: record.manifest.clone(),
            version: record.schema_version,
            current: version,
        });
    }
    serde_json::from_slice(&record.payload).map_err(|e| CodecError::Payload {
        manifest: record.manifest.clone(),
        version,
        reason: e.to_string(),
    })
}

/// A payload could not be encoded or decoded. Nothing stored is changed by a codec error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialized.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The payload is not valid for its manifest and version.
    #[error("cannot decode {manifest} v{version}: {reason}")]
    Payload {
        /// The record's manifest.
        manifest: String,
        /// The version that failed.
        version: u32,
        /// The serde (or upcaster) message.
        reason: String,
    },
    /// The record was written by a newer schema than this code knows.
    #[error("{manifest} v{version} is newer than this code's v{current}")]
    NewerVersion {
        /// The record's manifest.
        manifest: String,
        /// The record's version.
        version: u32,
        /// The version this code writes.
        current: u32,
    },
    /// No upcaster from this version.
    #[error("no upcaster for {manifest} from v{from_version}")]
    MissingUpcaster {
        /// The record's manifest.
        manifest: String,
        /// The version with no step.
        from_version: u32,
    },
    /// The record's manifest is not the entity's event type.
    #[error("unknown manifest {found:?}; expected {expected:?}")]
    UnknownManifest {
        /// What the record says.
        found: String,
        /// What the entity reads.
        expected: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ItemAdded {
        item_id: String,
        quantity: u32,
    }

    impl Event for ItemAdded {
        const MANIFEST: &'static str = "ItemAdded";
        const VERSION: u32 = 3;
    }

    fn upcasters() -> Upcasters {
        Upcasters::new()
            // v1 -> v2: field `id` renamed to `item_id`.
            .add("ItemAdded", 1, |mut v| {
                let id = v.get("id").cloned().ok_or("v1 event without id")?;
                let obj = v.as_object_mut().ok_or("not an object")?;
                obj.remove("id");
                obj.insert("item_id".into(), id);
                Ok(v)
            })
            // v2 -> v3: `quantity` added, defaulting to 1.
            .add("ItemAdded", 2, |mut v| {
                v.as_object_mut()
                    .ok_or("not an object")?
                    .insert("quantity".into(), 1.into());
                Ok(v)
            })
    }

    fn record(version: u32, payload: &str) -> EventRecord {
        EventRecord {
            seq_nr: 1,
            manifest: "ItemAdded".into(),
            schema_version: version,
            payload: payload.as_bytes().to_vec(),
            tags: vec![],
            writer_id: "w".into(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn upcasts_through_every_version() {
        let got: ItemAdded = upcasters()
            .decode_event(&record(1, r#"{"id":"sku"}"#))
            .unwrap();
        assert_eq!(
            got,
            ItemAdded {
                item_id: "sku".into(),
                quantity: 1
            }
        );
        let got: ItemAdded = upcasters()
            .decode_event(&record(2, r#"{"item_id":"sku"}"#))
            .unwrap();
        assert_eq!(
            got,
            ItemAdded {
                item_id: "sku".into(),
                quantity: 1
            }
        );
        let got: ItemAdded = upcasters()
            .decode_event(&record(3, r#"{"item_id":"a","quantity":5}"#))
            .unwrap();
        assert_eq!(
            got,
            ItemAdded {
                item_id: "a".into(),
                quantity: 5
            }
        );
    }

    #[test]
    fn refuses_newer_missing_and_foreign_records() {
        let err = upcasters()
            .decode_event::<ItemAdded>(&record(4, "{}"))
            .unwrap_err();
        assert!(matches!(
            err,
            CodecError::NewerVersion {
                version: 4,
                current: 3,
                ..
            }
        ));
        let err = Upcasters::new()
            .decode_event::<ItemAdded>(&record(2, "{}"))
            .unwrap_err();
        assert!(matches!(
            err,
            CodecError::MissingUpcaster {
                from_version: 2,
                ..
            }
        ));
        let mut foreign = record(3, "{}");
        foreign.manifest = "Other".into();
        let err = upcasters().decode_event::<ItemAdded>(&foreign).unwrap_err();
        assert!(matches!(err, CodecError::UnknownManifest { .. }));
        let err = upcasters()
            .decode_event::<ItemAdded>(&record(3, "not json"))
            .unwrap_err();
        assert!(matches!(err, CodecError::Payload { .. }));
    }
}
