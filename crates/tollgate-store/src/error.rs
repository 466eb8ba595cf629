use tollgate_domain::Invalid;

/// What the store reports. `NotFound` and `Conflict` carry a message safe to
/// show to the caller; `Database` is an internal failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is not valid: {0}")]
    Corrupt(#[from] Invalid),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        StoreError::NotFound(what.into())
    }

    /// Turns a unique-key violation into a `Conflict` with `message`.
    pub(crate) fn unique_as(message: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message.into()),
            _ => StoreError::Database(e),
        }
    }
}
