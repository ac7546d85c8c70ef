//! Account rules: registration, login, profile, admin creation, token verification.

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    db::UnitOfWork,
    error::AppError,
    events::{DomainEvent, EventBus},
    queue::Outbox,
    users::{
        events::UserEvent,
        model::{Actor, DisplayName, Email, Password, Role, User},
        password,
        repository::CachedUserRepository,
        token::{AccessToken, TokenIssuer},
    },
};

/// The one message for every failed login, whether or not the account exists.
const BAD_CREDENTIALS: &str = "invalid email or password";

/// Accounts.
#[derive(Debug, Clone)]
pub struct UserService {
    pool: PgPool,
    users: CachedUserRepository,
    tokens: TokenIssuer,
    events: EventBus,
    outbox: Outbox,
}

impl UserService {
    /// Wires the service.
    pub fn new(
        pool: PgPool,
        users: CachedUserRepository,
        tokens: TokenIssuer,
        events: EventBus,
        outbox: Outbox,
    ) -> Self {
        Self {
            pool,
            users,
            tokens,
            events,
            outbox,
        }
    }

    /// Creates a customer account; 409 if the email is taken. Publishes `user.registered`.
    #[tracing::instrument(skip_all)]
    pub async fn register(
        &self,
        email: Email,
        password: Password,
        name: DisplayName,
    ) -> Result<User, AppError> {
        let hash = password::hash(password).await?;
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        let user = self
            .users
            .uncached()
            .insert(
                uow.conn(),
                email.as_str(),
                name.as_str(),
                &hash,
                Role::Customer,
            )
            .await?;
        self.events
            .publish(
                &mut uow,
                DomainEvent::User(UserEvent::Registered { user_id: user.id }),
            )
            .await?;
        self.outbox.commit(uow).await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(user)
    }

    /// Checks credentials and issues an access token. Every failure is the same 401, and an
    /// unknown email costs as much time as a wrong password.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, email: &str, password: String) -> Result<AccessToken, AppError> {
        let found = match Email::parse(email) {
            Ok(email) => {
                self.users
                    .uncached()
                    .find_with_hash_by_email(&self.pool, email.as_str())
                    .await?
            }
            Err(_) => None,
        };
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, password::dummy_hash().to_owned()),
        };
        let matches = password::verify(password, hash).await?;
        match user {
            Some(user) if matches => self.tokens.issue(&user),
            _ => Err(AppError::unauthorized(BAD_CREDENTIALS)),
        }
    }

    /// The caller's profile (served from the cache when possible).
    #[tracing::instrument(skip(self))]
    pub async fn profile(&self, user_id: Uuid) -> Result<User, AppError> {
        self.users
            .find_by_id(&self.pool, user_id)
            .await?
            .ok_or_else(|| AppError::unauthorized("account no longer exists"))
    }

    /// A user by id, for system use (job handlers).
    pub async fn find(&self, user_id: Uuid) -> Result<Option<User>, AppError> {
        self.users.find_by_id(&self.pool, user_id).await
    }

    /// Verifies a bearer token; the actor's role is the one in the token (a role change takes
    /// effect at the next login, or when the token expires).
    pub fn authenticate(&self, token: &str) -> Result<Actor, AppError> {
        let claims = self.tokens.verify(token)?;
        Ok(Actor {
            user_id: claims.sub,
            role: claims.role,
        })
    }

    /// Creates an admin, or makes an existing account an admin with the given password.
    /// Returns the user and whether it was created.
    #[tracing::instrument(skip_all)]
    pub async fn create_admin(
        &self,
        email: Email,
        password: Password,
        name: DisplayName,
    ) -> Result<(User, bool), AppError> {
        let hash = password::hash(password).await?;
        let existing = self
            .users
            .uncached()
            .find_with_hash_by_email(&self.pool, email.as_str())
            .await?;
        let result = match existing {
            Some((user, _)) => {
                let user = self
                    .users
                    .uncached()
                    .update_role_and_password(&self.pool, user.id, Role::Admin, &hash)
                    .await?;
                (user, false)
            }
            None => {
                let user = self
                    .users
                    .uncached()
                    .insert(
                        &self.pool,
                        email.as_str(),
                        name.as_str(),
                        &hash,
                        Role::Admin,
                    )
                    .await?;
                (user, true)
            }
        };
        self.users.invalidate(result.0.id).await;
        Ok(result)
    }
}
