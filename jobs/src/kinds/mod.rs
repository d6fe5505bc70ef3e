//! The kinds Conveyor ships. Adding a kind is one module here plus one line in
//! [`catalog`] (and one in the worker's registry wiring).
//!
//! - [`noop`] — does nothing; for smoke tests and benchmarks.
//! - [`order`] — `order.process`: price, take stock, record, notify; once per order id.
//! - [`email`] — `email.send`: render and send one email, at least once, deduplicated.
//! - [`webhook`] — `webhook.deliver`: one signed POST of a job transition to a URL.
//! - [`testing`] — misbehaving kinds for Conveyor's own tests.

pub mod email;
pub mod noop;
pub mod order;
pub mod testing;
pub mod webhook;

use crate::registry::Catalog;

/// Every shipped kind (not the test kinds), for intake validation without any
/// handler: what a producer-only process needs.
pub fn catalog() -> Catalog {
    let mut catalog = Catalog::new();
    // Kinds are distinct constants; a duplicate here is a programming error caught by
    // the unit test below.
    catalog
        .add::<noop::Noop>()
        .and_then(|c| c.add::<order::ProcessOrder>())
        .and_then(|c| c.add::<email::SendEmail>())
        .and_then(|c| c.add::<webhook::DeliverWebhook>())
        .expect("shipped kinds are distinct");
    catalog
}

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_catalog_builds() {
        assert_eq!(
            super::catalog().kinds(),
            ["email.send", "noop", "order.process", "webhook.deliver"]
        );
    }
}
