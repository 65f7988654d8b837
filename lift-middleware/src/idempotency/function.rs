//! Idempotency for any computation inside a handler, not only for whole handlers: the
//! counterpart of Powertools' `idempotent_function`.

use std::future::Future;
use std::sync::Arc;

use lift_core::{BoxError, Context, Error};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::store::Record;
use super::{
    IdempotencyConfig, KeySource, Shared, Turn, fields_material, lock_for, scope_parts,
    scoped_hash, sha256_hex,
};

/// Runs computations at most once per idempotency key, where the key comes from a value
/// the caller passes: a charge inside an order handler, one step of a batch record.
///
/// Made from the same [`IdempotencyConfig`] and table as [`IdempotencyLayer`]
/// (`IdempotencyLayer::function` shares its store). The key hashes the whole payload, or
/// the fields [`key_fields`](super::IdempotencyConfigBuilder::key_fields) names in its JSON
/// form; a [`key_fn`](super::IdempotencyConfigBuilder::key_fn) of the request does not
/// apply here and the whole payload is used. The record's id is
/// `{function name}.{name}#{hash}` and its `data` is the JSON of the value, as Powertools
/// stores a function's result. Payload validation, expiry, waiting for a call in progress
/// and the lock lasting the invocation's remaining time work as for handlers; the local
/// cache keeps completed values.
///
/// [`IdempotencyLayer`]: super::IdempotencyLayer
///
/// ```no_run
/// use lift_core::{Context, Json, Result};
/// use lift_middleware::idempotency::{IdempotencyConfig, Idempotent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize)]
/// struct Charge<'a> {
///     order_id: &'a str,
///     cents: u64,
/// }
///
/// #[derive(Serialize, Deserialize)]
/// struct Receipt {
///     id: String,
/// }
///
/// async fn charge(charge: &Charge<'_>) -> std::result::Result<Receipt, std::io::Error> {
///     Ok(Receipt { id: format!("r-{}", charge.order_id) })
/// }
///
/// async fn place(idempotent: Idempotent, ctx: Context) -> Result<Json<Receipt>> {
///     let request = Charge { order_id: "o-1", cents: 1250 };
///     let receipt = idempotent.run(&ctx, "charge", &request, || charge(&request)).await?;
///     Ok(Json(receipt))
/// }
///
/// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
/// let config = IdempotencyConfig::builder("idempotency")
///     .key_fields(&["/order_id"])
///     .validate_payload(true)
///     .build()?;
/// let idempotent = Idempotent::new(client, config);
/// # let _ = idempotent;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Idempotent {
    shared: Arc<Shared>,
    values: Option<moka::sync::Cache<String, Arc<Record>>>,
}

impl std::fmt::Debug for Idempotent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotent")
            .field("config", &self.shared.config)
            .finish()
    }
}

/// Why an idempotent computation gave no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotentError<E> {
    /// Another call with this key is running (and did not finish within
    /// [`wait_for_in_progress`](super::IdempotencyConfigBuilder::wait_for_in_progress)).
    #[error("the same computation is already in progress; retry later")]
    InProgress,
    /// The key was used before with a different payload (with
    /// [`validate_payload`](super::IdempotencyConfigBuilder::validate_payload)).
    #[error("this idempotency key was used with a different payload")]
    KeyReused,
    /// The idempotency store failed, or its record does not decode as the value's type;
    /// the computation did not run.
    #[error("the idempotency store failed")]
    Store(#[source] Error),
    /// The computation failed; its key was released, so a retry runs it again.
    #[error(transparent)]
    Failed(E),
}

impl<E: Into<BoxError>> From<IdempotentError<E>> for Error {
    /// `409 idempotency_in_progress`, `422 idempotency_key_reused`, a 500 for the store,
    /// and the computation's own error as [`Error::from_boxed`] maps it.
    fn from(error: IdempotentError<E>) -> Self {
        match error {
            IdempotentError::InProgress => super::in_progress_error(),
            IdempotentError::KeyReused => super::key_reused_error(),
            IdempotentError::Store(error) => error,
            IdempotentError::Failed(error) => Error::from_boxed(error.into()),
        }
    }
}

impl Idempotent {
    /// Idempotent computations through `client`, with `config`'s table and settings.
    pub fn new(client: aws_sdk_dynamodb::Client, config: IdempotencyConfig) -> Self {
        Self::from_shared(Arc::new(Shared::new(client, config)))
    }

