//! `order.process` (queue `orders`): prices an order's lines from the product catalog,
//! checks and takes stock, records the order, and sends the customer a confirmation —
//! or records the order `rejected` with the reason (unknown SKU, currency mismatch, out
//! of stock) and sends a rejection. A rejection is a business outcome, not a failure:
//! the job completes with it as its result.
//!
//! What is here is free of transport and SQL: the arguments and their validation
//! ([`ProcessOrder`] → [`Order`]), the pricing rule ([`price`], pure), what the customer
//! is told ([`notification`]), and the port the handler places orders through
//! ([`OrderLedger`]). The `store` crate implements the port in one transaction keyed by
//! the order id, which makes placing an order exactly once: a redelivered job, or a
//! second job with the same `order_id`, gets the stored result and moves no stock.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Currency, EmailAddress};
use crate::error::{JobError, LedgerError, ValidationErrors};
use crate::handler::{Handler, Job, JobArgs, JobMeta, JobOptions};
use crate::kinds::email::{
    ConfirmationLine, OrderConfirmationData, OrderRejectedData, SendEmail, Template,
};
use crate::model::JobId;

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;
/// Most units of one SKU one line may order.
pub const MAX_QUANTITY: u32 = 1000;
/// Longest order id or SKU.
const MAX_ID_LEN: usize = 64;
/// Longest customer name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// Arguments of `order.process`, as the caller sends them.
///
/// ```json
/// {"order_id": "A-1001", "customer": {"email": "ada@example.com", "name": "Ada"},
///  "items": [{"sku": "MUG-BLUE", "quantity": 2}], "currency": "USD"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessOrder {
    /// The caller's id for the order; unique: an order id is placed at most once.
    pub order_id: String,
    /// Who ordered.
    pub customer: CustomerArgs,
    /// What was ordered: 1 to 100 lines, one per SKU.
    pub items: Vec<LineArgs>,
    /// ISO 4217 code the order is priced in (default `USD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// The customer, as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerArgs {
    /// Where the confirmation goes.
    pub email: String,
    /// Whom it greets.
    pub name: String,
}

/// One order line, as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineArgs {
    /// The product.
    pub sku: String,
    /// Units, 1 to 1000. Signed so that a negative number is reported like any other
    /// out-of-range value, together with every other problem.
    pub quantity: i64,
}

impl JobArgs for ProcessOrder {
    const KIND: &'static str = "order.process";

    fn options() -> JobOptions {
        JobOptions {
            queue: "orders",
            ..JobOptions::default()
        }
    }

    fn validate(&self) -> Result<(), ValidationErrors> {
        Order::try_from(self).map(drop)
    }
}

fn is_id_text(text: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Defines a validated text identifier: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
macro_rules! text_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks `text` and wraps it.
            ///
            /// # Errors
            /// When it is empty, too long, or has other characters.
            pub fn parse(text: &str) -> Result<Self, String> {
                if is_id_text(text) {
                    Ok(Self(text.to_owned()))
                } else {
                    Err(format!("must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, '_' and '-'"))
                }
            }

            #[doc = concat!("The ", $what, " as text.")]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// The caller's order id: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    OrderId,
    "id"
);
text_id!(
    /// A product's stock-keeping unit: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    Sku,
    "SKU"
);

/// Units on one order line: 1 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(u32);

impl Quantity {
    /// Checks `n` and wraps it.
    ///
    /// # Errors
    /// When it is outside 1 to 1000.
    pub fn parse(n: i64) -> Result<Self, String> {
        match u32::try_from(n) {
            Ok(q) if (1..=MAX_QUANTITY).contains(&q) => Ok(Self(q)),
            _ => Err(format!("must be between 1 and {MAX_QUANTITY}")),
        }
    }

    /// The number of units.
    pub fn get(&self) -> u32 {
        self.0
    }
}

/// A validated customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// Where the confirmation goes.
    pub email: EmailAddress,
    /// Whom it greets (1 to 200 characters, no control characters).
    pub name: String,
}

/// A validated order line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// The product.
    pub sku: Sku,
    /// Units.
    pub quantity: Quantity,
}

/// A validated order: what the handler and the ledger work with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The caller's id.
    pub order_id: OrderId,
    /// Who ordered.
    pub customer: Customer,
    /// The lines, in the caller's order; each SKU at most once.
    pub lines: Vec<OrderLine>,
    /// What the order is priced in.
    pub currency: Currency,
}

