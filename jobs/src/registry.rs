//! Kind → handler. The [`Registry`] is built once at start-up and read-only afterwards;
//! the [`Catalog`] is its validation half, all the producer needs.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{JobError, RegistryError, UnknownKind, ValidationErrors};
use crate::handler::{Handler, Job, JobArgs, JobMeta, JobOptions};

/// What intake knows of a kind: its defaults and how to check its arguments.
#[derive(Clone, Copy)]
pub struct KindSpec {
    /// The kind's wire name.
    pub kind: &'static str,
    /// The kind's defaults.
    pub options: JobOptions,
    validate: fn(&Value) -> Result<(), ValidationErrors>,
}

impl fmt::Debug for KindSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindSpec")
            .field("kind", &self.kind)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl KindSpec {
    /// The spec of `A`.
    pub fn of<A: JobArgs>() -> Self {
        Self {
            kind: A::KIND,
            options: A::options(),
            validate: |args| decode_args::<A>(args).map(drop),
        }
    }

    /// Checks `args` for this kind: their shape, then the kind's own rules. Paths are
    /// relative to the args object.
    ///
    /// # Errors
    /// Every invalid field found.
    pub fn validate(&self, args: &Value) -> Result<(), ValidationErrors> {
        (self.validate)(args)
    }
}

/// Decodes and validates arguments of kind `A`, naming the failing field's path.
///
/// # Errors
/// The first shape error (serde stops there), or every rule `A::validate` breaks.
pub fn decode_args<A: JobArgs>(args: &Value) -> Result<A, ValidationErrors> {
    let decoded: A = decode_value(args)?;
    decoded.validate()?;
    Ok(decoded)
}

/// Decodes `value` as a `T`, naming the failing field's path relative to `value`
/// (`items[1].quantity`; a missing field is named itself, not its parent).
///
/// # Errors
/// The first shape error (serde stops there).
pub fn decode_value<T: DeserializeOwned>(value: &Value) -> Result<T, ValidationErrors> {
    serde_path_to_error::deserialize(value).map_err(|err| shape_error(&err))
}

/// The field error of a failed decode, relative to the decoded value: serde's path
/// (empty at the root), and its message without serde_json's " at line L column C" (a
/// path says more). A missing field is named itself (`items[0].sku` "is required"), not
/// its parent.
pub fn shape_error(err: &serde_path_to_error::Error<serde_json::Error>) -> ValidationErrors {
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = err.inner().to_string();
    let message = message
        .rfind(" at line ")
        .map_or(message.as_str(), |i| &message[..i]);
    // serde reports a missing field at its parent; name the field itself.
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        ValidationErrors::one(crate::error::join_path(&path, name), "is required")
    } else {
        ValidationErrors::one(path, message)
    }
}

/// Kind → spec, for validating at intake without any handler.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    kinds: HashMap<&'static str, KindSpec>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds kind `A`.
    ///
    /// # Errors
    /// When `A::KIND` is already present.
    pub fn add<A: JobArgs>(&mut self) -> Result<&mut Self, RegistryError> {
        self.insert(KindSpec::of::<A>())?;
        Ok(self)
    }

    fn insert(&mut self, spec: KindSpec) -> Result<(), RegistryError> {
        if self.kinds.contains_key(spec.kind) {
            return Err(RegistryError::DuplicateKind(spec.kind));
        }
        self.kinds.insert(spec.kind, spec);
        Ok(())
    }

    /// The spec of `kind`.
    ///
    /// # Errors
    /// When no such kind is registered.
    pub fn get(&self, kind: &str) -> Result<&KindSpec, UnknownKind> {
        self.kinds
            .get(kind)
            .ok_or_else(|| UnknownKind(kind.to_owned()))
    }

    /// Registered kind names, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.kinds.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }
}

/// Runs one kind's handler on raw arguments; the type-erased face of a [`Handler`].
trait ErasedHandler: Send + Sync {
    fn call(&self, meta: JobMeta, args: Value) -> BoxFuture<'static, Result<Value, JobError>>;
}

struct Typed<H>(Arc<H>);

impl<H: Handler> ErasedHandler for Typed<H> {
    fn call(&self, meta: JobMeta, args: Value) -> BoxFuture<'static, Result<Value, JobError>> {
        let handler = Arc::clone(&self.0);
        Box::pin(async move {
            // Arguments were validated at intake; failing now means the stored args are
            // bad (a replay with --args, a hand-published message). Retrying never
            // fixes bad input.
            let args = decode_args::<H::Args>(&args)
                .map_err(|e| JobError::fail(format!("invalid args: {e}")))?;
            handler.handle(Job { meta, args }).await
        })
    }
}

