//! Test harness: the real router over a real, isolated database (a temp SQLite file or a fresh
//! PostgreSQL database per test), driven in-process with `tower::ServiceExt::oneshot`.

pub mod db;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use taskward_brain::app::{App, AppState, ServerSettings};
use taskward_brain::bootstrap::bootstrap_if_empty;
use taskward_brain::keys::Keys;
use taskward_brain::router::router;
use taskward_brain::store::Store;
use tower::ServiceExt;

pub use db::{Backend, TestDb};

/// Generates one `#[tokio::test]` per backend for an `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )+
    };
}

/// A brain with a bootstrapped store, as `serve` would build it.
pub struct TestApp {
    /// The router under test.
    pub router: Router,
    /// Direct store access, for setup and for inspecting what was written.
    pub store: Store,
    /// The app state behind the router (for the background jobs' functions).
    pub state: AppState,
    /// The brain's keys.
    pub keys: Arc<Keys>,
    /// Token of the bootstrap site admin `admin`.
    pub admin_token: String,
    /// The data directory (holds admin.token).
    pub data_dir: tempfile::TempDir,
    /// Keeps the database alive; dropped last.
    pub db: TestDb,
}

/// A response, with its JSON body parsed (Null when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    /// The body as sent (exports are not JSON).
    pub bytes: axum::body::Bytes,
}

impl Reply {
    /// The error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    /// The field an error response names.
    pub fn field(&self) -> Option<&str> {
        self.body["error"]["field"].as_str()
    }

    /// The body as UTF-8 text (exports are CSV or JSON lines, not one JSON value).
    pub fn text(&self) -> String {
        String::from_utf8(self.bytes.to_vec()).expect("a UTF-8 body")
    }

    /// The text `field` of every element of the body's array `list` (the slugs of a page's
    /// `items`, the kinds of a command's `audit_rows`), in order.
    pub fn texts(&self, list: &str, field: &str) -> Vec<&str> {
        self.body[list]
            .as_array()
            .unwrap_or_else(|| panic!("no array {list}: {}", self.body))
            .iter()
            .map(|item| item[field].as_str().unwrap())
            .collect()
    }

    /// How many elements the body's array `list` has.
    pub fn count(&self, list: &str) -> usize {
        self.body[list]
            .as_array()
            .unwrap_or_else(|| panic!("no array {list}: {}", self.body))
            .len()
    }

    /// Asserts a 400 that names `field`; `input` says in the message what was sent.
    pub fn assert_names_field(&self, field: &str, input: &str) {
        assert_eq!(
            (self.status, self.field()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{input}: {}",
            self.body
        );
    }
}

impl TestApp {
    /// A fresh database, migrated and bootstrapped.
    pub async fn new(backend: Backend) -> TestApp {
        Self::with_settings(backend, ServerSettings::default()).await
    }

    /// A fresh app with an agent `host` registered in `default`: the app, the admin's token
    /// and the agent's id (what most tests of commands and tasks start from).
    pub async fn with_agent(backend: Backend) -> (TestApp, String, String) {
        let app = Self::new(backend).await;
        let agent = app.create_agent("default", "host").await;
        let token = app.admin_token.clone();
        (app, token, agent)
    }

    /// A fresh app with a second project `other`: the app, the admin's token, and the ids of
    /// an agent `here` in `default` and an agent `there` in `other` (for tests that one project
    /// never reaches into another).
    pub async fn with_two_projects(backend: Backend) -> (TestApp, String, String, String) {
        let app = Self::new(backend).await;
        app.create_project("other").await;
        let here = app.create_agent("default", "here").await;
        let there = app.create_agent("other", "there").await;
        let token = app.admin_token.clone();
        (app, token, here, there)
    }

