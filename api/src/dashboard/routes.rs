//! The dashboard's HTTP handlers: pages, their live partials, form actions, the JSON read API,
//! login and logout. HTTP only: reads and actions are the queue engine's (`orderly::queue`),
//! shaping for display is `views`, rendering is `pages`.

use axum::{
    Json,
    extract::{Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::cookie::CookieJar;
use orderly::{
    error::AppError,
    jobs::QUEUES,
    queue::{
        JobState,
        inspect::{self, JobDetail, JobPage, Overview},
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    dashboard::{
        pages::{self, app_error_page, asset_version, error_page, render},
        session::{
            self, AdminSession, ApiAdmin, LOGIN_CSRF_COOKIE, PageAdmin, SESSION_COOKIE, is_https,
            login_csrf_cookie, random_token, removal, safe_return_path, secrets_match,
            session_cookie,
        },
        views::{self, PAGE_SIZE},
    },
    extract::Path,
    state::AppState,
};

/// Minutes of throughput the charts show.
const CHART_MINUTES: u32 = 60;

/// What every page's frame needs: navigation, the CSRF token, where live updates come from.
#[derive(Debug, Serialize)]
struct Frame {
    title: String,
    asset_version: &'static str,
    csrf: String,
    queues: &'static [&'static str],
    current_queue: Option<String>,
    /// This page's path and query: forms come back here after an action.
    return_to: String,
    live_url: String,
    notice: Option<String>,
}

impl Frame {
    fn new(
        session: &AdminSession,
        title: impl Into<String>,
        return_to: String,
        current_queue: Option<&str>,
    ) -> Self {
        let live_url = format!(
            "{return_to}{}live=1",
            if return_to.contains('?') { '&' } else { '?' }
        );
        Self {
            title: title.into(),
            asset_version: asset_version(),
            csrf: session.csrf.clone(),
            queues: &QUEUES,
            current_queue: current_queue.map(str::to_owned),
            return_to,
            live_url,
            notice: None,
        }
    }
}

/// Query parameters every page takes.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// `1`: render only the live part (polled by the page's script).
    live: Option<u8>,
    /// The action just done, for the notice line.
    done: Option<String>,
    /// How many jobs that action touched.
    n: Option<u64>,
    /// Queue page: the state listed.
    state: Option<String>,
    /// Queue page: 1-based page number.
    page: Option<u64>,
}

impl PageQuery {
    fn is_live(&self) -> bool {
        self.live == Some(1)
    }

    /// The notice for `?done=…`: fixed sentences, never text from the URL.
    fn notice(&self) -> Option<String> {
        let n = self.n.unwrap_or(0);
        let plural = |word: &str| {
            if n == 1 {
                word.to_owned()
            } else {
                format!("{word}s")
            }
        };
        Some(match self.done.as_deref()? {
            "retry" => "Job queued for another run.".to_owned(),
            "promote" => "Job moved to the front of its priority: it runs now.".to_owned(),
            "delete" => "Job deleted.".to_owned(),
            "pause" => "Queue paused: no worker claims its jobs until it is resumed.".to_owned(),
            "resume" => "Queue resumed.".to_owned(),
            "retry-dead" => format!("{n} dead {} queued again.", plural("job")),
            "purge-dead" => format!("{n} dead {} deleted.", plural("job")),
            "purge-completed" => format!("{n} completed {} deleted.", plural("job")),
            "unchanged" => "Nothing changed: the job was no longer in that state.".to_owned(),
            _ => return None,
        })
    }
}

/// The queue named `queue`, if it is one of ours.
fn known_queue(queue: &str) -> Option<&'static str> {
    QUEUES.iter().copied().find(|q| *q == queue)
}

fn no_such_queue() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "No such queue",
        "That queue does not exist.",
        false,
    )
}

