//! Wiring: which handler runs each shipped kind, and with which collaborators.

use jobs::kinds::email::{Mailer, SendEmailHandler};
use jobs::kinds::noop::NoopHandler;
use jobs::kinds::order::ProcessOrderHandler;
use jobs::kinds::testing;
use jobs::kinds::webhook::{DeliverWebhookHandler, WebhookSender};
use jobs::{Catalog, Registry, RegistryError};
use store::Store;

/// The kinds intake accepts: every shipped kind ([`jobs::kinds::catalog`]), and with
/// `test_kinds` the misbehaving kinds of [`jobs::kinds::testing`]. Needs no handler, so
/// a producer-only process builds no mailer.
///
/// # Errors
/// When a kind is listed twice (a programming error).
pub fn catalog(test_kinds: bool) -> Result<Catalog, RegistryError> {
    let mut catalog = jobs::kinds::catalog();
    if test_kinds {
        catalog
            .add::<testing::Sleep>()?
            .add::<testing::Flaky>()?
            .add::<testing::Fail>()?
            .add::<testing::Panic>()?
            .add::<testing::Crash>()?
            .add::<testing::Snooze>()?;
    }
    Ok(catalog)
}

/// The registry of every shipped kind with its handler: `order.process` places orders
/// in `store`, `email.send` sends through `mailer` and records in `store`,
/// `webhook.deliver` posts through `webhooks` with the secrets in `store` (and
/// `callback_secret` for jobs' own callbacks). With
/// `test_kinds`, also the misbehaving kinds of [`jobs::kinds::testing`].
///
/// # Errors
/// When two handlers claim one kind (a programming error).
pub fn registry<M: Mailer, W: WebhookSender>(
    test_kinds: bool,
    store: Store,
    mailer: M,
    webhooks: W,
    callback_secret: Option<String>,
) -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    registry
        .register(NoopHandler)?
        .register(ProcessOrderHandler::new(store.clone()))?
        .register(SendEmailHandler::new(mailer, store.clone()))?
        .register(DeliverWebhookHandler::new(webhooks, store, callback_secret))?;
    if test_kinds {
        registry
            .register(testing::SleepHandler)?
            .register(testing::FlakyHandler)?
            .register(testing::FailHandler)?
            .register(testing::PanicHandler)?
            .register(testing::CrashHandler)?
            .register(testing::SnoozeHandler::default())?;
    }
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobs::kinds::email::{MailError, OutgoingEmail};

    struct NoMail;

    impl Mailer for NoMail {
        async fn send(&self, _email: &OutgoingEmail) -> Result<(), MailError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_catalog_lists_exactly_the_registered_kinds() {
        // A lazy pool: nothing connects.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        for test_kinds in [false, true] {
            let webhooks =
                crate::HttpWebhookSender::new(&crate::WebhookSettings::default()).unwrap();
            let registry = registry(
                test_kinds,
                Store::from_pool(pool.clone()),
                NoMail,
                webhooks,
                None,
            )
            .unwrap();
            assert_eq!(
                catalog(test_kinds).unwrap().kinds(),
                registry.catalog().kinds()
            );
        }
        assert!(catalog(false).unwrap().kinds().contains(&"order.process"));
        assert!(!catalog(false).unwrap().kinds().contains(&"test.sleep"));
    }
}
