//! `Mutation`: create an order, patch its attributes and trigger events (with the version
//! check), and send an ERP update through the same inbox as REST.

use std::time::Duration;

use async_graphql::{Context, InputObject, Json, Object, Result};
use serde_json::{Map, Value};

use super::error::{IntoGraphql, to_graphql};
use super::query::invalid;
use super::types::{EventResult, Move, Order, Stay, UpdateAnswer};
use super::{ERP, SHOP, State, caller};
use crate::config::ErpMode;
use crate::domain::types::{
    Currency, EventName, InvalidValue, OrderId, OrderReference, Quantity, Role, Sku, UnitPrice,
    Version, check_idempotency_key,
};
use crate::domain::{Change, EventInput, ItemRef, NewItemInput, NewOrderInput, Source, Target};
use crate::http::ApiError;
use crate::inbox::ingest::{Incoming, Mode};
use crate::inbox::model::MAX_SELECTORS;

/// Most items one order may have (as in REST).
const MAX_ITEMS: usize = 1000;
/// The longest wait `sendOrderUpdate` honours, as REST's `Prefer: wait=N`.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub struct MutationRoot;

#[derive(InputObject)]
pub(super) struct CreateOrderInput {
    /// Unique across orders; no control characters or surrounding whitespace.
    pub reference: String,
    /// Name of a loaded main process.
    pub process: String,
    /// ISO 4217 code.
    pub currency: Option<String>,
    pub attributes: Option<Json<Map<String, Value>>>,
    /// 1 to 1,000 items.
    pub items: Vec<CreateItemInput>,
}

#[derive(InputObject)]
pub(super) struct CreateItemInput {
    pub sku: String,
    /// 1 to 1,000,000.
    pub quantity: i64,
    /// Minor units (cents) of the order's currency.
    pub unit_price: Option<i64>,
    pub attributes: Option<Json<Map<String, Value>>>,
}