fn path_and_query(path: &str, query: &[(&str, String)]) -> String {
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", session::urlencode(v)))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// `GET /admin`: the overview.
pub async fn index() -> Redirect {
    Redirect::to("/admin/queues")
}

/// `GET /admin/queues`: every queue, the throughput chart, live workers, the outbox backlog.
pub async fn overview(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Query(query): Query<PageQuery>,
) -> Response {
    let services = &state.services;
    let overview =
        match inspect::overview(&services.queue, &services.outbox, &QUEUES, CHART_MINUTES).await {
            Ok(overview) => overview,
            Err(error) => return app_error_page(error.into()),
        };
    let now = overview.read_at_ms;
    let rows: Vec<views::QueueRow> = overview
        .queues
        .iter()
        .map(|q| {
            let serving = overview
                .workers
                .iter()
                .filter(|w| w.queues.contains(&q.counts.queue))
                .count();
            views::queue_row(&q.counts, &q.throughput, serving)
        })
        .collect();
    let chart = views::chart(&views::sum_minutes(
        overview.queues.iter().map(|q| q.throughput.as_slice()),
    ));
    let workers: Vec<views::WorkerRow> = overview
        .workers
        .iter()
        .map(|w| views::worker_row(w, now))
        .collect();
    let outbox = overview.outbox.map(|b| {
        serde_json::json!({
            "pending": b.pending,
            "oldest": if b.pending == 0 { "—".to_owned() } else { views::human_duration(b.oldest_ms) },
        })
    });
    let mut frame = Frame::new(&session, "Queues", "/admin/queues".into(), None);
    frame.notice = query.notice();
    let read_at = views::moment(now, now);
    render(
        StatusCode::OK,
        if query.is_live() {
            "overview_live.html"
        } else {
            "overview.html"
        },
        minijinja::context! { frame, rows, chart, workers, outbox, read_at },
    )
}

/// `GET /admin/queues/{queue}?state=dead&page=2`: one queue's jobs in one state.
pub async fn queue_page(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path(queue): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    let Some(job_state) = views::parse_state_key(query.state.as_deref().unwrap_or("waiting"))
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown state",
            "Pick one of the tabs of the queue page.",
            false,
        );
    };
    let key = views::state_key(job_state);
    let engine = &state.services.queue;
    let read = async {
        let (summaries, workers) = engine.summaries(&[queue], CHART_MINUTES).await?;
        let summary = summaries
            .into_iter()
            .next()
            .ok_or_else(|| AppError::internal("queue summary missing"))?;
        // A page past the end (jobs finished since the link was drawn) shows the last page.
        let last_page = state_total(&summary.counts, job_state)
            .div_ceil(PAGE_SIZE)
            .max(1);
        let page = query.page.unwrap_or(1).clamp(1, last_page);
        let list = engine
            .list(queue, job_state, (page - 1) * PAGE_SIZE, PAGE_SIZE)
            .await?;
        Ok::<_, AppError>((summary, workers, page, list))
    };
    let (summary, workers, page, list) = match read.await {
        Ok(read) => read,
        Err(error) => return app_error_page(error),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let serving = workers
        .iter()
        .filter(|w| w.queues.iter().any(|q| q == queue))
        .count();
    let row = views::queue_row(&summary.counts, &summary.throughput, serving);
    let chart = views::chart(&summary.throughput);
    let tabs = views::tabs(&summary.counts, job_state);
    let jobs: Vec<views::JobRow> = list
        .jobs
        .iter()
        .map(|job| views::job_row(job, job_state, now))
        .collect();
    let pager = views::pager(queue, key, page, jobs.len(), list.total);
    let mut query_pairs = vec![("state", key.to_owned())];
    if page > 1 {
        query_pairs.push(("page", page.to_string()));
    }
    let return_to = path_and_query(&format!("/admin/queues/{queue}"), &query_pairs);
    let mut frame = Frame::new(&session, format!("Queue {queue}"), return_to, Some(queue));
    frame.notice = query.notice();
    let state_label = views::STATE_TABS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, l)| *l)
        .unwrap_or("");
    let read_at = views::moment(now, now);
    render(
        StatusCode::OK,
        if query.is_live() {
            "queue_live.html"
        } else {
            "queue.html"
        },
        minijinja::context! { frame, queue => row, chart, tabs, jobs, pager, state_key => key, state_label, read_at },
    )
}

