//! Wiring: which handler runs each shipped kind.

use jobs::kinds::noop::NoopHandler;
use jobs::kinds::testing;
use jobs::{Registry, RegistryError};

/// The registry of every shipped kind with its handler; with `test_kinds`, also the
/// misbehaving kinds of [`jobs::kinds::testing`].
///
/// # Errors
/// When two handlers claim one kind (a programming error).
pub fn registry(test_kinds: bool) -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    registry.register(NoopHandler)?;
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
