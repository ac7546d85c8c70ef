//! SQL for users, and the cached profile read.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    cache::Cache,
    error::{AppError, ResultExt},
    users::model::{Role, User},
};

/// A user as a login sees it: with the password hash and the token generation.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The account.
    pub user: User,
    /// Its argon2 hash.
    pub password_hash: String,
    /// Stamped into every token issued now (see `Claims::generation`).
    pub token_generation: i32,
}

/// A `users` row as the credential reads select it, flat for `query_as!`.
struct CredentialsRow {
    id: Uuid,
    email: String,
    name: String,
    role: Role,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    password_hash: String,
    token_generation: i32,
}

impl From<CredentialsRow> for Credentials {
    fn from(r: CredentialsRow) -> Self {
        Self {
            user: User {
                id: r.id,
                email: r.email,
                name: r.name,
                role: r.role,
                created_at: r.created_at,
                updated_at: r.updated_at,
            },
            password_hash: r.password_hash,
            token_generation: r.token_generation,
        }
    }
}

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
        sqlx::query_as!(
            User,
            r#"insert into users (id, email, name, password_hash, role) values ($1, $2, $3, $4, $5)
               returning id, email, name, role as "role: Role", created_at, updated_at"#,
            Uuid::now_v7(),
            email,
            name,
            password_hash,
            role.as_str(),
        )
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
        Ok(sqlx::query_as!(
            User,
            r#"select id, email, name, role as "role: Role", created_at, updated_at
               from users where id = $1"#,
            id,
        )
        .fetch_optional(db)
        .await?)
    }

    /// A user with their password hash and token generation, by (lowercased) email: what a
    /// login needs, in one statement.
    #[tracing::instrument(skip_all)]
    pub async fn find_credentials_by_email<'e>(
        &self,
        db: impl PgExecutor<'e>,
        email: &str,
    ) -> Result<Option<Credentials>, AppError> {
        let row = sqlx::query_as!(
            CredentialsRow,
            r#"select id, email, name, role as "role: Role", created_at, updated_at,
                      password_hash, token_generation
               from users where lower(email) = lower($1)"#,
            email,
        )
        .fetch_optional(db)
        .await?;
        Ok(row.map(Into::into))
    }

    /// The same by id (a password change checks the current password).
    #[tracing::instrument(skip_all)]
    pub async fn find_credentials_by_id<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<Credentials>, AppError> {
        let row = sqlx::query_as!(
            CredentialsRow,
            r#"select id, email, name, role as "role: Role", created_at, updated_at,
                      password_hash, token_generation
               from users where id = $1"#,
            id,
        )
        .fetch_optional(db)
        .await?;
        Ok(row.map(Into::into))
    }

    /// A user's current token generation (`None` if the user is gone).
    #[tracing::instrument(skip_all)]
    pub async fn token_generation<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<i32>, AppError> {
        Ok(
            sqlx::query_scalar!("select token_generation from users where id = $1", id,)
                .fetch_optional(db)
                .await?,
        )
    }

    /// Moves a user's token generation on (every token issued before is refused from now on)
    /// and returns the new one.
    #[tracing::instrument(skip_all)]
    pub async fn next_token_generation<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<i32, AppError> {
        sqlx::query_scalar!(
            "update users set token_generation = token_generation + 1 where id = $1 \
             returning token_generation",
            id,
        )
        .fetch_optional(db)
        .await?
        .ok_or_else(|| AppError::not_found("user not found"))
    }

    /// Sets a user's password hash.
    #[tracing::instrument(skip_all)]
    pub async fn update_password<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
        password_hash: &str,
    ) -> Result<(), AppError> {
        sqlx::query!(
            "update users set password_hash = $2 where id = $1",
            id,
            password_hash,
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Sets a user's role; `None` if there is no such user or the role is already `role`.
    #[tracing::instrument(skip_all)]
    pub async fn update_role<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
        role: Role,
    ) -> Result<Option<User>, AppError> {
        Ok(sqlx::query_as!(
            User,
            r#"update users set role = $2 where id = $1 and role <> $2
               returning id, email, name, role as "role: Role", created_at, updated_at"#,
            id,
            role.as_str(),
        )
        .fetch_optional(db)
        .await?)
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
        Ok(sqlx::query_as!(
            User,
            r#"update users set role = $2, password_hash = $3 where id = $1
               returning id, email, name, role as "role: Role", created_at, updated_at"#,
            id,
            role.as_str(),
            password_hash,
        )
        .fetch_one(db)
        .await?)
    }
}