fn state_total(counts: &orderly::queue::inspect::QueueCounts, state: JobState) -> u64 {
    match state {
        JobState::Ready => counts.waiting,
        JobState::Scheduled => counts.scheduled,
        JobState::Active => counts.active,
        JobState::Completed => counts.completed,
        JobState::Dead => counts.dead,
    }
}

/// `GET /admin/queues/{queue}/jobs/{id}`: one job with its payload and every failed attempt.
pub async fn job_page(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path((queue, id)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    let job = match state.services.queue.job(queue, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "No such job",
                "No job with that id is in this queue: it may have been deleted or trimmed by retention.",
                false,
            );
        }
        Err(error) => return app_error_page(error.into()),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let job = views::job_view(&job, now);
    let return_to = format!("/admin/queues/{queue}/jobs/{}", session::urlencode(&id));
    let mut frame = Frame::new(
        &session,
        format!("Job {}", views::short_id(&id)),
        return_to,
        Some(queue),
    );
    frame.notice = query.notice();
    let list_url = format!("/admin/queues/{queue}?state={}", job.state);
    let read_at = views::moment(now, now);
    render(
        StatusCode::OK,
        if query.is_live() {
            "job_live.html"
        } else {
            "job.html"
        },
        minijinja::context! { frame, job, list_url, read_at },
    )
}

/// Query of the search box.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    /// The job id.
    id: String,
    /// Look only in this queue.
    queue: Option<String>,
}

/// `GET /admin/search?id=…[&queue=…]`: the job page of that id, wherever it is.
pub async fn search(
    State(state): State<AppState>,
    PageAdmin(_): PageAdmin,
    Query(query): Query<SearchQuery>,
) -> Response {
    let id = query.id.trim();
    if id.is_empty() || id.len() > 200 {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Search",
            "Type a job id to look for.",
            false,
        );
    }
    let queues: Vec<&str> = match query.queue.as_deref().filter(|q| !q.is_empty()) {
        Some(queue) => match known_queue(queue) {
            Some(queue) => vec![queue],
            None => return no_such_queue(),
        },
        None => QUEUES.to_vec(),
    };
    for queue in queues {
        match state.services.queue.exists(queue, id).await {
            Ok(true) => {
                return Redirect::to(&format!(
                    "/admin/queues/{queue}/jobs/{}",
                    session::urlencode(id)
                ))
                .into_response();
            }
            Ok(false) => {}
            Err(error) => return app_error_page(error.into()),
        }
    }
    error_page(
        StatusCode::NOT_FOUND,
        "No such job",
        "No queue holds a job with that id (completed jobs are kept only for the retention window).",
        false,
    )
}

/// The form every action posts.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    /// The session's CSRF token.
    #[serde(default)]
    csrf: String,
    /// `yes` once the operator confirmed; without it the server asks first.
    confirmed: Option<String>,
    /// The page to come back to.
    return_to: Option<String>,
}

/// The operator actions on one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueAction {
    Pause,
    Resume,
    RetryDead,
    PurgeDead,
    PurgeCompleted,
}

impl QueueAction {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "retry-dead" => Self::RetryDead,
            "purge-dead" => Self::PurgeDead,
            "purge-completed" => Self::PurgeCompleted,
            _ => return None,
        })
    }
}

/// The operator actions on one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobAction {
    Retry,
    Promote,
    Delete,
}

impl JobAction {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "retry" => Self::Retry,
            "promote" => Self::Promote,
            "delete" => Self::Delete,
            _ => return None,
        })
    }
}

/// What to do with an action request.
enum Gate {
    /// Checked and confirmed: act.
    Proceed(ActionForm),
    /// Answer this instead of acting (an error page, or the confirmation page).
    Respond(Response),
}

