//! Entity ids, shard ids and the extractor that maps one to the other.
//!
//! Every entity lives in exactly one shard; a shard is the unit that the coordinator places on
//! a region and moves during rebalance. The mapping must be the same on every node and in
//! every release of the service, or two nodes would route the same entity to different shards
//! (and so, possibly, to two live copies). The default [`HashShardExtractor`] therefore uses a
//! documented hash — 64-bit FNV-1a over the UTF-8 bytes of the entity id — and never
//! `std`'s `DefaultHasher`, whose algorithm is unspecified and may change between Rust
//! releases. Golden-value tests pin the mapping.
//!
//! Changing `number_of_shards` of a running system moves almost every entity to another
//! shard: like Akka's `number-of-shards`, it must be the same on all nodes and changed only
//! with a full cluster restart.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The number of shards when none is configured (Akka's default `number-of-shards`).
///
/// A rule of thumb (as in Akka): about ten times the largest planned number of nodes.
pub const DEFAULT_NUMBER_OF_SHARDS: u32 = 1000;

/// A malformed id was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    /// The id was the empty string.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of id (`"entity id"` or `"shard id"`).
        kind: &'static str,
    },
}

/// The configured number of shards was 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("number_of_shards must be greater than 0")]
pub struct InvalidNumberOfShards;

/// The id of one entity within its entity type (for example a cart id), never empty.
///
/// Serialized as a plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntityId(String);

