//! SQL for users, and the cached profile read.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{
    cache::Cache,
    error::{AppError, ResultExt},
    users::model::{Role, User},
};

const USER_COLUMNS: &str = "id, email, name, role, created_at, updated_at";

/// Users and their password hashes in PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserRepository;

impl UserRepository {
    /// Inserts a user; a taken email is a 409.
    #[tracing::instrument(skip_all)]
    pub async fn insert<'e>(
        &self,
        db: impl PgExecutor<'e>,
        email: &str,
        name: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<User, AppError> {
        sqlx::query_as::<_, User>(&format!(
            "insert into users (id, email, name, password_hash, role) values ($1, $2, $3, $4, $5) \
             returning {USER_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(email)
        .bind(name)
        .bind(password_hash)
        .bind(role)
        .fetch_one(db)
        .await
        .on_constraint("users_email_key", |_| {
            AppError::conflict("email already registered")
        })
    }

    /// A user by id.
    #[tracing::instrument(skip_all)]
    pub async fn find_by_id<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<User>, AppError> {
        Ok(
            sqlx::query_as::<_, User>(&format!("select {USER_COLUMNS} from users where id = $1"))
                .bind(id)
                .fetch_optional(db)
                .await?,
        )
    }

    /// A user and their password hash by (lowercased) email.
    #[tracing::instrument(skip_all)]
    pub async fn find_with_hash_by_email<'e>(
        &self,
        db: impl PgExecutor<'e>,
        email: &str,
    ) -> Result<Option<(User, String)>, AppError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            user: User,
            password_hash: String,
        }
        let row = sqlx::query_as::<_, Row>(&format!(
            "select {USER_COLUMNS}, password_hash from users where lower(email) = lower($1)"
        ))
        .bind(email)
        .fetch_optional(db)
        .await?;
        Ok(row.map(|r| (r.user, r.password_hash)))
    }

    /// Sets role and password of an existing user (admin promotion).
    #[tracing::instrument(skip_all)]
    pub async fn update_role_and_password<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
        role: Role,
        password_hash: &str,
    ) -> Result<User, AppError> {
        Ok(sqlx::query_as::<_, User>(&format!(
            "update users set role = $2, password_hash = $3 where id = $1 returning {USER_COLUMNS}"
        ))
        .bind(id)
        .bind(role)
        .bind(password_hash)
        .fetch_one(db)
        .await?)
    }
}

/// [`UserRepository`] with profile reads served from Redis and invalidated on change.
#[derive(Debug, Clone)]
pub struct CachedUserRepository {
    inner: UserRepository,
    cache: Cache,
    ttl: std::time::Duration,
}

impl CachedUserRepository {
    /// Wraps the repository with `cache`, entries living `ttl`.
    pub fn new(cache: Cache, ttl: std::time::Duration) -> Self {
        Self {
            inner: UserRepository,
            cache,
            ttl,
        }
    }

    /// The SQL repository underneath, for writes and uncached reads.
    pub fn uncached(&self) -> &UserRepository {
        &self.inner
    }

    /// Cache key of a user's profile.
    pub fn key(id: Uuid) -> String {
        format!("user:{id}")
    }

    /// A user by id, from Redis when cached.
    pub async fn find_by_id<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<User>, AppError> {
        if let Some(user) = self.cache.get::<User>(&Self::key(id)).await {
            return Ok(Some(user));
        }
        let user = self.inner.find_by_id(db, id).await?;
        if let Some(user) = &user {
            self.cache.set(&Self::key(id), user, self.ttl).await;
        }
        Ok(user)
    }

    /// Drops a cached profile after a change has committed.
    pub async fn invalidate(&self, id: Uuid) {
        self.cache.invalidate(&[Self::key(id)]).await;
    }
}