/// Checks the CSRF token and the confirmation of an action request.
fn authorize_action(
    session: &AdminSession,
    headers: &HeaderMap,
    form: Result<axum::Form<ActionForm>, FormRejection>,
    question: &str,
    action_url: &str,
) -> Gate {
    let Ok(axum::Form(form)) = form else {
        return Gate::Respond(error_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form could not be read.",
            false,
        ));
    };
    if let Err(error) = session.check_action(headers, &form.csrf) {
        return Gate::Respond(error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            &error.body().message,
            false,
        ));
    }
    if form.confirmed.as_deref() != Some("yes") {
        return Gate::Respond(render(
            StatusCode::OK,
            "confirm.html",
            minijinja::context! {
                frame => Frame::new(session, "Confirm", safe_return_path(form.return_to.as_deref()), None),
                question,
                action_url,
            },
        ));
    }
    Gate::Proceed(form)
}

fn after_action(return_to: &str, done: &str, n: Option<u64>) -> Response {
    let separator = if return_to.contains('?') { '&' } else { '?' };
    let count = n.map(|n| format!("&n={n}")).unwrap_or_default();
    Redirect::to(&format!("{return_to}{separator}done={done}{count}")).into_response()
}

/// `POST /admin/queues/{queue}/{action}`: pause, resume, retry-dead, purge-dead, purge-completed.
pub async fn queue_action(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path((queue, action_name)): Path<(String, String)>,
    headers: HeaderMap,
    form: Result<axum::Form<ActionForm>, FormRejection>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    let Some(action) = QueueAction::parse(&action_name) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No such action",
            "That action does not exist.",
            false,
        );
    };
    let engine = &state.services.queue;
    let counts = match engine.counts(queue).await {
        Ok(counts) => counts,
        Err(error) => return app_error_page(error.into()),
    };
    let question = views::queue_actions(&counts)
        .into_iter()
        .find(|a| a.url.ends_with(&format!("/{action_name}")))
        .map(|a| a.confirm)
        .unwrap_or_else(|| format!("{action_name} queue {queue}?"));
    let form = match authorize_action(
        &session,
        &headers,
        form,
        &question,
        &format!("/admin/queues/{queue}/{action_name}"),
    ) {
        Gate::Proceed(form) => form,
        Gate::Respond(response) => return response,
    };
    let result = match action {
        QueueAction::Pause => engine.pause(queue).await.map(|()| None),
        QueueAction::Resume => engine.resume(queue).await.map(|()| None),
        QueueAction::RetryDead => engine.retry_all_dead(queue).await.map(Some),
        QueueAction::PurgeDead => engine.purge_dead(queue).await.map(Some),
        QueueAction::PurgeCompleted => engine.purge_completed(queue).await.map(Some),
    };
    match result {
        Ok(touched) => {
            tracing::info!(admin = %session.actor.user_id, queue, action = action_name, touched, "dashboard queue action");
            after_action(
                &safe_return_path(form.return_to.as_deref()),
                &action_name,
                touched,
            )
        }
        Err(error) => app_error_page(error.into()),
    }
}

/// `POST /admin/queues/{queue}/jobs/{id}/{action}`: retry, promote, delete.
pub async fn job_action(
    State(state): State<AppState>,
    PageAdmin(session): PageAdmin,
    Path((queue, id, action_name)): Path<(String, String, String)>,
    headers: HeaderMap,
    form: Result<axum::Form<ActionForm>, FormRejection>,
) -> Response {
    let Some(queue) = known_queue(&queue) else {
        return no_such_queue();
    };
    let Some(action) = JobAction::parse(&action_name) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No such action",
            "That action does not exist.",
            false,
        );
    };
    let state_name = match state.services.queue.job(queue, &id).await {
        Ok(job) => job.map(|j| j.state).unwrap_or_default(),
        Err(error) => return app_error_page(error.into()),
    };
    let question = views::job_actions(queue, &id, &state_name)
        .into_iter()
        .find(|a| a.url.ends_with(&format!("/{action_name}")))
        .map(|a| a.confirm)
        .unwrap_or_else(|| format!("{action_name} job {}?", views::short_id(&id)));
    let action_url = format!(
        "/admin/queues/{queue}/jobs/{}/{action_name}",
        session::urlencode(&id)
    );
    let form = match authorize_action(&session, &headers, form, &question, &action_url) {
        Gate::Proceed(form) => form,
        Gate::Respond(response) => return response,
    };
    let engine = &state.services.queue;
    let result = match action {
        JobAction::Retry => engine.retry_dead(queue, &id).await,
        JobAction::Promote => engine.promote(queue, &id).await,
        JobAction::Delete => engine.delete(queue, &id).await,
    };
    match result {
        Ok(changed) => {
            tracing::info!(admin = %session.actor.user_id, queue, job_id = %id, action = action_name, changed, "dashboard job action");
            let mut return_to = safe_return_path(form.return_to.as_deref());
            // The page of a deleted job is gone: go back to its list instead.
            if changed && action == JobAction::Delete && return_to.contains("/jobs/") {
                return_to = format!("/admin/queues/{queue}");
            }
            after_action(
                &return_to,
                if changed { &action_name } else { "unchanged" },
                None,
            )
        }
        Err(error) => app_error_page(error.into()),
    }
}