    /// Like [`TestApp::new`] with chosen server settings.
    pub async fn with_settings(backend: Backend, settings: ServerSettings) -> TestApp {
        let db = TestDb::new(backend).await;
        let url = db.url.clone();
        let data_dir = tempfile::tempdir().unwrap();
        let dir = data_dir.path().to_owned();
        let (store, keys, boot) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&url).expect("store opens");
            let keys = Arc::new(Keys::load_or_create(&dir).expect("keys"));
            let boot = bootstrap_if_empty(&store, &keys, &dir).expect("bootstrap");
            (store, keys, boot)
        })
        .await
        .unwrap();
        let admin_token = boot
            .expect("fresh store bootstraps")
            .token
            .expect("a fresh admin gets a token");
        let state = AppState(Arc::new(App::new(
            store.clone(),
            keys.clone(),
            data_dir.path().to_owned(),
            settings,
        )));
        TestApp {
            router: router(state.clone()),
            state,
            keys,
            store,
            admin_token,
            data_dir,
            db,
        }
    }

    /// Sends a request; `body` is sent as JSON when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(json) => builder
                .header("content-type", "application/json")
                .body(Body::from(json.to_string())),
            None => builder.body(Body::empty()),
        }
        .unwrap();
        self.send(request).await
    }

    /// Sends a prepared request.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            bytes,
        }
    }

    /// GET as the given token.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// POST JSON as the given token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// DELETE as the given token.
    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a user through the API and returns their first token.
    pub async fn create_user(&self, name: &str, site_admin: bool) -> String {
        let reply = self
            .post(
                "/api/v1/users",
                &self.admin_token,
                serde_json::json!({"name": name, "site_admin": site_admin}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["token"].as_str().unwrap().to_owned()
    }

    /// Creates a project through the API (as the bootstrap admin).
    pub async fn create_project(&self, slug: &str) {
        let reply = self
            .post(
                "/api/v1/projects",
                &self.admin_token,
                serde_json::json!({"slug": slug}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }

    /// Gives a user a role in a project through the API.
    pub async fn add_member(&self, slug: &str, user: &str, role: &str) {
        let reply = self
            .post(
                &format!("/api/v1/projects/{slug}/members"),
                &self.admin_token,
                serde_json::json!({"user": user, "role": role}),
            )
            .await;
        assert!(reply.status.is_success(), "{:?}", reply.body);
    }

    /// A bulk limit of a burst of 2 and 1 a minute, so that the third bulk action is refused.
    pub async fn with_tight_bulk_limit(backend: Backend) -> TestApp {
        let settings = ServerSettings {
            bulk_limit: taskward_brain::limits::Limit {
                burst: 2,
                per_minute: 1,
            },
            ..ServerSettings::default()
        };
        Self::with_settings(backend, settings).await
    }

    /// Creates a new user (a unique name) who is an operator of `default`; returns their token.
    pub async fn create_operator(&self) -> String {
        let op = unique("op");
        let token = self.create_user(&op, false).await;
        self.add_member("default", &op, "operator").await;
        token
    }

    /// Issues a `kind` command on one Celery task (`retry-task`, `cancel-task`) to `agent` in
    /// `default`, as `token`; the reply, whatever it is.
    pub async fn command_on_task(&self, token: &str, kind: &str, agent: &str, task: &str) -> Reply {
        self.post(
            &format!("/api/v1/projects/default/commands/{kind}"),
            token,
            serde_json::json!({"agent_id": agent, "engine": "celery", "task_id": task}),
        )
        .await
    }

    /// Asks for an API token `name` lasting `expires_in` (`30d`, `12h`…), as `token`; the
    /// reply, whatever it is.
    pub async fn create_token(&self, token: &str, name: &str, expires_in: &str) -> Reply {
        let body = serde_json::json!({"name": name, "expires_in": expires_in});
        self.post("/api/v1/tokens", token, body).await
    }

    /// Asserts that `GET path?query` answers 400 naming `field`, for each `(query, field)`.
    pub async fn assert_queries_name_fields(
        &self,
        path: &str,
        token: &str,
        cases: &[(&str, &str)],
    ) {
        for (query, field) in cases {
            let reply = self.get(&format!("{path}?{query}"), token).await;
            reply.assert_names_field(field, query);
        }
    }

    /// The id of project `slug` (its audit chain is `project:<id>`).
    pub async fn project_id(&self, slug: &str) -> String {
        let reply = self
            .get(&format!("/api/v1/projects/{slug}"), &self.admin_token)
            .await;
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// Asks to register an agent `name` in project `slug` as the admin; the reply, whatever it
    /// is.
    pub async fn register_agent(&self, slug: &str, name: &str) -> Reply {
        let body = serde_json::json!({"name": name});
        self.post(
            &format!("/api/v1/projects/{slug}/agents"),
            &self.admin_token,
            body,
        )
        .await
    }

    /// Registers an agent and returns its id.
    pub async fn create_agent(&self, slug: &str, name: &str) -> String {
        let reply = self.register_agent(slug, name).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["agent"]["id"].as_str().unwrap().to_owned()
    }

    /// Records tasks as an agent would report them (received with args `(1, 2)` and kwargs
    /// `{'k': 'v'}`), so commands can name them.
    pub async fn seed_tasks(&self, slug: &str, agent_id: &str, task_ids: &[&str]) {
        use taskward_shared::events::{TaskState, TaskUpdate, Update};
        let updates: Vec<Update> = task_ids
            .iter()
            .map(|id| {
                Update::Task(Box::new(TaskUpdate {
                    name: Some("app.add".into()),
                    queue: Some("default".into()),
                    // As an agent sends readable arguments: JSON, redacted on the host.
                    args: Some(serde_json::json!([1, 2])),
                    kwargs: Some(serde_json::json!({"k": "v"})),
                    ..celery_task(*id, TaskState::Failed, 1)
                }))
            })
            .collect();
        self.apply_updates(slug, agent_id, updates).await;
    }

    /// Runs raw SQL statements in one transaction (setup the API cannot do).
    pub async fn execute_sql(&self, statements: &[&str]) {
        use diesel::RunQueryDsl;
        let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
        self.store
            .write("test_sql", move |conn| {
                for sql in &statements {
                    diesel::sql_query(sql).execute(conn)?;
                }
                Ok::<_, taskward_brain::store::StoreError>(())
            })
            .await
            .unwrap();
    }

    /// Stores updates as if `agent_id` had reported them.
    pub async fn apply_updates(
        &self,
        slug: &str,
        agent_id: &str,
        updates: Vec<taskward_shared::events::Update>,
    ) {
        let (slug, agent_id) = (slug.parse().unwrap(), agent_id.to_owned());
        self.store
            .write("test_seed_tasks", move |conn| {
                let project = taskward_brain::store::projects::find(conn, &slug)?;
                taskward_brain::store::tasks::apply_updates(
                    conn,
                    &project.id,
                    &agent_id,
                    &updates,
                    1,
                )
            })
            .await
            .unwrap();
    }

    /// Serves the app on a real loopback port (for a browser), with peer addresses as the
    /// brain's `serve` has them; returns the base URL.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = self
            .router
            .clone()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, service).await });
        format!("http://{addr}")
    }

    /// The bootstrap admin's dashboard password (written beside its token).
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("admin.password"))
            .unwrap()
            .trim_end()
            .to_owned()
    }

    /// Gives a user a dashboard password.
    pub async fn set_password(&self, user: &str, password: &str) {
        let hash = taskward_brain::passwords::hash(password);
        let name: taskward_brain::names::UserName = user.parse().unwrap();
        let ctx = self.state.audit_as_system();
        let chain = self.store.site_chain();
        self.store
            .write("test_set_password", move |conn| {
                taskward_brain::users::set_password(conn, &ctx, &chain, &name, &hash)
            })
            .await
            .unwrap();
    }

    /// Signs a checkpoint of `chain` now, as the checkpoint endpoint does (verifying the rows
    /// since the last verified point first).
    pub async fn checkpoint(&self, chain: &str) -> taskward_shared::audit::Checkpoint {
        let (state, chain) = (self.state.clone(), chain.to_owned());
        let dir = self.data_dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            taskward_brain::audit::checkpoint_now(
                &state.store,
                &state.keys,
                &dir,
                &state.audit_watch,
                &chain,
            )
            .unwrap()
        })
        .await
        .unwrap()
    }

    /// Number of projects, read straight from the store.
    pub async fn project_count(&self) -> usize {
        let reply = self.get("/api/v1/projects", &self.admin_token).await;
        reply.body["items"].as_array().unwrap().len()
    }
}

/// A Celery task's update in `state` at `at_ms`, nothing else known; add fields with struct
/// update syntax (`TaskUpdate { queue: …, ..celery_task(…) }`).
pub fn celery_task(
    task_id: impl Into<String>,
    state: taskward_shared::events::TaskState,
    at_ms: i64,
) -> taskward_shared::events::TaskUpdate {
    taskward_shared::events::TaskUpdate {
        engine: "celery".into(),
        task_id: task_id.into(),
        state: Some(state),
        at_ms,
        ..Default::default()
    }
}

/// A short unique suffix for names in tests.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}