    pub(super) fn from_shared(shared: Arc<Shared>) -> Self {
        let values = (shared.config.local_cache > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(shared.config.local_cache)
                .time_to_live(shared.config.expires_after)
                .build()
        });
        Idempotent { shared, values }
    }

    /// Runs `compute` unless a call with the same `name` and payload key already did, in
    /// which case its stored value is returned instead. A payload without the configured
    /// key fields has no key: `compute` just runs.
    ///
    /// # Errors
    /// [`IdempotentError`]: a call in progress, a reused key, a store failure (before the
    /// computation runs, or when its value cannot be stored), or the computation's error.
    pub async fn run<P, T, E, F, Fut>(
        &self,
        ctx: &Context,
        name: &str,
        payload: &P,
        compute: F,
    ) -> Result<T, IdempotentError<E>>
    where
        P: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let shared = &self.shared;
        let Some((key, validation)) = self.key(ctx, name, payload)? else {
            // No key (none of the key's fields is in the payload): nothing to dedupe by.
            return compute().await.map_err(IdempotentError::Failed);
        };
        if let Some(record) = self.values.as_ref().and_then(|c| c.get(&key))
            && !record.expired(shared.config.now())
        {
            return self.stored(&record, &validation);
        }
        let lock_for = lock_for(ctx);
        let held = match shared
            .turn(&key, &validation, lock_for)
            .await
            .map_err(IdempotentError::Store)?
        {
            Turn::Run(held) => held,
            Turn::Answer(record) => return self.stored(&record, &validation),
            Turn::Busy => return Err(IdempotentError::InProgress),
        };
        // `held` releases the key however this future ends before it completes or releases
        // it: a timeout around the handler, or a panic in the computation.
        let value = match compute().await {
            Ok(value) => value,
            Err(error) => {
                held.release(ctx.deadline()).await;
                return Err(IdempotentError::Failed(error));
            }
        };
        let data = match serde_json::to_string(&value) {
            Ok(data) => data,
            Err(e) => {
                held.release(ctx.deadline()).await;
                return Err(IdempotentError::Store(Error::internal(format!(
                    "the value of `{name}` does not serialize: {e}"
                ))));
            }
        };
        let record = Record {
            id: key.clone(),
            completed: true,
            expiration: (shared.config.now() + shared.config.expires_after).as_secs(),
            in_progress_expiration: None,
            data: Some(data),
            validation: Some(validation),
        };
        if held.finish(&record, ctx.deadline()).await
            && let Some(values) = &self.values
        {
            values.insert(key, Arc::new(record));
        }
        Ok(value)
    }

    /// The record id and the payload hash; `None` when the payload has none of the key's
    /// fields.
    fn key<P: Serialize + ?Sized, E>(
        &self,
        ctx: &Context,
        name: &str,
        payload: &P,
    ) -> Result<Option<(String, String)>, IdempotentError<E>> {
        let serialize = |e: serde_json::Error| {
            IdempotentError::Store(Error::internal(format!(
                "the payload of `{name}` does not serialize: {e}"
            )))
        };
        let bytes = serde_json::to_vec(payload).map_err(serialize)?;
        let material = match &self.shared.config.key {
            KeySource::Fields(pointers) => {
                let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(serialize)?;
                match fields_material(&value, pointers).map_err(serialize)? {
                    Some(material) => material,
                    None => return Ok(None),
                }
            }
            KeySource::Payload | KeySource::Header(_) | KeySource::Custom(_) => bytes.clone(),
        };
        let hash = scoped_hash(&scope_parts(&self.shared.config, ctx), &material);
        Ok(Some((
            format!("{}.{name}#{hash}", ctx.function_name()),
            sha256_hex(&bytes),
        )))
    }

    /// A completed record's value, checked against this call's payload when configured.
    fn stored<T: DeserializeOwned, E>(
        &self,
        record: &Record,
        validation: &str,
    ) -> Result<T, IdempotentError<E>> {
        if super::payload_differs(&self.shared, record, validation) {
            return Err(IdempotentError::KeyReused);
        }
        let data = record.data.as_deref().ok_or_else(|| {
            IdempotentError::Store(Error::internal("the idempotency record holds no value"))
        })?;
        serde_json::from_str(data).map_err(|e| {
            IdempotentError::Store(Error::internal(format!(
                "the stored value does not decode as this computation's type: {e}"
            )))
        })
    }
}