impl TryFrom<&ProcessOrder> for Order {
    type Error = ValidationErrors;

    /// Checks every rule and reports every broken one, each with its field path.
    fn try_from(args: &ProcessOrder) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let order_id = OrderId::parse(&args.order_id)
            .map_err(|e| errors.add("order_id", e))
            .ok();
        let email = EmailAddress::parse(&args.customer.email)
            .map_err(|e| errors.add("customer.email", e))
            .ok();
        let name = args.customer.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            errors.add(
                "customer.name",
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            );
        } else if name.chars().any(char::is_control) {
            errors.add("customer.name", "must not contain control characters");
        }
        if args.items.is_empty() || args.items.len() > MAX_LINES {
            errors.add("items", format!("must have 1 to {MAX_LINES} lines"));
        }
        let mut lines = Vec::with_capacity(args.items.len());
        let mut first_line_of: HashMap<&str, usize> = HashMap::new();
        for (i, item) in args.items.iter().enumerate() {
            let sku = Sku::parse(&item.sku)
                .map_err(|e| errors.add(format!("items[{i}].sku"), e))
                .ok();
            if let Some(first) = first_line_of.insert(&item.sku, i) {
                errors.add(
                    format!("items[{i}].sku"),
                    format!("repeats items[{first}].sku; put the whole quantity on one line"),
                );
            }
            let quantity = Quantity::parse(item.quantity)
                .map_err(|e| errors.add(format!("items[{i}].quantity"), e))
                .ok();
            if let (Some(sku), Some(quantity)) = (sku, quantity) {
                lines.push(OrderLine { sku, quantity });
            }
        }
        let currency = match &args.currency {
            None => Some(Currency::USD),
            Some(code) => Currency::parse(code)
                .map_err(|e| errors.add("currency", e))
                .ok(),
        };
        errors.into_result()?;
        match (order_id, email, currency) {
            (Some(order_id), Some(email), Some(currency)) => Ok(Order {
                order_id,
                customer: Customer {
                    email,
                    name: name.to_owned(),
                },
                lines,
                currency,
            }),
            // Unreachable: each `None` above recorded an error.
            _ => Err(ValidationErrors::one("order_id", "is invalid")),
        }
    }
}

/// A catalog product, as pricing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Its SKU.
    pub sku: Sku,
    /// Its name, shown on confirmations.
    pub name: String,
    /// Price of one unit, in minor units of `currency` (cents for USD).
    pub unit_price_minor: i64,
    /// What it is priced in.
    pub currency: Currency,
    /// Units available.
    pub stock: i32,
}

/// One priced line of a confirmed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    /// Product SKU.
    pub sku: String,
    /// Product name when the order was placed.
    pub name: String,
    /// Units.
    pub quantity: u32,
    /// Price of one unit, in minor units.
    pub unit_price_minor: i64,
    /// `quantity × unit_price_minor`.
    pub line_total_minor: i64,
}

/// What pricing decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pricing {
    /// Every line is known, in the order's currency and in stock.
    Confirmed {
        /// The priced lines, in the order's order.
        lines: Vec<PricedLine>,
        /// Sum of the line totals, in minor units.
        total_minor: i64,
    },
    /// At least one line cannot be delivered.
    Rejected {
        /// Every problem, for a person, `; `-separated.
        reason: String,
    },
}

/// Prices `order` against `products` (the catalog rows of its SKUs; others are
/// ignored). Rejects, listing every problem, when a SKU is unknown, priced in another
/// currency, or short of stock, or when a total would overflow. Pure: takes no stock.
pub fn price(order: &Order, products: &[Product]) -> Pricing {
    let by_sku: HashMap<&Sku, &Product> = products.iter().map(|p| (&p.sku, p)).collect();
    let mut problems = Vec::new();
    let mut lines = Vec::with_capacity(order.lines.len());
    let mut total: Option<i64> = Some(0);
    for line in &order.lines {
        let Some(product) = by_sku.get(&line.sku) else {
            problems.push(format!("unknown SKU \"{}\"", line.sku));
            continue;
        };
        if product.currency != order.currency {
            problems.push(format!(
                "SKU \"{}\" is priced in {}, not {}",
                line.sku, product.currency, order.currency
            ));
            continue;
        }
        let wanted = line.quantity.get();
        if i64::from(product.stock) < i64::from(wanted) {
            problems.push(format!(
                "SKU \"{}\": {wanted} requested, {} in stock",
                line.sku,
                product.stock.max(0)
            ));
            continue;
        }
        let line_total = product.unit_price_minor.checked_mul(i64::from(wanted));
        total = total.zip(line_total).and_then(|(t, l)| t.checked_add(l));
        lines.push(PricedLine {
            sku: line.sku.to_string(),
            name: product.name.clone(),
            quantity: wanted,
            unit_price_minor: product.unit_price_minor,
            line_total_minor: line_total.unwrap_or(0),
        });
    }
    if problems.is_empty() && total.is_none() {
        problems.push("the order total is too large".to_owned());
    }
    match (problems.is_empty(), total) {
        (true, Some(total_minor)) => Pricing::Confirmed { lines, total_minor },
        _ => Pricing::Rejected {
            reason: problems.join("; "),
        },
    }
}

