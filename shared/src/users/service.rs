//! Account rules: registration, login, sessions (refresh, logout), profile, password and role
//! changes, admin creation, token verification.
//!
//! Tokens stop counting at once when they should: a logout ends its session, a password or role
//! change moves the user's token generation on (every earlier token of the user is refused), and
//! a replayed refresh token ends its whole session. `authenticate` checks all of that in one
//! Redis round trip (`revocation`); PostgreSQL holds the record and answers when Redis cannot.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::AppError,
    events::{DomainEvent, EventBus},
    queue::Outbox,
    queue::UnitOfWork,
    users::{
        events::UserEvent,
        model::{Actor, DisplayName, Email, Password, Role, User},
        password,
        repository::CachedUserRepository,
        revocation::{Revocations, Source},
        sessions::{IssuedRefreshToken, PresentedRefreshToken, Rotation, Scope, SessionRepository},
        token::{AccessToken, Claims, TokenIssuer},
    },
};

/// What a login or a refresh hands the client: a short-lived access token and the refresh token
/// that renews it.
#[derive(Debug, Clone)]
pub struct SessionTokens {
    /// The bearer token.
    pub access: AccessToken,
    /// The refresh token (rotated on every use).
    pub refresh: IssuedRefreshToken,
}

/// The one message for every failed login, whether or not the account exists.
const BAD_CREDENTIALS: &str = "invalid email or password";

/// Accounts: registration, logins and sessions, password and role changes, and the check of every bearer token.
#[derive(Debug, Clone)]
pub struct UserService {
    pool: PgPool,
    users: CachedUserRepository,
    tokens: TokenIssuer,
    events: EventBus,
    outbox: Outbox,
    sessions: SessionRepository,
    revocations: Revocations,
    refresh_ttl: Duration,
    /// Failed-login budget per account (off unless set with [`Self::with_login_throttle`]).
    login_throttle: crate::users::login_throttle::LoginThrottle,
}

impl UserService {
    /// Wires the service; refresh tokens live `refresh_ttl`.
    pub fn new(
        pool: PgPool,
        users: CachedUserRepository,
        tokens: TokenIssuer,
        revocations: Revocations,
        refresh_ttl: Duration,
        events: EventBus,
        outbox: Outbox,
    ) -> Self {
        Self {
            pool,
            users,
            tokens,
            events,
            outbox,
            sessions: SessionRepository,
            revocations,
            refresh_ttl,
            login_throttle: crate::users::login_throttle::LoginThrottle::disabled(),
        }
    }

    /// The same service, counting failed logins per account with `throttle`.
    pub fn with_login_throttle(
        mut self,
        throttle: crate::users::login_throttle::LoginThrottle,
    ) -> Self {
        self.login_throttle = throttle;
        self
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

    /// Checks credentials and starts a session: an access token and a refresh token. Every
    /// failure is the same 401, and an
    /// unknown email costs as much time as a wrong password. Each attempt first spends one of
    /// the account's login attempts (429 once they are spent, before any password work, whether
    /// or not the account exists); a successful login gives them back.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, email: &str, password: String) -> Result<SessionTokens, AppError> {
        let account = self.login_throttle.attempt(email).await?;
        let found = match Email::parse(email) {
            Ok(email) => {
                self.users
                    .find_credentials_by_email(&self.pool, email.as_str())
                    .await?
            }
            Err(_) => None,
        };
        let hash = found
            .as_ref()
            .map(|c| c.password_hash.clone())
            .unwrap_or_else(|| password::dummy_hash().to_owned());
        let matches = password::verify(password, hash).await?;
        match found {
            Some(credentials) if matches => {
                self.login_throttle.succeeded(&account).await;
                self.start_session(&credentials.user, credentials.token_generation)
                    .await
            }
            _ => Err(AppError::unauthorized(BAD_CREDENTIALS)),
        }
    }

    /// A new session for `user`: its first refresh token and an access token.
    async fn start_session(&self, user: &User, generation: i32) -> Result<SessionTokens, AppError> {
        let refresh = self
            .sessions
            .issue(&self.pool, user.id, Uuid::new_v4(), self.refresh_ttl)
            .await?;
        let access = self.tokens.issue(user, refresh.session, generation)?;
        Ok(SessionTokens { access, refresh })
    }