impl EntityId {
    /// Checks and wraps an entity id: refuses the empty string.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(IdError::Empty { kind: "entity id" });
        }
        Ok(Self(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EntityId {
    type Error = IdError;
    fn try_from(id: String) -> Result<Self, IdError> {
        Self::new(id)
    }
}

impl TryFrom<&str> for EntityId {
    type Error = IdError;
    fn try_from(id: &str) -> Result<Self, IdError> {
        Self::new(id)
    }
}

impl From<EntityId> for String {
    fn from(id: EntityId) -> String {
        id.0
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of one shard, never empty. The default extractor produces decimal numbers
/// (`"0"` … `"999"`); custom extractors may use any non-empty string.
///
/// Serialized as a plain string. Ordered as strings (so `"10" < "9"`): the order only has to be
/// deterministic, not numeric.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShardId(String);

impl ShardId {
    /// Checks and wraps a shard id: refuses the empty string.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(IdError::Empty { kind: "shard id" });
        }
        Ok(Self(id))
    }

    /// The shard id of shard number `n` (its decimal form), as the default extractor names it.
    pub fn from_number(n: u32) -> Self {
        Self(n.to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ShardId {
    type Error = IdError;
    fn try_from(id: String) -> Result<Self, IdError> {
        Self::new(id)
    }
}

impl TryFrom<&str> for ShardId {
    type Error = IdError;
    fn try_from(id: &str) -> Result<Self, IdError> {
        Self::new(id)
    }
}

impl From<ShardId> for String {
    fn from(id: ShardId) -> String {
        id.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Maps an entity id to the shard that holds it.
///
/// Rules for implementations:
/// * **Deterministic and stable**: the same entity id gives the same shard id on every node,
///   on every platform, in every process and in every release that shares a journal. Do not
///   use `std::collections::hash_map::DefaultHasher` or `RandomState`.
/// * **Bounded**: return a bounded set of shard ids (the coordinator keeps one entry per
///   allocated shard); a few hundred to a few thousand is typical.
pub trait ShardExtractor: Send + Sync {
    /// The shard of `entity_id`.
    fn shard_id(&self, entity_id: &EntityId) -> ShardId;
}

/// The default extractor: shard number = FNV-1a-64(entity id as UTF-8 bytes) mod
/// `number_of_shards`, as a decimal [`ShardId`].
///
/// The hash is the standard 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`) over the bytes one at a time, so the result does not depend on
/// endianness or pointer width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashShardExtractor {
    number_of_shards: u32,
}

impl HashShardExtractor {
    /// An extractor over `number_of_shards` shards (`"0"` to `number_of_shards - 1`).
    pub fn new(number_of_shards: u32) -> Result<Self, InvalidNumberOfShards> {
        if number_of_shards == 0 {
            return Err(InvalidNumberOfShards);
        }
        Ok(Self { number_of_shards })
    }

    /// The configured number of shards (never 0).
    pub fn number_of_shards(&self) -> u32 {
        self.number_of_shards
    }

    /// The shard number of an entity id given as bytes: `fnv1a_64(bytes) % number_of_shards`.
    pub fn shard_number(&self, entity_id: &[u8]) -> u32 {
        // The remainder is below `number_of_shards`, which is a u32.
        (fnv1a_64(entity_id) % u64::from(self.number_of_shards)) as u32
    }
}

impl Default for HashShardExtractor {
    /// [`DEFAULT_NUMBER_OF_SHARDS`] shards.
    fn default() -> Self {
        Self {
            number_of_shards: DEFAULT_NUMBER_OF_SHARDS,
        }
    }
}

impl ShardExtractor for HashShardExtractor {
    fn shard_id(&self, entity_id: &EntityId) -> ShardId {
        ShardId::from_number(self.shard_number(entity_id.as_str().as_bytes()))
    }
}

/// 64-bit FNV-1a of `bytes` (<http://www.isthe.com/chongo/tech/comp/fnv/>).
///
/// Part of the stable shard mapping: never change it.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entity(id: &str) -> EntityId {
        EntityId::new(id).unwrap()
    }

    #[test]
    fn fnv1a_64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// Golden values: if one of these changes, entities of existing deployments would move to
    /// other shards. Computed independently of this code (a Python FNV-1a).
    #[test]
    fn default_extractor_golden_values() {
        let ex = HashShardExtractor::default();
        assert_eq!(ex.number_of_shards(), 1000);
        let golden = [
            ("cart-42", "468"),
            ("c1", "857"),
            ("default", "782"),
            ("user-1", "708"),
            ("0", "79"),
            ("entity", "34"),
            ("é", "617"),
            ("ShoppingCart|c1", "765"),
        ];
        for (id, shard) in golden {
            assert_eq!(ex.shard_id(&entity(id)).as_str(), shard, "entity id {id:?}");
        }
    }

    #[test]
    fn golden_values_with_other_shard_counts() {
        let thirty = HashShardExtractor::new(30).unwrap();
        assert_eq!(thirty.shard_id(&entity("cart-42")).as_str(), "28");
        assert_eq!(thirty.shard_id(&entity("c1")).as_str(), "17");
        assert_eq!(thirty.shard_id(&entity("0")).as_str(), "29");
        let seven = HashShardExtractor::new(7).unwrap();
        assert_eq!(seven.shard_id(&entity("default")).as_str(), "6");
        assert_eq!(seven.shard_id(&entity("entity")).as_str(), "2");
        let one = HashShardExtractor::new(1).unwrap();
        assert_eq!(one.shard_id(&entity("anything")).as_str(), "0");
    }

    #[test]
    fn zero_shards_is_refused() {
        assert_eq!(HashShardExtractor::new(0), Err(InvalidNumberOfShards));
        assert_eq!(
            InvalidNumberOfShards.to_string(),
            "number_of_shards must be greater than 0"
        );
    }

    #[test]
    fn empty_ids_are_refused() {
        assert_eq!(EntityId::new(""), Err(IdError::Empty { kind: "entity id" }));
        assert_eq!(ShardId::new(""), Err(IdError::Empty { kind: "shard id" }));
        assert!(serde_json::from_str::<EntityId>("\"\"").is_err());
        assert!(serde_json::from_str::<ShardId>("\"\"").is_err());
    }

    #[test]
    fn ids_serialize_as_plain_strings() {
        let shard = ShardId::new("17").unwrap();
        assert_eq!(serde_json::to_string(&shard).unwrap(), "\"17\"");
        assert_eq!(serde_json::from_str::<ShardId>("\"17\"").unwrap(), shard);
        let id = entity("cart-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"cart-1\"");
        assert_eq!(serde_json::from_str::<EntityId>("\"cart-1\"").unwrap(), id);
        assert_eq!(id.to_string(), "cart-1");
        assert_eq!(ShardId::from_number(7).to_string(), "7");
    }

    proptest! {
        #[test]
        fn shard_is_in_range_and_deterministic(id in "\\PC{1,40}", n in 1u32..5000) {
            let ex = HashShardExtractor::new(n).unwrap();
            let number = ex.shard_number(id.as_bytes());
            prop_assert!(number < n);
            let shard = ex.shard_id(&EntityId::new(id.clone()).unwrap());
            prop_assert_eq!(shard.as_str(), number.to_string());
            prop_assert_eq!(ex.shard_id(&EntityId::new(id).unwrap()), shard);
        }
    }

    #[test]
    fn default_extractor_spreads_entities() {
        // 10 000 sequential ids over 1000 shards: every shard within a loose band around 10.
        let ex = HashShardExtractor::default();
        let mut counts = vec![0u32; 1000];
        for i in 0..10_000 {
            counts[ex.shard_number(format!("entity-{i}").as_bytes()) as usize] += 1;
        }
        let used = counts.iter().filter(|&&c| c > 0).count();
        assert!(used > 990, "only {used} shards used");
        assert!(
            counts.iter().all(|&c| c < 40),
            "max {:?}",
            counts.iter().max()
        );
    }
}