/// Query of the login page.
#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    /// Where to go after logging in.
    next: Option<String>,
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

fn login_page(
    jar: CookieJar,
    headers: &HeaderMap,
    state: &AppState,
    status: StatusCode,
    error: Option<&str>,
    email: &str,
    next: &str,
) -> Response {
    let token = random_token();
    let jar = jar.add(login_csrf_cookie(token.clone(), is_https(headers, state)));
    let page = render(
        status,
        "login.html",
        minijinja::context! { asset_version => asset_version(), csrf => token, error, email, next },
    );
    (jar, page).into_response()
}

/// `GET /admin/login`: the login form (admins already signed in go straight to the overview).
pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = safe_return_path(query.next.as_deref());
    if let Some(cookie) = jar.get(SESSION_COOKIE)
        && let Ok(claims) = state.services.users.claims(cookie.value()).await
        && claims.role == orderly::users::Role::Admin
    {
        return Redirect::to(&next).into_response();
    }
    login_page(jar, &headers, &state, StatusCode::OK, None, "", &next)
}

/// `POST /admin/login`: checks the credentials with the api's own login, refuses non-admins,
/// sets the session cookie.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    form: Result<axum::Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return login_page(
            jar,
            &headers,
            &state,
            StatusCode::BAD_REQUEST,
            Some("Fill in your email and password."),
            "",
            "/admin/queues",
        );
    };
    let next = safe_return_path(form.next.as_deref());
    let expected = jar
        .get(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if expected.is_empty() || !secrets_match(&expected, &form.csrf) {
        return login_page(
            jar,
            &headers,
            &state,
            StatusCode::FORBIDDEN,
            Some("The login form expired. Please try again."),
            &form.email,
            &next,
        );
    }
    let tokens = match state.services.users.login(&form.email, form.password).await {
        Ok(tokens) => tokens,
        Err(AppError::Unauthorized(_)) => {
            return login_page(
                jar,
                &headers,
                &state,
                StatusCode::UNAUTHORIZED,
                Some("Invalid email or password."),
                &form.email,
                &next,
            );
        }
        Err(AppError::TooManyRequests { retry_after, .. }) => {
            let wait = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let mut page = login_page(
                jar,
                &headers,
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many failed sign-ins for this account. Try again in {} min.",
                    wait.div_ceil(60).max(1)
                )),
                &form.email,
                &next,
            );
            page.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(wait.max(1)),
            );
            return page;
        }
        Err(error) => return app_error_page(error),
    };
    // The browser keeps only the access token: the dashboard session ends when it expires.
    match state.services.users.claims(&tokens.access.token).await {
        Ok(claims) if claims.role == orderly::users::Role::Admin => {
            tracing::info!(admin = %claims.sub, "dashboard login");
            let jar = jar.remove(removal(LOGIN_CSRF_COOKIE)).add(session_cookie(
                tokens.access.token,
                tokens.access.expires_in,
                is_https(&headers, &state),
            ));
            (jar, Redirect::to(&next)).into_response()
        }
        Ok(claims) => {
            tracing::warn!(user_id = %claims.sub, "dashboard login refused: not an admin");
            // The session the login just started is of no use to anyone.
            if let Err(error) = state.services.users.logout(&claims).await {
                tracing::warn!(%error, "could not end the refused dashboard session");
            }
            login_page(
                jar,
                &headers,
                &state,
                StatusCode::FORBIDDEN,
                Some(
                    "This account is not an administrator. The dashboard is for administrators only.",
                ),
                &form.email,
                &next,
            )
        }
        Err(error) => app_error_page(error),
    }
}

