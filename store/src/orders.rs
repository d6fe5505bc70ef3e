//! Orders and the product catalog. [`Store`] implements `order.process`'s port
//! ([`OrderLedger`]) in one transaction keyed by the order id:
//!
//! 1. an order id already placed returns its stored result and moves nothing;
//! 2. otherwise the order's product rows are locked `FOR UPDATE` in SKU order (orders
//!    sharing SKUs queue up instead of deadlocking), the order is priced
//!    ([`jobs::kinds::order::price`]) and inserted with `ON CONFLICT (order_id) DO
//!    NOTHING` (a concurrent job that placed the same id first wins, and its result is
//!    returned), a confirmed order takes its stock and records its lines, and the
//!    customer's email is enqueued (transactional enqueue);
//! 3. the job itself is marked completed with the result, in the same transaction.
//!
//! The `CHECK (stock >= 0)` backs the rule in the database: no interleaving oversells.
//! Also here: the demo catalog's CSV format ([`parse_catalog`]) and [`Store::upsert_products`].

use std::collections::HashMap;
use std::fmt;

use jobs::kinds::email::SendEmail;
use jobs::kinds::order::{
    Order, OrderLedger, OrderResult, OrderStatus, PricedLine, Pricing, Product, Sku, notification,
    price,
};
use jobs::{Currency, JobArgs, JobId, JobMeta, LedgerError};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::Store;
use crate::dispatch::enqueue_in;
use crate::error::Error;
use crate::settle::{Ending, Settled, Settlement, settle_on};

impl OrderLedger for Store {
    async fn place_order(&self, meta: &JobMeta, order: &Order) -> Result<OrderResult, LedgerError> {
        match place(self.pool(), meta, order).await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(LedgerError::NotRunning),
            Err(e) => Err(e.into()),
        }
    }
}

/// The whole transaction; `None` when the job was no longer running at this attempt
/// (everything rolled back).
async fn place(pool: &PgPool, meta: &JobMeta, order: &Order) -> Result<Option<OrderResult>, Error> {
    let mut tx = pool.begin().await?;
    let result = match load_order(&mut tx, order.order_id.as_str()).await? {
        Some(result) => {
            tracing::info!(order_id = %order.order_id, "order already placed; returning its result");
            result
        }
        None => place_new(&mut tx, meta, order).await?,
    };
    let value = serde_json::to_value(&result).map_err(|source| Error::Serialize {
        what: "the order result",
        source,
    })?;
    let settled = settle_on(
        &mut tx,
        &[Settlement {
            id: meta.id,
            ending: Ending::Attempt {
                attempt: meta.attempt,
                worker: meta.worker,
                started_at: None,
                outcome: jobs::Outcome::Completed { result: value },
            },
        }],
    )
    .await?;
    if !matches!(settled.answers.as_slice(), [Settled::Recorded(_)]) {
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(result))
}

