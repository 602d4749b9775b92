//! The artifact-state entity: seed 001's `ArtifactStateEntityActor`, as a sharded Shoal
//! [`EventSourced`] entity.
//!
//! One entity per user × artifact. Its entity id is [`entity_id`]`(artifactId, userId)` =
//! `{artifactId}:{userId}`: the artifact id is a decimal number (no `:`), so the first `:`
//! always separates the two and any user id is allowed after it. Its persistence id is
//! `ArtifactState|{artifactId}:{userId}`.
//!
//! Commands come over the network (an endpoint node asks an entity on another node), so
//! they are serializable and answer through [`RemoteReplyTo`]. A command that would not change
//! the state (marking a read artifact read again) writes nothing and answers at once.

use serde::{Deserialize, Serialize};
use shoal::prelude::*;
use shoal::remote::RemoteReplyTo;

/// The entity type name: the sharded type and the first part of every persistence id.
pub const ENTITY_TYPE: &str = "ArtifactState";

/// The tag on every event, for projections over all states (`events_by_tag`).
pub const EVENT_TAG: &str = "artifact-state";

/// The entity id of `user_id`'s state of artifact `artifact_id`: `{artifactId}:{userId}`.
pub fn entity_id(artifact_id: u64, user_id: &str) -> String {
    format!("{artifact_id}:{user_id}")
}

/// Splits an entity id made by [`entity_id`] back into the artifact id and the user id.
pub fn parse_entity_id(entity_id: &str) -> Option<(u64, &str)> {
    let (artifact, user) = entity_id.split_once(':')?;
    if artifact.is_empty() || !artifact.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((artifact.parse().ok()?, user))
}

/// The state of one artifact for one user (the seed's `CurrState`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactState {
    /// Whether the user has read the artifact.
    pub artifact_read: bool,
    /// Whether the artifact is in the user's feed.
    pub artifact_in_user_feed: bool,
}

/// What an entity is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub enum ArtifactCommand {
    /// Mark the artifact read; answers `true` once stored.
    SetArtifactRead {
        /// Where the acknowledgement goes.
        reply: RemoteReplyTo<bool>,
    },
    /// Put the artifact in the user's feed; answers `true` once stored.
    SetArtifactAddedToUserFeed {
        /// Where the acknowledgement goes.
        reply: RemoteReplyTo<bool>,
    },
    /// Take the artifact out of the user's feed; answers `true` once stored.
    SetArtifactRemovedFromUserFeed {
        /// Where the acknowledgement goes.
        reply: RemoteReplyTo<bool>,
    },
    /// Answer the whole state.
    GetState {
        /// Where the state goes.
        reply: RemoteReplyTo<ArtifactState>,
    },
}

/// What is stored in an entity's log, as JSON: `{"type":"ArtifactRead"}`,
/// `{"type":"ArtifactAddedToUserFeed"}` or `{"type":"ArtifactRemovedFromUserFeed"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ArtifactEvent {
    /// The user read the artifact.
    ArtifactRead,
    /// The artifact was put in the user's feed.
    ArtifactAddedToUserFeed,
    /// The artifact was taken out of the user's feed.
    ArtifactRemovedFromUserFeed,
}

impl Event for ArtifactEvent {
    const MANIFEST: &'static str = "ArtifactStateEvent";
}

/// The entity behavior. Stateless itself: everything is in [`ArtifactState`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ArtifactStateEntity;

impl EventSourced for ArtifactStateEntity {
    type Command = ArtifactCommand;
    type Event = ArtifactEvent;
    type State = ArtifactState;

    const TYPE_NAME: &'static str = ENTITY_TYPE;

    fn on_command(
        &self,
        _ctx: &EntityContext,
        state: &ArtifactState,
        command: ArtifactCommand,
    ) -> Effect<Self> {
        let (event, reply) = match command {
            ArtifactCommand::GetState { reply } => return Effect::reply(reply, *state),
            ArtifactCommand::SetArtifactRead { reply } => (ArtifactEvent::ArtifactRead, reply),
            ArtifactCommand::SetArtifactAddedToUserFeed { reply } => {
                (ArtifactEvent::ArtifactAddedToUserFeed, reply)
            }
            ArtifactCommand::SetArtifactRemovedFromUserFeed { reply } => {
                (ArtifactEvent::ArtifactRemovedFromUserFeed, reply)
            }
        };
        let mut after = *state;
        Self::on_event(&mut after, &event);
        if after == *state {
            // Already so: nothing to store.
            Effect::reply(reply, true)
        } else {
            Effect::persist(event).then_reply(reply, |_| true)
        }
    }

    fn on_event(state: &mut ArtifactState, event: &ArtifactEvent) {
        match event {
            ArtifactEvent::ArtifactRead => state.artifact_read = true,
            ArtifactEvent::ArtifactAddedToUserFeed => state.artifact_in_user_feed = true,
            ArtifactEvent::ArtifactRemovedFromUserFeed => state.artifact_in_user_feed = false,
        }
    }

    fn tags(&self, _event: &ArtifactEvent) -> Vec<String> {
        vec![EVENT_TAG.to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ids_are_unambiguous() {
        for (artifact, user) in [(1, "Michael"), (12, ":x"), (0, "a:b:c"), (u64::MAX, "")] {
            let id = entity_id(artifact, user);
            assert_eq!(parse_entity_id(&id), Some((artifact, user)), "{id}");
        }
        assert_ne!(entity_id(1, "2:x"), entity_id(12, ":x"));
        assert_eq!(parse_entity_id("x:y"), None);
        assert_eq!(parse_entity_id("-1:y"), None);
        assert_eq!(parse_entity_id("1y"), None);
    }

    #[test]
    fn events_are_json_with_a_type() {
        let json = serde_json::to_value(ArtifactEvent::ArtifactAddedToUserFeed).unwrap();
        assert_eq!(json, serde_json::json!({"type": "ArtifactAddedToUserFeed"}));
        let back: ArtifactEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, ArtifactEvent::ArtifactAddedToUserFeed);
    }

    #[test]
    fn events_change_the_state() {
        let mut state = ArtifactState::default();
        ArtifactStateEntity::on_event(&mut state, &ArtifactEvent::ArtifactRead);
        ArtifactStateEntity::on_event(&mut state, &ArtifactEvent::ArtifactAddedToUserFeed);
        assert_eq!(
            state,
            ArtifactState {
                artifact_read: true,
                artifact_in_user_feed: true
            }
        );
        ArtifactStateEntity::on_event(&mut state, &ArtifactEvent::ArtifactRemovedFromUserFeed);
        assert!(state.artifact_read && !state.artifact_in_user_feed);
    }
}