/// How an order ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Priced, stock taken.
    Confirmed,
    /// Not accepted; no stock moved.
    Rejected,
}

impl OrderStatus {
    /// The status's stable name, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Rejected => "rejected",
        }
    }
}

impl FromStr for OrderStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "confirmed" => Ok(OrderStatus::Confirmed),
            "rejected" => Ok(OrderStatus::Rejected),
            other => Err(format!("unknown order status {other:?}")),
        }
    }
}

/// A placed order, as recorded: the result of every `order.process` job for its
/// order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderResult {
    /// The caller's order id.
    pub order_id: String,
    /// Confirmed or rejected.
    pub status: OrderStatus,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it is priced in.
    pub currency: String,
    /// Sum of the line totals (confirmed orders only), in minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_minor: Option<i64>,
    /// The priced lines (empty when rejected).
    pub lines: Vec<PricedLine>,
    /// The `email.send` job telling the customer.
    pub email_job_id: Option<JobId>,
}

/// The email telling `order`'s customer how it ended: `order_confirmation` with every
/// line and the total, or `order_rejected` with the reason.
///
/// # Errors
/// Never in practice: the template data is plain data and always serializes.
pub fn notification(order: &Order, result: &OrderResult) -> Result<SendEmail, serde_json::Error> {
    let customer_name = order.customer.name.clone();
    let (template, data) = match result.status {
        OrderStatus::Confirmed => (
            Template::OrderConfirmation,
            serde_json::to_value(OrderConfirmationData {
                order_id: result.order_id.clone(),
                customer_name,
                currency: result.currency.clone(),
                lines: result
                    .lines
                    .iter()
                    .map(|l| ConfirmationLine {
                        sku: l.sku.clone(),
                        name: l.name.clone(),
                        quantity: l.quantity,
                        unit_price_minor: l.unit_price_minor,
                        line_total_minor: l.line_total_minor,
                    })
                    .collect(),
                total_minor: result.total_minor.unwrap_or(0),
            })?,
        ),
        OrderStatus::Rejected => (
            Template::OrderRejected,
            serde_json::to_value(OrderRejectedData {
                order_id: result.order_id.clone(),
                customer_name,
                reason: result.reason.clone().unwrap_or_default(),
            })?,
        ),
    };
    Ok(SendEmail {
        to: order.customer.email.to_string(),
        template: Some(template),
        data: Some(data),
        subject: None,
        text: None,
        html: None,
    })
}

/// Where orders are placed: the port `order.process` needs, implemented by `store`.
pub trait OrderLedger: Send + Sync + 'static {
    /// Places `order` for job `meta` exactly once, in one transaction: when the order
    /// id is already placed, returns the stored result and changes nothing else;
    /// otherwise prices it ([`price`]), takes the stock of a confirmed order, records
    /// the order, enqueues its [`notification`], and marks job `meta` (at its attempt)
    /// completed with the result. Concurrent calls for one order id place it once.
    ///
    /// # Errors
    /// [`LedgerError`]: nothing was written.
    fn place_order(
        &self,
        meta: &JobMeta,
        order: &Order,
    ) -> impl Future<Output = Result<OrderResult, LedgerError>> + Send;
}

/// Runs [`ProcessOrder`] through an [`OrderLedger`]. Completes with the
/// [`OrderResult`], confirmed or rejected; a database failure is a retry.
#[derive(Debug, Clone)]
pub struct ProcessOrderHandler<L> {
    ledger: L,
}

impl<L: OrderLedger> ProcessOrderHandler<L> {
    /// A handler placing orders in `ledger`.
    pub fn new(ledger: L) -> Self {
        Self { ledger }
    }
}