async fn place_new(
    tx: &mut PgConnection,
    meta: &JobMeta,
    order: &Order,
) -> Result<OrderResult, Error> {
    let order_id = order.order_id.as_str();
    let skus: Vec<&str> = order.lines.iter().map(|l| l.sku.as_str()).collect();
    // The sort runs below the row locks, so every transaction locks in one order.
    let rows = sqlx::query(
        "SELECT sku, name, unit_price_minor, currency, stock FROM products \
         WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(&skus)
    .fetch_all(&mut *tx)
    .await?;
    let products = rows
        .iter()
        .map(|row| {
            let corrupt = |what: &str, e: String| Error::Corrupt(format!("products.{what}: {e}"));
            Ok(Product {
                sku: Sku::parse(row.try_get("sku")?).map_err(|e| corrupt("sku", e))?,
                name: row.try_get("name")?,
                unit_price_minor: row.try_get("unit_price_minor")?,
                currency: Currency::parse(row.try_get("currency")?)
                    .map_err(|e| corrupt("currency", e))?,
                stock: row.try_get("stock")?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let pricing = price(order, &products);
    let email_job = JobId::new();
    let (status, reason, total) = match &pricing {
        Pricing::Confirmed { total_minor, .. } => {
            (OrderStatus::Confirmed, None, Some(*total_minor))
        }
        Pricing::Rejected { reason } => (OrderStatus::Rejected, Some(reason.as_str()), None),
    };
    let inserted = sqlx::query(
        "INSERT INTO orders (order_id, job_id, email_job_id, customer_email, customer_name, \
             status, reason, currency, total_minor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
    )
    .bind(order_id)
    .bind(meta.id.as_uuid())
    .bind(email_job.as_uuid())
    .bind(order.customer.email.as_str())
    .bind(&order.customer.name)
    .bind(status.as_str())
    .bind(reason)
    .bind(order.currency.as_str())
    .bind(total)
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        // Another job placed this order id after our first look; the insert waited for
        // it to commit. Its result is the result, and we moved nothing.
        tracing::info!(
            order_id,
            "order placed concurrently by another job; returning its result"
        );
        return load_order(tx, order_id)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("order {order_id} conflicted but is missing")));
    }
    if let Pricing::Confirmed { lines, .. } = &pricing {
        take_stock_and_record_lines(tx, order_id, lines).await?;
    }
    let result = load_order(tx, order_id)
        .await?
        .ok_or_else(|| Error::Corrupt(format!("order {order_id} missing after insert")))?;
    let email = notification(order, &result)
        .and_then(|email| serde_json::to_value(&email))
        .map_err(|source| Error::Serialize {
            what: "the order notification",
            source,
        })?;
    let options = SendEmail::options();
    enqueue_in(
        tx,
        email_job,
        SendEmail::KIND,
        options.queue,
        email,
        options.max_attempts,
    )
    .await?;
    Ok(result)
}

async fn take_stock_and_record_lines(
    tx: &mut PgConnection,
    order_id: &str,
    lines: &[PricedLine],
) -> Result<(), Error> {
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let names: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
    let quantities: Vec<i32> = lines
        .iter()
        .map(|l| i32::try_from(l.quantity).unwrap_or(i32::MAX))
        .collect();
    let prices: Vec<i64> = lines.iter().map(|l| l.unit_price_minor).collect();
    let totals: Vec<i64> = lines.iter().map(|l| l.line_total_minor).collect();
    let line_nos: Vec<i32> = (1..).take(lines.len()).collect();
    sqlx::query(
        "UPDATE products p SET stock = p.stock - u.quantity \
         FROM UNNEST($1::text[], $2::int[]) AS u(sku, quantity) WHERE p.sku = u.sku",
    )
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_minor, \
             line_total_minor) \
         SELECT $1, u.* FROM UNNEST($2::int[], $3::text[], $4::text[], $5::int[], \
             $6::bigint[], $7::bigint[]) AS u",
    )
    .bind(order_id)
    .bind(&line_nos)
    .bind(&skus)
    .bind(&names)
    .bind(&quantities)
    .bind(&prices)
    .bind(&totals)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The stored result of order `order_id`: the one function every caller builds it
/// with, so the job that placed an order and every later job for its id return the
/// same value.
async fn load_order(conn: &mut PgConnection, order_id: &str) -> Result<Option<OrderResult>, Error> {
    // One round trip: the order and its lines, in line order.
    let Some(row) = sqlx::query(
        "SELECT order_id, status, reason, currency, total_minor, email_job_id, \
             COALESCE((SELECT json_agg(json_build_object('sku', sku, 'name', name, \
                     'quantity', quantity, 'unit_price_minor', unit_price_minor, \
                     'line_total_minor', line_total_minor) ORDER BY line_no) \
                 FROM order_items WHERE order_items.order_id = orders.order_id), '[]') AS lines \
         FROM orders WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let status: String = row.try_get("status")?;
    let lines: Vec<PricedLine> =
        serde_json::from_value(row.try_get::<serde_json::Value, _>("lines")?)
            .map_err(|e| Error::Corrupt(format!("order_items of {order_id}: {e}")))?;
    Ok(Some(OrderResult {
        order_id: row.try_get("order_id")?,
        status: status.parse().map_err(Error::Corrupt)?,
        reason: row.try_get("reason")?,
        currency: row.try_get("currency")?,
        total_minor: row.try_get("total_minor")?,
        lines,
        email_job_id: row.try_get::<Option<Uuid>, _>("email_job_id")?.map(JobId),
    }))
}

impl Store {
    /// Inserts `products`, or updates those whose SKU exists (name, price, currency,
    /// and stock reset to the given value). Returns how many rows were written.
    ///
    /// # Errors
    /// When the database fails (nothing was written).
    pub async fn upsert_products(&self, products: &[Product]) -> Result<u64, Error> {
        let skus: Vec<&str> = products.iter().map(|p| p.sku.as_str()).collect();
        let names: Vec<&str> = products.iter().map(|p| p.name.as_str()).collect();
        let prices: Vec<i64> = products.iter().map(|p| p.unit_price_minor).collect();
        let currencies: Vec<&str> = products.iter().map(|p| p.currency.as_str()).collect();
        let stock: Vec<i32> = products.iter().map(|p| p.stock).collect();
        let done = sqlx::query(
            "INSERT INTO products (sku, name, unit_price_minor, currency, stock) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::int[]) \
             ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, \
                 unit_price_minor = EXCLUDED.unit_price_minor, currency = EXCLUDED.currency, \
                 stock = EXCLUDED.stock",
        )
        .bind(&skus)
        .bind(&names)
        .bind(&prices)
        .bind(&currencies)
        .bind(&stock)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}

/// The columns of a catalog file, in order (its first line).
pub const CATALOG_HEADER: &str = "sku,name,unit_price_minor,currency,stock";

/// A catalog file line that does not parse: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError {
    /// 1-based line number.
    pub line: usize,
    /// The column, when one is at fault.
    pub column: Option<&'static str>,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "line {}, column {column}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

impl std::error::Error for CatalogError {}

/// Parses a product catalog: a header line `sku,name,unit_price_minor,currency,stock`,
/// then one product per line. Fields are separated by commas and trimmed; there is no
/// quoting, so a name cannot contain a comma. Blank lines and lines starting with `#`
/// are skipped.
///
/// # Errors
/// The first malformed line, naming its number and column.
pub fn parse_catalog(text: &str) -> Result<Vec<Product>, CatalogError> {
    let mut products = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut header_seen = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = content.split(',').map(str::trim).collect();
        if !header_seen {
            if fields.join(",") != CATALOG_HEADER {
                return Err(CatalogError {
                    line,
                    column: None,
                    message: format!("expected the header {CATALOG_HEADER:?}"),
                });
            }
            header_seen = true;
            continue;
        }
        let [sku, name, price, currency, stock] = fields[..] else {
            return Err(CatalogError {
                line,
                column: None,
                message: format!(
                    "expected 5 fields ({CATALOG_HEADER}), found {}",
                    fields.len()
                ),
            });
        };
        let at = |column: &'static str, message: String| CatalogError {
            line,
            column: Some(column),
            message,
        };
        let sku = Sku::parse(sku).map_err(|e| at("sku", e))?;
        if let Some(first) = seen.insert(sku.to_string(), line) {
            return Err(at("sku", format!("{sku} is already on line {first}")));
        }
        if name.is_empty() || name.chars().count() > 200 {
            return Err(at("name", "must be 1 to 200 characters".into()));
        }
        let unit_price_minor = price
            .parse::<i64>()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| {
                at(
                    "unit_price_minor",
                    format!("must be a whole number of minor units, 0 or more; got {price:?}"),
                )
            })?;
        let currency = Currency::parse(currency).map_err(|e| at("currency", e))?;
        let stock = stock
            .parse::<i32>()
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| {
                at(
                    "stock",
                    format!("must be a whole number, 0 or more; got {stock:?}"),
                )
            })?;
        products.push(Product {
            sku,
            name: name.to_owned(),
            unit_price_minor,
            currency,
            stock,
        });
    }
    if !header_seen {
        return Err(CatalogError {
            line: 1,
            column: None,
            message: format!("the file is empty; expected the header {CATALOG_HEADER:?}"),
        });
    }
    Ok(products)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_parses_skipping_blank_lines_and_comments() {
        let text = "sku, name, unit_price_minor, currency, stock\r\n\
                    # mugs\n\
                    MUG-BLUE, Blue mug, 1250, USD, 40\n\
                    \n\
                    YEN-CUP,Cup,500,JPY,0\n";

        let products = parse_catalog(text).unwrap();

        assert_eq!(products.len(), 2);
        assert_eq!(products[0].sku.as_str(), "MUG-BLUE");
        assert_eq!(products[0].name, "Blue mug");
        assert_eq!(products[0].unit_price_minor, 1250);
        assert_eq!(products[1].currency.as_str(), "JPY");
        assert_eq!(products[1].stock, 0);
    }

    #[test]
    fn a_malformed_line_is_named_by_number_and_column() {
        let header = CATALOG_HEADER;
        let cases = [
            ("sku,name\nA,B", 1, None),
            (
                &*format!("{header}\nA,Mug,12.50,USD,1"),
                2,
                Some("unit_price_minor"),
            ),
            (
                &*format!("{header}\nA,Mug,-1,USD,1"),
                2,
                Some("unit_price_minor"),
            ),
            (&*format!("{header}\n\nA,Mug,1,usd,1"), 3, Some("currency")),
            (&*format!("{header}\nA,Mug,1,USD,-2"), 2, Some("stock")),
            (&*format!("{header}\nA B,Mug,1,USD,2"), 2, Some("sku")),
            (&*format!("{header}\nA,,1,USD,2"), 2, Some("name")),
            (&*format!("{header}\nA,Mug,1,USD"), 2, None),
            (&*format!("{header}\nA,Mug, with comma,1,USD,2"), 2, None),
            (
                &*format!("{header}\nA,Mug,1,USD,2\nA,Mug,1,USD,2"),
                3,
                Some("sku"),
            ),
            ("", 1, None),
        ];
        for (text, line, column) in cases {
            let err = parse_catalog(text).unwrap_err();
            assert_eq!((err.line, err.column), (line, column), "{text:?}: {err}");
        }
        let err = parse_catalog(&format!("{header}\nA,Mug,x,USD,1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2, column unit_price_minor: must be a whole number of minor units, 0 or more; got \"x\""
        );
    }
}