/// `POST /admin/logout`: ends the session everywhere (its token is refused from now on, as a
/// cookie and as a bearer token) and clears the cookie. An admin's logout needs the CSRF token,
/// so another site cannot sign an operator out; anyone else (a customer who reached the 403
/// page) just has the cookie cleared.
pub async fn logout(
    State(state): State<AppState>,
    session: Result<PageAdmin, Response>,
    headers: HeaderMap,
    jar: CookieJar,
    form: Result<axum::Form<ActionForm>, FormRejection>,
) -> Response {
    if let Ok(PageAdmin(session)) = session {
        let presented = form.map(|axum::Form(f)| f.csrf).unwrap_or_default();
        if let Err(error) = session.check_action(&headers, &presented) {
            return error_page(
                StatusCode::FORBIDDEN,
                "Refused",
                &error.body().message,
                false,
            );
        }
        if let Err(error) = state.services.users.logout(&session.claims).await {
            return app_error_page(error);
        }
    }
    (
        jar.remove(removal(SESSION_COOKIE)),
        Redirect::to("/admin/login"),
    )
        .into_response()
}

/// `GET /admin/static/dashboard.css`.
pub async fn stylesheet() -> Response {
    pages::asset("text/css; charset=utf-8", pages::CSS)
}

/// `GET /admin/static/dashboard.js`.
pub async fn script() -> Response {
    pages::asset("text/javascript; charset=utf-8", pages::JS)
}

/// `GET /admin/api/overview`: every queue's counts and last hour, workers, outbox backlog.
pub async fn api_overview(
    State(state): State<AppState>,
    ApiAdmin(_): ApiAdmin,
) -> Result<Json<Overview>, AppError> {
    let services = &state.services;
    Ok(Json(
        inspect::overview(&services.queue, &services.outbox, &QUEUES, CHART_MINUTES).await?,
    ))
}

/// Query of the JSON job list.
#[derive(Debug, Deserialize)]
pub struct JobListQuery {
    /// `waiting`, `scheduled`, `running`, `completed` or `dead` (engine names work too).
    state: String,
    /// Rows to skip.
    #[serde(default)]
    offset: u64,
    /// Rows to return, 1 to 200 (default 25).
    limit: Option<u64>,
}

fn api_queue(queue: &str) -> Result<&'static str, AppError> {
    QUEUES
        .iter()
        .copied()
        .find(|q| *q == queue)
        .ok_or_else(|| AppError::not_found("no such queue"))
}

/// `GET /admin/api/queues/{queue}/jobs?state=dead&offset=0&limit=25`.
pub async fn api_jobs(
    State(state): State<AppState>,
    ApiAdmin(_): ApiAdmin,
    Path(queue): Path<String>,
    crate::extract::Query(query): crate::extract::Query<JobListQuery>,
) -> Result<Json<JobPage>, AppError> {
    let queue = api_queue(&queue)?;
    let job_state = views::parse_state_key(&query.state).ok_or_else(|| {
        AppError::bad_request("state must be waiting, scheduled, running, completed or dead")
    })?;
    let limit = query.limit.unwrap_or(PAGE_SIZE).clamp(1, 200);
    Ok(Json(
        state
            .services
            .queue
            .list(queue, job_state, query.offset, limit)
            .await?,
    ))
}

/// `GET /admin/api/queues/{queue}/jobs/{id}`.
pub async fn api_job(
    State(state): State<AppState>,
    ApiAdmin(_): ApiAdmin,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<JobDetail>, AppError> {
    let queue = api_queue(&queue)?;
    state
        .services
        .queue
        .job(queue, &id)
        .await?
        .map(Json)
        .ok_or_else(|| AppError::not_found("no such job"))
}
