//! `POST /auth/register` and `POST /auth/login`.

use std::sync::Arc;
use std::time::Duration;

use hivesync_core::Error;
use hivesync_core::auth::validate_new_password;
use hivesync_core::domain::{self, Email, NewUser};
use hivesync_core::ports::{Quota, RateDecision};
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::error::ApiError;
use super::middleware::client_ip;
use super::text::Text;
use super::views::UserView;
use crate::state::AppState;

#[derive(Tags)]
enum AuthTags {
    /// Registration and login.
    Auth,
}

/// A new account.
#[derive(Object)]
#[oai(deny_unknown_fields)]
struct RegisterRequest {
    /// The login e-mail address (compared case-insensitively): printable ASCII, one `@`, a
    /// domain with a dot (or `localhost`).
    #[oai(validator(
        max_length = 254,
        pattern = r"^\s*[!-?A-~]{1,64}@(localhost|[!-,/-?A-~][!-\-/-?A-~]*(\.[!-,/-?A-~][!-\-/-?A-~]*)+)\s*$"
    ))]
    email: Text,
    /// 8 to 256 characters.
    #[oai(validator(min_length = 8, max_length = 256))]
    password: Text,
    /// Up to 100 characters, not all spaces, no control characters; defaults to the part of the
    /// address before `@`.
    #[oai(validator(
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    ))]
    display_name: Option<Text>,
}

#[derive(Object)]
#[oai(deny_unknown_fields)]
struct LoginRequest {
    email: Text,
    password: Text,
}

/// An access token and the account it belongs to.
#[derive(Object)]
struct Session {
    /// Send as `Authorization: Bearer <access_token>`.
    access_token: String,
    /// Always `Bearer`.
    token_type: String,
    /// Seconds until the token expires.
    expires_in: u64,
    user: UserView,
}

#[derive(ApiResponse)]
enum RegisterResponse {
    /// The account was created; the caller is logged in.
    #[oai(status = 201)]
    Created(Json<Session>),
}

#[derive(ApiResponse)]
enum LoginResponse {
    /// Logged in.
    #[oai(status = 200)]
    Ok(Json<Session>),
}

#[derive(Debug)]
pub struct AuthApi {
    pub state: Arc<AppState>,
}

/// How long an address an account signed in from stays known to it.
const KNOWN_ADDRESS_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl AuthApi {
    /// The client's address, as the rate limits key it.
    fn client(&self, req: &Request) -> String {
        client_ip(req, self.state.config.http.trust_proxy_headers)
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }

    /// Counts one attempt against the client's address.
    async fn limit_client(&self, client: &str) -> Result<(), ApiError> {
        let state = &self.state;
        let decision = state
            .rate_limiter
            .check(&format!("auth:ip:{client}"), state.login_quota)
            .await?;
        refuse_unless_allowed(decision)
    }

    /// Whether `email` signed in from `client` within [`KNOWN_ADDRESS_TTL`]: a quota of one per
    /// that period, spent by [`AuthApi::remember_client`], is the marker (in the rate limiter, so
    /// every server replica shares it).
    async fn is_known_client(&self, email: &Email, client: &str) -> Result<bool, ApiError> {
        if client == "unknown" {
            return Ok(false);
        }
        let decision = self
            .state
            .rate_limiter
            .peek(&known_key(email, client), known_quota())
            .await?;
        Ok(!decision.allowed)
    }

    async fn remember_client(&self, email: &Email, client: &str) -> Result<(), ApiError> {
        if client != "unknown" {
            self.state
                .rate_limiter
                .check(&known_key(email, client), known_quota())
                .await?;
        }
        Ok(())
    }

    /// Refuses a login to an account that has had too many failed attempts, without counting
    /// this one: only failures count, so its owner's successful logins never lock it. From an
    /// address the account signed in from before, only that address's own failures count, so
    /// guesses spread over many other addresses never lock the owner out there.
    async fn ensure_account_open(
        &self,
        email: &Email,
        client: &str,
        known: bool,
    ) -> Result<(), ApiError> {
        let key = if known {
            pair_key(email, client)
        } else {
            account_key(email)
        };
        let decision = self
            .state
            .rate_limiter
            .peek(&key, self.state.login_quota)
            .await?;
        refuse_unless_allowed(decision)
    }

    /// Counts a failed login: against the address and account pair, and against the account as
    /// a whole unless the address is known to it.
    async fn count_failed_login(
        &self,
        email: &Email,
        client: &str,
        known: bool,
    ) -> Result<(), ApiError> {
        let limiter = &self.state.rate_limiter;
        limiter
            .check(&pair_key(email, client), self.state.login_quota)
            .await?;
        if !known {
            limiter
                .check(&account_key(email), self.state.login_quota)
                .await?;
        }
        Ok(())
    }

    fn session(&self, user: domain::User) -> Result<Session, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let access_token = self.state.jwt.issue(user.id, now)?;
        Ok(Session {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in: self.state.jwt.ttl().as_secs(),
            user: user.into(),
        })
    }
}

