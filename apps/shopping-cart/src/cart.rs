//! The cart entity: seed 000's `ShoppingCartActor`, as a Shoal [`EventSourced`] entity.
//!
//! One cart is one entity with its own event log (`ShoppingCart|{cartId}`). Commands are
//! decided against the current state; only events that change the cart are persisted, so a
//! repeated request (same quantity again, removing an absent item) writes nothing.
//!
//! Carts are sharded over the cluster's `entity` nodes, so a command may come from another
//! node: commands are serializable and answer through a [`RemoteReplyTo`], which reaches the
//! asker wherever it runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal::prelude::*;
use shoal::remote::RemoteReplyTo;

/// The entity type name: the first part of every cart's persistence id.
pub const ENTITY_TYPE: &str = "ShoppingCart";

/// The tag on every cart event, for projections reading all carts (`events_by_tag("cart")`).
pub const CART_TAG: &str = "cart";

/// The cart's state: item id → quantity (always at least 1; absent means not in the cart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartState {
    /// Quantities by item id, in item id order.
    pub items: BTreeMap<String, u32>,
}

/// What a cart is asked to do. Every command answers with the cart after the command.
/// Sent between nodes as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub enum CartCommand {
    /// Answer with the cart.
    View {
        /// Where the cart goes.
        reply: RemoteReplyTo<CartState>,
    },
    /// Set the quantity of an item (the seed's `AddItem`: it sets, it does not add up).
    /// A quantity of 0 removes the item.
    SetItem {
        /// The item.
        item_id: String,
        /// The new quantity.
        quantity: u32,
        /// Where the cart goes, after the change is stored.
        reply: RemoteReplyTo<CartState>,
    },
    /// Take an item out of the cart (nothing happens if it is not in it).
    RemoveItem {
        /// The item.
        item_id: String,
        /// Where the cart goes, after the change is stored.
        reply: RemoteReplyTo<CartState>,
    },
}

/// What is stored in a cart's log, as JSON: `{"type":"ItemAdded","itemId":"sku","quantity":2}`
/// or `{"type":"ItemRemoved","itemId":"sku"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum CartEvent {
    /// The item's quantity was set to `quantity` (at least 1).
    ItemAdded {
        /// The item.
        item_id: String,
        /// Its new quantity.
        quantity: u32,
    },
    /// The item was taken out of the cart.
    ItemRemoved {
        /// The item.
        item_id: String,
    },
}

impl Event for CartEvent {
    const MANIFEST: &'static str = "ShoppingCartEvent";
}

/// The cart behavior. Stateless itself: everything is in [`CartState`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CartEntity;

impl EventSourced for CartEntity {
    type Command = CartCommand;
    type Event = CartEvent;
    type State = CartState;

    const TYPE_NAME: &'static str = ENTITY_TYPE;

    fn on_command(
        &self,
        _ctx: &EntityContext,
        state: &CartState,
        command: CartCommand,
    ) -> Effect<Self> {
        match command {
            CartCommand::View { reply } => Effect::reply(reply, state.clone()),
            CartCommand::SetItem {
                item_id,
                quantity: 0,
                reply,
            }
            | CartCommand::RemoveItem { item_id, reply } => {
                if state.items.contains_key(&item_id) {
                    Effect::persist(CartEvent::ItemRemoved { item_id }).then_reply(reply, cart)
                } else {
                    Effect::reply(reply, state.clone())
                }
            }
            CartCommand::SetItem {
                item_id,
                quantity,
                reply,
            } => {
                if state.items.get(&item_id) == Some(&quantity) {
                    Effect::reply(reply, state.clone())
                } else {
                    Effect::persist(CartEvent::ItemAdded { item_id, quantity })
                        .then_reply(reply, cart)
                }
            }
        }
    }

    fn on_event(state: &mut CartState, event: &CartEvent) {
        match event {
            CartEvent::ItemAdded { item_id, quantity } => {
                state.items.insert(item_id.clone(), *quantity);
            }
            CartEvent::ItemRemoved { item_id } => {
                state.items.remove(item_id);
            }
        }
    }

    fn tags(&self, _event: &CartEvent) -> Vec<String> {
        vec![CART_TAG.to_owned()]
    }
}

fn cart(state: &CartState) -> CartState {
    state.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_camel_case_json_with_a_type() {
        let added = CartEvent::ItemAdded {
            item_id: "sku".into(),
            quantity: 2,
        };
        assert_eq!(
            serde_json::to_string(&added).unwrap(),
            r#"{"type":"ItemAdded","itemId":"sku","quantity":2}"#
        );
        let removed = CartEvent::ItemRemoved {
            item_id: "sku".into(),
        };
        assert_eq!(
            serde_json::to_string(&removed).unwrap(),
            r#"{"type":"ItemRemoved","itemId":"sku"}"#
        );
        let back: CartEvent =
            serde_json::from_str(r#"{"type":"ItemAdded","itemId":"a","quantity":7}"#).unwrap();
        assert_eq!(
            back,
            CartEvent::ItemAdded {
                item_id: "a".into(),
                quantity: 7
            }
        );
    }

    #[test]
    fn events_set_and_remove_quantities() {
        let mut state = CartState::default();
        CartEntity::on_event(
            &mut state,
            &CartEvent::ItemAdded {
                item_id: "a".into(),
                quantity: 2,
            },
        );
        CartEntity::on_event(
            &mut state,
            &CartEvent::ItemAdded {
                item_id: "a".into(),
                quantity: 5,
            },
        );
        assert_eq!(state.items.get("a"), Some(&5), "ItemAdded sets, not adds");
        CartEntity::on_event(
            &mut state,
            &CartEvent::ItemRemoved {
                item_id: "a".into(),
            },
        );
        assert!(state.items.is_empty());
    }

    #[test]
    fn every_event_is_tagged_cart() {
        let tags = CartEntity.tags(&CartEvent::ItemRemoved {
            item_id: "x".into(),
        });
        assert_eq!(tags, vec![CART_TAG.to_owned()]);
    }
}
