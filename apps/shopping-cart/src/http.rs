//! The HTTP API: routes, input validation and the mapping of every failure to a JSON error.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /carts/{cartId}` | the cart |
//! | `POST /carts/{cartId}/items` `{"itemId":"sku","quantity":2}` | sets a quantity; the cart |
//! | `DELETE /carts/{cartId}/items/{itemId}` | removes an item; the cart |
//! | `GET /cart` | seed 000's route: cart `default` |
//! | `POST /cart?id=sku&quantity=2` | seed 000's route: sets a quantity in cart `default` |
//! | `DELETE /cart?id=sku` | seed 000's route: removes an item from cart `default` |
//!
//! Every answer is JSON. A cart is `{"cartId":"c1","items":{"sku":2}}`; an error is
//! `{"error":"…"}` with a 4xx status for a client's mistake (bad JSON, missing or mistyped
//! fields, a quantity below 1, an empty or over-long id, an unknown route, a wrong method) and
//! 503 when the cart could not answer in time or could not store the change.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::middleware;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal::remote::RemoteReplyTo;
use shoal::sharding::ShardRegion;
use shoal_service::{AskMessages, log_request, method_not_allowed, not_found};

pub use shoal_service::ApiError;

use crate::cart::{CartCommand, CartState};

/// The longest cart or item id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// The cart the seed's `/cart` routes work on.
pub const DEFAULT_CART_ID: &str = "default";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    carts: ShardRegion<CartCommand>,
    ask_timeout: Duration,
}

impl AppState {
    /// Handlers asking the carts through this node's shard region (or region proxy), waiting
    /// at most `ask_timeout` for each answer, wherever in the cluster the cart lives.
    pub fn new(carts: ShardRegion<CartCommand>, ask_timeout: Duration) -> Self {
        Self { carts, ask_timeout }
    }
}

/// The router with every route, the JSON 404 and 405 fallbacks and request logging.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/carts/{cartId}", get(view_cart))
        .route("/carts/{cartId}/items", axum::routing::post(set_item))
        .route(
            "/carts/{cartId}/items/{itemId}",
            axum::routing::delete(remove_item),
        )
        .route(
            "/cart",
            get(seed_view).post(seed_set_item).delete(seed_remove_item),
        )
        // After the routes: it applies to the routes added so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// A cart as answered over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CartView {
    /// The cart's id.
    pub cart_id: String,
    /// Item id → quantity.
    pub items: BTreeMap<String, u32>,
}

impl CartView {
    fn new(cart_id: String, state: CartState) -> Self {
        Self {
            cart_id,
            items: state.items,
        }
    }
}

/// The body of `POST /carts/{cartId}/items`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetItemBody {
    item_id: String,
    /// Signed, so that a negative quantity gets a clear message instead of a type error.
    quantity: i64,
}

/// The query of the seed's `POST /cart?id=…&quantity=…`.
#[derive(Debug, Deserialize)]
struct SeedSetItemQuery {
    id: String,
    quantity: i64,
}

/// The query of the seed's `DELETE /cart?id=…`.
#[derive(Debug, Deserialize)]
struct SeedRemoveItemQuery {
    id: String,
}

/// Checks a cart or item id: 1 to [`MAX_ID_BYTES`] bytes, no control characters.
pub fn validate_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request(format!("{what} must not be empty")));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(ApiError::bad_request(format!(
            "{what} is {} bytes long; the limit is {MAX_ID_BYTES}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks a requested quantity: 1 to `u32::MAX`.
pub fn validate_quantity(quantity: i64) -> Result<u32, ApiError> {
    match u32::try_from(quantity) {
        Ok(q) if q >= 1 => Ok(q),
        _ => Err(ApiError::bad_request(format!(
            "quantity must be a whole number from 1 to {}; got {quantity}",
            u32::MAX
        ))),
    }
}

async fn view_cart(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CartView>, ApiError> {
    let Path(cart_id) = path?;
    validate_id("cartId", &cart_id)?;
    app.view(cart_id).await
}

async fn set_item(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<SetItemBody>, JsonRejection>,
) -> Result<Json<CartView>, ApiError> {
    let Path(cart_id) = path?;
    validate_id("cartId", &cart_id)?;
    let Json(body) = body?;
    validate_id("itemId", &body.item_id)?;
    let quantity = validate_quantity(body.quantity)?;
    app.set_item(cart_id, body.item_id, quantity).await
}

async fn remove_item(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<CartView>, ApiError> {
    let Path((cart_id, item_id)) = path?;
    validate_id("cartId", &cart_id)?;
    validate_id("itemId", &item_id)?;
    app.remove_item(cart_id, item_id).await
}

async fn seed_view(State(app): State<AppState>) -> Result<Json<CartView>, ApiError> {
    app.view(DEFAULT_CART_ID.to_owned()).await
}

async fn seed_set_item(
    State(app): State<AppState>,
    query: Result<Query<SeedSetItemQuery>, QueryRejection>,
) -> Result<Json<CartView>, ApiError> {
    let Query(query) = query?;
    validate_id("id", &query.id)?;
    let quantity = validate_quantity(query.quantity)?;
    app.set_item(DEFAULT_CART_ID.to_owned(), query.id, quantity)
        .await
}

async fn seed_remove_item(
    State(app): State<AppState>,
    query: Result<Query<SeedRemoveItemQuery>, QueryRejection>,
) -> Result<Json<CartView>, ApiError> {
    let Query(query) = query?;
    validate_id("id", &query.id)?;
    app.remove_item(DEFAULT_CART_ID.to_owned(), query.id).await
}

impl AppState {
    async fn view(&self, cart_id: String) -> Result<Json<CartView>, ApiError> {
        self.ask(cart_id, |reply| CartCommand::View { reply }).await
    }

    async fn set_item(
        &self,
        cart_id: String,
        item_id: String,
        quantity: u32,
    ) -> Result<Json<CartView>, ApiError> {
        self.ask(cart_id, move |reply| CartCommand::SetItem {
            item_id,
            quantity,
            reply,
        })
        .await
    }

    async fn remove_item(
        &self,
        cart_id: String,
        item_id: String,
    ) -> Result<Json<CartView>, ApiError> {
        self.ask(cart_id, move |reply| CartCommand::RemoveItem {
            item_id,
            reply,
        })
        .await
    }

    /// Asks cart `cart_id` (an id already validated) and turns every way of not getting an
    /// answer into a 503.
    async fn ask(
        &self,
        cart_id: String,
        make: impl FnOnce(RemoteReplyTo<CartState>) -> CartCommand,
    ) -> Result<Json<CartView>, ApiError> {
        let cart = self
            .carts
            .entity_ref(cart_id.as_str())
            .map_err(|e| ApiError::invalid_id("cartId", e))?;
        match cart.ask(make, self.ask_timeout).await {
            Ok(state) => Ok(Json(CartView::new(cart_id, state))),
            Err(error) => {
                tracing::warn!(cart_id = %cart_id, %error, "cart did not answer");
                // A failed ask carries the store's message: a refused write (nothing applied)
                // or one whose outcome is unknown; the ask error does not say which.
                Err(ApiError::from_ask(
                    error,
                    self.ask_timeout,
                    AskMessages {
                        what: &format!("cart {cart_id:?}"),
                        read: "the cart",
                        failed: "could not store the change",
                        stopped: "is restarting",
                    },
                ))
            }
        }
    }
}