fn account_key(email: &Email) -> String {
    format!("auth:account:{email}")
}

fn pair_key(email: &Email, client: &str) -> String {
    format!("auth:account-ip:{email}:{client}")
}

fn known_key(email: &Email, client: &str) -> String {
    format!("auth:known:{email}:{client}")
}

fn known_quota() -> Quota {
    Quota {
        limit: 1,
        period: KNOWN_ADDRESS_TTL,
    }
}

fn refuse_unless_allowed(decision: RateDecision) -> Result<(), ApiError> {
    if decision.allowed {
        Ok(())
    } else {
        Err(Error::rate_limited(decision.retry_after).into())
    }
}

#[OpenApi(prefix_path = "/auth", tag = "AuthTags::Auth")]
impl AuthApi {
    /// Create an account
    ///
    /// Creates an account and logs it in. Rate limited per client address.
    #[oai(path = "/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        req: &Request,
        body: Json<RegisterRequest>,
    ) -> Result<RegisterResponse, ApiError> {
        let body = body.0;
        let client = self.client(req);
        self.limit_client(&client).await?;
        let email = Email::parse(body.email.as_str())?;
        validate_new_password(body.password.as_str())?;
        let display_name = match body.display_name {
            Some(name) => {
                domain::validate_name("display_name", name.as_str(), domain::DISPLAY_NAME_MAX)?
            }
            None => {
                let local = email.as_str().split('@').next().unwrap_or_default();
                domain::validate_name("display_name", local, domain::DISPLAY_NAME_MAX)?
            }
        };
        let password_hash = self.state.passwords.hash(body.password.as_str()).await?;
        let user = self
            .state
            .store
            .create_user(NewUser {
                email,
                display_name,
                password_hash,
            })
            .await?;
        tracing::info!(user_id = %user.id, "account created");
        self.remember_client(&user.email, &client).await?;
        Ok(RegisterResponse::Created(Json(self.session(user)?)))
    }

    /// Log in
    ///
    /// Exchanges an e-mail address and password for an access token. Rate limited per client
    /// address (every attempt counts) and per account (failed attempts count): past either limit
    /// the answer is 429 with `Retry-After`. From an address the account signed in from in the
    /// last 30 days, only that address's own failures count, so failures elsewhere never lock
    /// the owner out there.
    #[oai(path = "/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        req: &Request,
        body: Json<LoginRequest>,
    ) -> Result<LoginResponse, ApiError> {
        let body = body.0;
        let client = self.client(req);
        self.limit_client(&client).await?;
        let rejected = || ApiError::unauthorized("invalid email or password");
        let Ok(email) = Email::parse(body.email.as_str()) else {
            return Err(rejected());
        };
        let known = self.is_known_client(&email, &client).await?;
        self.ensure_account_open(&email, &client, known).await?;
        let Some(credentials) = self.state.store.get_credentials(&email).await? else {
            // Spend the time a real check would, so the answer does not reveal whether the
            // account exists.
            self.state
                .passwords
                .verify_decoy(body.password.as_str())
                .await?;
            self.count_failed_login(&email, &client, known).await?;
            return Err(rejected());
        };
        if !self
            .state
            .passwords
            .verify(body.password.as_str(), &credentials.password_hash)
            .await?
        {
            tracing::info!(user_id = %credentials.user_id, "login refused: wrong password");
            self.count_failed_login(&email, &client, known).await?;
            return Err(rejected());
        }
        let user = self
            .state
            .store
            .get_user(credentials.user_id)
            .await?
            .ok_or_else(rejected)?;
        tracing::info!(user_id = %user.id, "logged in");
        self.remember_client(&email, &client).await?;
        Ok(LoginResponse::Ok(Json(self.session(user)?)))
    }
}