/// Kind → handler. Refuses a second handler for a kind; an unknown kind is a value.
#[derive(Default, Clone)]
pub struct Registry {
    catalog: Catalog,
    handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.catalog.kinds())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for its kind.
    ///
    /// # Errors
    /// When the kind already has a handler.
    pub fn register<H: Handler>(&mut self, handler: H) -> Result<&mut Self, RegistryError> {
        self.catalog.insert(KindSpec::of::<H::Args>())?;
        self.handlers
            .insert(H::Args::KIND, Arc::new(Typed(Arc::new(handler))));
        Ok(self)
    }

    /// The validation half, for intake.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The handler and spec for `kind`.
    ///
    /// # Errors
    /// When no handler is registered for `kind`.
    pub fn dispatch(&self, kind: &str) -> Result<Dispatch, UnknownKind> {
        let spec = *self.catalog.get(kind)?;
        let handler = Arc::clone(
            self.handlers
                .get(kind)
                .ok_or_else(|| UnknownKind(kind.to_owned()))?,
        );
        Ok(Dispatch { spec, handler })
    }
}

/// A resolved kind, ready to run a job.
#[derive(Clone)]
pub struct Dispatch {
    /// The kind's spec (timeout, retry policy).
    pub spec: KindSpec,
    handler: Arc<dyn ErasedHandler>,
}

impl Dispatch {
    /// Runs the handler on `args`. The future is `'static` so it can run in a task of
    /// its own, where a panic is contained.
    pub fn run(&self, meta: JobMeta, args: Value) -> BoxFuture<'static, Result<Value, JobError>> {
        self.handler.call(meta, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::noop::{Noop, NoopHandler};
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        sku: String,
        quantity: u32,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lines {
        items: Vec<Line>,
    }

    impl JobArgs for Lines {
        const KIND: &'static str = "test.lines";

        fn validate(&self) -> Result<(), ValidationErrors> {
            let mut errors = ValidationErrors::new();
            for (i, line) in self.items.iter().enumerate() {
                if line.quantity == 0 {
                    errors.add(format!("items[{i}].quantity"), "must be at least 1");
                }
            }
            errors.into_result()
        }
    }

    #[test]
    fn registry_refuses_a_duplicate_kind() {
        let mut registry = Registry::new();
        registry.register(NoopHandler).unwrap();
        let err = registry.register(NoopHandler).unwrap_err();
        assert!(matches!(err, RegistryError::DuplicateKind("noop")));
    }

    #[test]
    fn unknown_kind_is_a_value() {
        let registry = Registry::new();
        let err = registry.dispatch("nope").err().unwrap();
        assert_eq!(err.0, "nope");
    }

    #[test]
    fn validation_names_the_failing_field_path() {
        let spec = KindSpec::of::<Lines>();
        let bad_type = spec
            .validate(
                &json!({"items": [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": "x"}]}),
            )
            .unwrap_err();
        assert_eq!(bad_type.0[0].field, "items[1].quantity");

        let missing = spec
            .validate(&json!({"items": [{"quantity": 1}]}))
            .unwrap_err();
        assert_eq!(missing.0[0].field, "items[0].sku");
        assert_eq!(missing.0[0].message, "is required");

        let rule = spec
            .validate(&json!({"items": [{"sku": "A", "quantity": 0}]}))
            .unwrap_err();
        assert_eq!(rule.0[0].field, "items[0].quantity");

        let unknown = spec
            .validate(&json!({"items": [], "extra": 1}))
            .unwrap_err();
        assert!(unknown.0[0].message.contains("extra"), "{unknown}");

        assert!(spec.validate(&json!({"items": []})).is_ok());
    }

    #[tokio::test]
    async fn dispatch_runs_the_handler_and_bad_stored_args_fail_permanently() {
        let mut registry = Registry::new();
        registry.register(NoopHandler).unwrap();
        let dispatch = registry.dispatch(Noop::KIND).unwrap();
        let meta = JobMeta {
            id: crate::JobId::new(),
            kind: "noop".into(),
            queue: "default".into(),
            attempt: 1,
            max_attempts: 1,
            created_at: chrono::Utc::now(),
            worker: crate::WorkerId::new(),
        };
        assert!(dispatch.run(meta.clone(), json!({})).await.is_ok());
        let err = dispatch.run(meta, json!([1])).await.unwrap_err();
        assert!(matches!(err, JobError::Fail(_)), "{err:?}");
    }

    #[test]
    fn shape_errors_from_text_drop_the_position_and_name_a_missing_field_itself() {
        let mut text = serde_json::Deserializer::from_str(r#"{"items": [{"sku": "A"}]}"#);
        let err = serde_path_to_error::deserialize::<_, Lines>(&mut text).unwrap_err();
        let errors = shape_error(&err);
        assert_eq!(errors.0[0].field, "items[0].quantity");
        assert_eq!(errors.0[0].message, "is required");

        let mut text = serde_json::Deserializer::from_str(r#"{"items": 3}"#);
        let err = serde_path_to_error::deserialize::<_, Lines>(&mut text).unwrap_err();
        let errors = shape_error(&err);
        assert_eq!(errors.0[0].field, "items");
        assert!(!errors.0[0].message.contains(" at line "), "{errors:?}");
        assert!(errors.0[0].message.contains("invalid type"), "{errors:?}");
    }
}