/// A write to a user's profile made inside a transaction: hand it to
/// [`CachedUserRepository::committed`] once the transaction commits (dropping it after a
/// rollback is right: nothing changed).
#[derive(Debug)]
#[must_use = "hand it to CachedUserRepository::committed after the commit"]
pub struct ProfileChange(Uuid);

/// [`UserRepository`] with profile reads served from Redis and invalidated on change, and the
/// only way services reach users: it owns every cache update.
///
/// Writes that commit on their own (on the pool) invalidate the cached profile before they
/// return. Writes inside the caller's transaction cannot (a reader could cache the old row again
/// before the commit), so those that change the profile return a [`ProfileChange`] for the
/// caller to hand to [`Self::committed`] after its commit. Credentials and token generations
/// are never cached: logins and revocation checks read them from PostgreSQL.
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

    /// A user by id, read from PostgreSQL (never the cache).
    pub async fn find_by_id_uncached<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<User>, AppError> {
        self.inner.find_by_id(db, id).await
    }

    /// See [`UserRepository::find_credentials_by_email`] (uncached).
    pub async fn find_credentials_by_email<'e>(
        &self,
        db: impl PgExecutor<'e>,
        email: &str,
    ) -> Result<Option<Credentials>, AppError> {
        self.inner.find_credentials_by_email(db, email).await
    }

    /// See [`UserRepository::find_credentials_by_id`] (uncached).
    pub async fn find_credentials_by_id<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<Credentials>, AppError> {
        self.inner.find_credentials_by_id(db, id).await
    }

    /// See [`UserRepository::token_generation`] (uncached).
    pub async fn token_generation<'e>(
        &self,
        db: impl PgExecutor<'e>,
        id: Uuid,
    ) -> Result<Option<i32>, AppError> {
        self.inner.token_generation(db, id).await
    }

    /// Inserts a user inside the caller's transaction; a taken email is a 409. A new user has
    /// no cached profile, so there is nothing to hand back.
    pub async fn insert(
        &self,
        conn: &mut PgConnection,
        email: &str,
        name: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<User, AppError> {
        self.inner
            .insert(conn, email, name, password_hash, role)
            .await
    }

    /// Inserts a user in its own (autocommit) statement; a taken email is a 409. Then drops
    /// any cached profile under its id.
    pub async fn create(
        &self,
        pool: &PgPool,
        email: &str,
        name: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<User, AppError> {
        let user = self
            .inner
            .insert(pool, email, name, password_hash, role)
            .await?;
        self.invalidate(user.id).await;
        Ok(user)
    }

    /// See [`UserRepository::next_token_generation`], inside the caller's transaction (the
    /// generation is not part of the cached profile).
    pub async fn next_token_generation(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<i32, AppError> {
        self.inner.next_token_generation(conn, id).await
    }

    /// Sets a user's password hash inside the caller's transaction (the hash is not part of
    /// the cached profile).
    pub async fn update_password(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        password_hash: &str,
    ) -> Result<(), AppError> {
        self.inner.update_password(conn, id, password_hash).await
    }

    /// Sets a user's role inside the caller's transaction; `None` if there is no such user or
    /// the role is already `role`.
    pub async fn update_role(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        role: Role,
    ) -> Result<Option<(User, ProfileChange)>, AppError> {
        Ok(self
            .inner
            .update_role(conn, id, role)
            .await?
            .map(|user| (user, ProfileChange(id))))
    }

    /// Sets role and password of an existing user inside the caller's transaction (admin
    /// promotion).
    pub async fn update_role_and_password(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        role: Role,
        password_hash: &str,
    ) -> Result<(User, ProfileChange), AppError> {
        let user = self
            .inner
            .update_role_and_password(conn, id, role, password_hash)
            .await?;
        Ok((user, ProfileChange(id)))
    }

    /// After the transaction that made `change` committed: drops the cached profile, so the
    /// next read loads the committed row.
    pub async fn committed(&self, change: ProfileChange) {
        self.invalidate(change.0).await;
    }

    /// Drops a cached profile.
    async fn invalidate(&self, id: Uuid) {
        self.cache.invalidate(&[Self::key(id)]).await;
    }
}
