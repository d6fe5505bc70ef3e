//! Wiring: which handler runs each shipped kind.

use jobs::kinds::noop::NoopHandler;
use jobs::{Registry, RegistryError};

/// The registry of every shipped kind with its handler.
///
/// # Errors
/// When two handlers claim one kind (a programming error).
pub fn registry() -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    registry.register(NoopHandler)?;
    Ok(registry)
}