impl<L: OrderLedger> Handler for ProcessOrderHandler<L> {
    type Args = ProcessOrder;

    async fn handle(&self, job: Job<ProcessOrder>) -> Result<Value, JobError> {
        let order = Order::try_from(&job.args).map_err(JobError::fail)?;
        // Transient or not, a database failure is infrastructure: try again.
        let result = self
            .ledger
            .place_order(&job.meta, &order)
            .await
            .map_err(JobError::retry)?;
        tracing::info!(
            order_id = %order.order_id,
            status = result.status.as_str(),
            "order placed"
        );
        serde_json::to_value(&result).map_err(JobError::fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::email::Email;
    use crate::registry::KindSpec;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "order_id": "A-1001",
            "customer": {"email": "ada@example.com", "name": "Ada"},
            "items": [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 1}]
        })
    }

    fn fields(args: Value) -> Vec<String> {
        KindSpec::of::<ProcessOrder>()
            .validate(&args)
            .err()
            .map(|e| e.0.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    fn order(lines: &[(&str, i64)], currency: &str) -> Order {
        let args = ProcessOrder {
            order_id: "A-1".into(),
            customer: CustomerArgs {
                email: "ada@example.com".into(),
                name: "Ada".into(),
            },
            items: lines
                .iter()
                .map(|(sku, quantity)| LineArgs {
                    sku: (*sku).into(),
                    quantity: *quantity,
                })
                .collect(),
            currency: Some(currency.into()),
        };
        Order::try_from(&args).unwrap()
    }

    fn product(sku: &str, price: i64, currency: &str, stock: i32) -> Product {
        Product {
            sku: Sku::parse(sku).unwrap(),
            name: format!("The {sku}"),
            unit_price_minor: price,
            currency: Currency::parse(currency).unwrap(),
            stock,
        }
    }

    #[test]
    fn a_valid_order_defaults_to_usd() {
        assert!(fields(valid()).is_empty());
        let args: ProcessOrder = serde_json::from_value(valid()).unwrap();
        assert_eq!(Order::try_from(&args).unwrap().currency, Currency::USD);
    }

    #[test]
    fn every_broken_rule_is_reported_at_once_with_its_path() {
        let args = json!({
            "order_id": "A 1",
            "customer": {"email": "ada.example.com", "name": "  "},
            "items": [
                {"sku": "MUG", "quantity": 1},
                {"sku": "bad sku!", "quantity": 1},
                {"sku": "TEE", "quantity": 0},
                {"sku": "MUG", "quantity": -3},
                {"sku": "CAP", "quantity": 1001}
            ],
            "currency": "usd"
        });

        assert_eq!(
            fields(args),
            [
                "order_id",
                "customer.email",
                "customer.name",
                "items[1].sku",
                "items[2].quantity",
                "items[3].sku",
                "items[3].quantity",
                "items[4].quantity",
                "currency"
            ]
        );
    }

    #[test]
    fn line_count_and_id_length_are_bounded() {
        let mut args = valid();
        args["items"] = json!([]);
        assert_eq!(fields(args.clone()), ["items"]);
        args["items"] = (0..101)
            .map(|i| json!({"sku": format!("S{i}"), "quantity": 1}))
            .collect();
        assert_eq!(fields(args), ["items"]);
        let mut args = valid();
        args["order_id"] = json!("x".repeat(65));
        assert_eq!(fields(args.clone()), ["order_id"]);
        args["order_id"] = json!("x".repeat(64));
        assert!(fields(args).is_empty());
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused_with_their_path() {
        let mut args = valid();
        args["items"][1]["colour"] = json!("blue");
        let err = KindSpec::of::<ProcessOrder>().validate(&args).unwrap_err();
        assert_eq!(err.0[0].field, "items[1].colour", "{err}");
        let mut args = valid();
        args["items"][1]["quantity"] = json!("two");
        assert_eq!(fields(args), ["items[1].quantity"]);
        let mut args = valid();
        args["customer"].as_object_mut().unwrap().remove("email");
        assert_eq!(fields(args), ["customer.email"]);
    }

    #[test]
    fn pricing_confirms_with_line_totals_and_a_total() {
        let order = order(&[("MUG", 2), ("TEE", 1)], "USD");
        let products = [
            product("TEE", 600, "USD", 1),
            product("MUG", 1250, "USD", 10),
        ];

        let pricing = price(&order, &products);

        let Pricing::Confirmed { lines, total_minor } = pricing else {
            panic!("expected a confirmation, got {pricing:?}");
        };
        assert_eq!(total_minor, 3100);
        assert_eq!(lines[0].sku, "MUG");
        assert_eq!(lines[0].line_total_minor, 2500);
        assert_eq!(lines[1].name, "The TEE");
        assert_eq!(lines[1].line_total_minor, 600);
    }

    #[test]
    fn pricing_rejects_listing_every_problem() {
        let order = order(&[("MUG", 3), ("GHOST", 1), ("EURO", 1), ("TEE", 1)], "USD");
        let products = [
            product("MUG", 1250, "USD", 2),
            product("EURO", 100, "EUR", 5),
            product("TEE", 600, "USD", 1),
        ];

        let pricing = price(&order, &products);

        assert_eq!(
            pricing,
            Pricing::Rejected {
                reason: "SKU \"MUG\": 3 requested, 2 in stock; unknown SKU \"GHOST\"; \
                         SKU \"EURO\" is priced in EUR, not USD"
                    .into()
            }
        );
    }

    #[test]
    fn pricing_takes_the_last_unit_and_refuses_an_overflowing_total() {
        let exact = price(&order(&[("MUG", 2)], "USD"), &[product("MUG", 1, "USD", 2)]);
        assert!(matches!(exact, Pricing::Confirmed { total_minor: 2, .. }));
        let huge = price(
            &order(&[("MUG", 1000)], "USD"),
            &[product("MUG", i64::MAX / 10, "USD", 1000)],
        );
        assert_eq!(
            huge,
            Pricing::Rejected {
                reason: "the order total is too large".into()
            }
        );
    }

    #[test]
    fn the_notification_is_a_valid_email_job() {
        let order = order(&[("MUG", 2)], "USD");
        let confirmed = OrderResult {
            order_id: "A-1".into(),
            status: OrderStatus::Confirmed,
            reason: None,
            currency: "USD".into(),
            total_minor: Some(2500),
            lines: vec![PricedLine {
                sku: "MUG".into(),
                name: "Mug".into(),
                quantity: 2,
                unit_price_minor: 1250,
                line_total_minor: 2500,
            }],
            email_job_id: None,
        };
        let rejected = OrderResult {
            status: OrderStatus::Rejected,
            reason: Some("unknown SKU \"MUG\"".into()),
            total_minor: None,
            lines: vec![],
            ..confirmed.clone()
        };

        for result in [confirmed, rejected] {
            let email = notification(&order, &result).unwrap();
            assert_eq!(email.to, "ada@example.com");
            let checked = Email::try_from(&email);
            assert!(checked.is_ok(), "{checked:?}");
        }
    }

    struct FakeLedger(Result<OrderResult, ()>);

    impl OrderLedger for FakeLedger {
        async fn place_order(
            &self,
            _meta: &JobMeta,
            _order: &Order,
        ) -> Result<OrderResult, LedgerError> {
            self.0
                .clone()
                .map_err(|()| LedgerError::Transient("connection reset".into()))
        }
    }

    fn job() -> Job<ProcessOrder> {
        Job {
            meta: JobMeta {
                id: JobId::new(),
                kind: ProcessOrder::KIND.into(),
                queue: "orders".into(),
                attempt: 1,
                max_attempts: 5,
                created_at: chrono::Utc::now(),
                worker: crate::WorkerId::new(),
            },
            args: serde_json::from_value(valid()).unwrap(),
        }
    }

    #[tokio::test]
    async fn the_handler_completes_with_the_ledger_result_and_retries_its_failures() {
        let result = OrderResult {
            order_id: "A-1001".into(),
            status: OrderStatus::Rejected,
            reason: Some("unknown SKU \"MUG\"".into()),
            currency: "USD".into(),
            total_minor: None,
            lines: vec![],
            email_job_id: Some(JobId::new()),
        };

        let ok = ProcessOrderHandler::new(FakeLedger(Ok(result.clone())))
            .handle(job())
            .await
            .unwrap();
        let err = ProcessOrderHandler::new(FakeLedger(Err(())))
            .handle(job())
            .await
            .unwrap_err();

        assert_eq!(ok, serde_json::to_value(&result).unwrap());
        assert_eq!(ok["status"], "rejected");
        assert!(matches!(err, JobError::Retry(_)), "{err:?}");
    }
}