impl CreateOrderInput {
    /// The service's input; a bad value is `INVALID_REQUEST` with its path.
    fn parse(self) -> Result<NewOrderInput> {
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            let message = format!("an order needs 1 to {MAX_ITEMS} items");
            return Err(invalid(message, "input.items"));
        }
        let mut items = Vec::with_capacity(self.items.len());
        for (i, item) in self.items.into_iter().enumerate() {
            let at = |field: &str| {
                let path = format!("input.items[{i}].{field}");
                move |e: InvalidValue| invalid(e.0, &path)
            };
            items.push(NewItemInput {
                sku: Sku::parse(item.sku).map_err(at("sku"))?,
                quantity: Quantity::parse(item.quantity).map_err(at("quantity"))?,
                unit_price: match item.unit_price {
                    None => None,
                    Some(p) => Some(UnitPrice::parse(p).map_err(at("unitPrice"))?.get()),
                },
                attributes: item.attributes.map(|a| a.0).unwrap_or_default(),
            });
        }
        Ok(NewOrderInput {
            reference: OrderReference::parse(self.reference)
                .map_err(|e| invalid(e.0, "input.reference"))?,
            process: self.process,
            currency: match self.currency {
                None => None,
                Some(c) => Some(Currency::parse(c).map_err(|e| invalid(e.0, "input.currency"))?),
            },
            attributes: self.attributes.map(|a| a.0).unwrap_or_default(),
            items,
        })
    }
}

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Creates an order; its items enter the process's initial state and its onEnter
    /// chain runs.
    #[graphql(guard = "SHOP")]
    async fn create_order(&self, ctx: &Context<'_>, input: CreateOrderInput) -> Result<Order> {
        let state = ctx.data::<State>()?;
        let order = state
            .service
            .create(input.parse()?, Source::Api)
            .await
            .gql()?;
        Ok(order.into())
    }

    /// Merges `attributes` into the order (JSON merge patch: `null` removes a key) if
    /// `version` is still current; else `VERSION_CONFLICT` with `currentVersion`.
    #[graphql(guard = "SHOP")]
    async fn update_order(
        &self,
        ctx: &Context<'_>,
        id: i64,
        version: i64,
        attributes: Json<Map<String, Value>>,
    ) -> Result<Order> {
        let state = ctx.data::<State>()?;
        let change = Change {
            expected: Some(Version(version)),
            attributes: Some(attributes.0),
            items: None,
            item_attributes: None,
            event: None,
            source: Source::Api,
        };
        let target = Target::Id(OrderId(id));
        let applied = state.service.apply(target, change).await.gql()?;
        Ok(applied.order.into())
    }

    /// Triggers an event on the order's items (`items`: ids, all when absent), if
    /// `version` (when given) is still current. Shop clients may trigger manual events
    /// only; admins any event.
    #[graphql(guard = "SHOP")]
    async fn trigger_event(
        &self,
        ctx: &Context<'_>,
        id: i64,
        event: String,
        items: Option<Vec<i64>>,
        version: Option<i64>,
    ) -> Result<EventResult> {
        let state = ctx.data::<State>()?;
        let role = caller(ctx)?.role;
        let event = EventName::parse(event).map_err(|e| invalid(e.0, "event"))?;
        if items.as_ref().is_some_and(|i| i.len() > MAX_SELECTORS) {
            let message = format!("an event selects at most {MAX_SELECTORS} items");
            return Err(invalid(message, "items"));
        }
        let change = Change {
            expected: version.map(Version),
            attributes: None,
            items: items.map(|ids| ids.into_iter().map(ItemRef::Id).collect()),
            item_attributes: None,
            event: Some(EventInput {
                event,
                manual_only: role != Role::Admin,
            }),
            source: Source::Api,
        };
        let target = Target::Id(OrderId(id));
        let applied = state.service.apply(target, change).await.gql()?;
        Ok(EventResult {
            order: applied.order.into(),
            moved: applied
                .moved
                .into_iter()
                .map(|m| Move {
                    item: m.item,
                    from: m.from,
                    to: m.to,
                })
                .collect(),
            not_applicable: applied.not_applicable,
            stayed: applied
                .stayed
                .into_iter()
                .map(|s| Stay {
                    item: s.item,
                    state: s.state,
                    reason: s.reason,
                })
                .collect(),
        })
    }

    /// Stores an order update (the JSON `POST /v1/erp/order-updates` takes) in the inbox.
    /// `wait`: seconds to wait for it to be processed (at most 60; 0 answers once stored;
    /// absent: the server's `[erp] default_mode`). A repeated `idempotencyKey` gets the
    /// first answer and has no second effect. A failed update in wait mode is an error
    /// with its code, `updateId` and `status`, as in REST.
    #[graphql(guard = "ERP")]
    async fn send_order_update(
        &self,
        ctx: &Context<'_>,
        input: Json<Value>,
        idempotency_key: Option<String>,
        wait: Option<i32>,
    ) -> Result<UpdateAnswer> {
        let state = ctx.data::<State>()?;
        let caller = caller(ctx)?;
        if caller.signing_secret.is_some() {
            // The signature covers the exact bytes of a REST body; GraphQL cannot carry it.
            return Err(to_graphql(ApiError::BadSignature(
                "this client signs its updates: send them to POST /v1/erp/order-updates",
            )));
        }
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key).map_err(|e| invalid(e.0, "idempotencyKey"))?;
        }
        let settings = state.inbox.settings();
        let mode = match wait {
            Some(n) if n < 0 => {
                return Err(invalid("must be 0 or more seconds".into(), "wait"));
            }
            Some(0) => Mode::Async,
            Some(n) => Mode::Wait(Duration::from_secs(n as u64).min(MAX_WAIT)),
            None => match settings.erp.default_mode {
                ErpMode::Async => Mode::Async,
                ErpMode::Wait => Mode::Wait(settings.default_wait().min(MAX_WAIT)),
            },
        };
        let incoming = Incoming {
            client: caller.name.clone(),
            key: idempotency_key,
            body: input.0,
            path: "$".into(),
        };
        let accepted = state.inbox.accept(incoming, mode).await.gql()?;
        let answer = accepted.answer();
        if let Some(e) = ApiError::update_failed(answer) {
            return Err(to_graphql(e));
        }
        Ok(answer.into())
    }
}