    /// Exchanges a refresh token for a new access token and a new refresh token in the same
    /// session. A token that was already exchanged ends the whole session (the newest token
    /// included) and is refused: someone else holds a copy.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, presented: &str) -> Result<SessionTokens, AppError> {
        let presented = PresentedRefreshToken::parse(presented)?;
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        let refused = || AppError::unauthorized("invalid or expired refresh token");
        match self.sessions.rotate(uow.conn(), &presented).await? {
            Rotation::Refused => Err(refused()),
            Rotation::Replayed { user_id, session } => {
                self.sessions
                    .revoke(uow.conn(), Scope::Session(session))
                    .await?;
                uow.commit().await?;
                self.announce_ended(user_id, &[session]).await;
                tracing::warn!(%user_id, %session, "refresh token replayed; session revoked");
                Err(refused())
            }
            Rotation::Rotated { user_id, session } => {
                let credentials = self
                    .users
                    .find_credentials_by_id(uow.conn(), user_id)
                    .await?
                    .ok_or_else(refused)?;
                let refresh = self
                    .sessions
                    .issue(uow.conn(), user_id, session, self.refresh_ttl)
                    .await?;
                let access =
                    self.tokens
                        .issue(&credentials.user, session, credentials.token_generation)?;
                uow.commit().await?;
                Ok(SessionTokens { access, refresh })
            }
        }
    }

    /// Ends the session a token belongs to: that token, every other access token of the
    /// session and its refresh token stop working everywhere.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, claims: &Claims) -> Result<(), AppError> {
        self.sessions
            .revoke(&self.pool, Scope::Session(claims.sid))
            .await?;
        self.announce_ended(claims.sub, &[claims.sid]).await;
        Ok(())
    }

    /// Changes the caller's password after checking the current one (each check spends one of
    /// the account's login attempts). Every token the user holds, in every session, is revoked:
    /// the client logs in again with the new password.
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current: String,
        new: Password,
    ) -> Result<(), AppError> {
        let credentials = self
            .users
            .find_credentials_by_id(&self.pool, user_id)
            .await?
            .ok_or_else(|| AppError::unauthorized("account no longer exists"))?;
        // The same attempt budget as logins: a stolen access token must not become a way to
        // guess the password at the general request rate.
        let account = self.login_throttle.attempt(&credentials.user.email).await?;
        if !password::verify(current, credentials.password_hash).await? {
            return Err(AppError::invalid_field(
                "current_password",
                "is not your current password",
            ));
        }
        self.login_throttle.succeeded(&account).await;
        let hash = password::hash(new).await?;
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        self.users
            .update_password(uow.conn(), user_id, &hash)
            .await?;
        let generation = self.revoke_all_in(&mut uow, user_id).await?;
        uow.commit().await?;
        self.announce_generation(user_id, generation).await;
        tracing::info!("password changed; every earlier token revoked");
        Ok(())
    }

    /// Gives a user another role (admins only). Every token the user holds is revoked, so the
    /// new role applies from their next login and the old one nowhere.
    #[tracing::instrument(skip_all, fields(user_id = %user_id, role = role.as_str()))]
    pub async fn change_role(
        &self,
        actor: &Actor,
        user_id: Uuid,
        role: Role,
    ) -> Result<User, AppError> {
        if !actor.is_admin() {
            return Err(AppError::forbidden("admin role required"));
        }
        if actor.user_id == user_id && role != Role::Admin {
            return Err(AppError::conflict(
                "admins cannot remove their own admin role; ask another admin",
            ));
        }
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        let Some((user, change)) = self.users.update_role(uow.conn(), user_id, role).await? else {
            // Nothing changed (or there is no such user): no token needs to go.
            drop(uow);
            return self
                .users
                .find_by_id_uncached(&self.pool, user_id)
                .await?
                .ok_or_else(|| AppError::not_found("user not found"));
        };
        let generation = self.revoke_all_in(&mut uow, user_id).await?;
        uow.commit().await?;
        self.users.committed(change).await;
        self.announce_generation(user_id, generation).await;
        tracing::info!("role changed; every earlier token revoked");
        Ok(user)
    }

    /// Inside a unit of work: moves the user's token generation on and revokes every refresh
    /// token. Returns the new generation, to announce once committed.
    async fn revoke_all_in(
        &self,
        uow: &mut UnitOfWork<'_>,
        user_id: Uuid,
    ) -> Result<i32, AppError> {
        let generation = self
            .users
            .next_token_generation(uow.conn(), user_id)
            .await?;
        self.sessions
            .revoke(uow.conn(), Scope::User(user_id))
            .await?;
        Ok(generation)
    }

    /// Tells every api instance (through Redis) about a committed generation. If Redis cannot
    /// be told, the failure is logged: earlier access tokens then pass the Redis check until they
    /// expire (at most `JWT_TTL_SECS`), while their refresh tokens are already dead.
    async fn announce_generation(&self, user_id: Uuid, generation: i32) {
        if let Err(error) = self
            .revocations
            .record_generation(user_id, generation, Source::Committed)
            .await
        {
            tracing::error!(%error, %user_id, "could not record the token generation in Redis");
        }
    }

    /// Tells every api instance about sessions ended in PostgreSQL.
    async fn announce_ended(&self, user_id: Uuid, sessions: &[Uuid]) {
        if let Err(error) = self
            .revocations
            .end_sessions(user_id, sessions, self.tokens.ttl())
            .await
        {
            tracing::error!(%error, %user_id, "could not record ended sessions in Redis");
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

    /// Verifies a bearer token and checks it was not revoked; the actor's role is the one in
    /// the token (a role change revokes the user's earlier tokens, so it is current).
    pub async fn authenticate(&self, token: &str) -> Result<Actor, AppError> {
        let claims = self.claims(token).await?;
        Ok(Actor {
            user_id: claims.sub,
            role: claims.role,
        })
    }

    /// [`Self::authenticate`] returning all the claims (logout needs the session, the dashboard
    /// binds its CSRF token to the `jti`).
    pub async fn claims(&self, token: &str) -> Result<Claims, AppError> {
        let claims = self.tokens.verify(token)?;
        let revoked = || AppError::unauthorized("invalid or expired token");
        let state = match self.revocations.state(claims.sub, claims.sid).await {
            Ok(state) => state,
            Err(error) => {
                // Redis is out of reach: PostgreSQL, the record, answers instead (slower, but an
                // outage of Redis neither lets revoked tokens in nor locks everyone out).
                tracing::warn!(%error, "revocation check falls back to PostgreSQL");
                return match self.revocation_from_database(&claims).await? {
                    true => Err(revoked()),
                    false => Ok(claims),
                };
            }
        };
        if state.session_revoked {
            return Err(revoked());
        }
        let current = match state.generation {
            Some(generation) => generation,
            None => {
                // First check for this user since Redis started: copy the record over, with
                // the sessions that ended recently enough to have live access tokens.
                if self.revocation_from_database(&claims).await? {
                    return Err(revoked());
                }
                return Ok(claims);
            }
        };
        if claims.generation < current {
            return Err(revoked());
        }
        Ok(claims)
    }

    /// Whether PostgreSQL says `claims` are revoked; copies what it finds into Redis.
    async fn revocation_from_database(&self, claims: &Claims) -> Result<bool, AppError> {
        let Some(generation) = self.users.token_generation(&self.pool, claims.sub).await? else {
            return Ok(true);
        };
        let since = chrono::Utc::now()
            - chrono::Duration::from_std(self.tokens.ttl()).unwrap_or(chrono::Duration::MAX);
        let ended = self
            .sessions
            .revoked_since(&self.pool, claims.sub, since)
            .await?;
        // Best effort: if Redis is down this fails too, and the next check asks again.
        let _ = self
            .revocations
            .record_generation(claims.sub, generation, Source::Read)
            .await;
        self.announce_ended(claims.sub, &ended).await;
        Ok(claims.generation < generation || ended.contains(&claims.sid))
    }

    /// Checks only a token's signature and claims, without asking whether it was revoked: for
    /// choosing a rate-limit budget, never for letting a request in.
    pub fn verify_signature(&self, token: &str) -> Result<Actor, AppError> {
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
            .find_credentials_by_email(&self.pool, email.as_str())
            .await?;
        let result = match existing {
            Some(credentials) => {
                // A new password and maybe a new role: every earlier token goes.
                let mut uow = UnitOfWork::begin(&self.pool).await?;
                let (user, change) = self
                    .users
                    .update_role_and_password(uow.conn(), credentials.user.id, Role::Admin, &hash)
                    .await?;
                let generation = self.revoke_all_in(&mut uow, user.id).await?;
                uow.commit().await?;
                self.announce_generation(user.id, generation).await;
                self.users.committed(change).await;
                (user, false)
            }
            None => {
                // Commits on its own and leaves the cache clean.
                let user = self
                    .users
                    .create(
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
        Ok(result)
    }
}
