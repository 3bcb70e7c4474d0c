//! Typed callers: an authenticated JSON client for the brain's REST API, with the calls the
//! process tests make again and again (agents, commands) spelled once.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::wait::Wait;

/// A caller of one brain: its base URL, a bearer token, and the project its shortcuts use
/// (`default` unless [`Api::in_project`] says otherwise).
#[derive(Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    project: String,
    http: reqwest::Client,
}

impl Api {
    /// A caller of `base` (`http://host:port`) with `token` (none: anonymous).
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            project: "default".to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// [`Api::new`] for a brain serving TLS with a certificate from the CA `ca_pem` (the only
    /// root this caller trusts).
    pub fn trusting(base: &str, token: Option<&str>, ca_pem: &str) -> Api {
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        Api {
            http,
            ..Api::new(base, token)
        }
    }

    /// The same brain as another caller.
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same caller, its shortcuts aimed at another project.
    pub fn in_project(&self, slug: &str) -> Api {
        Api {
            project: slug.to_owned(),
            ..self.clone()
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `base + path`, with the token.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Any call: its status and its JSON body (`Null` when empty or not JSON).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    /// A call that must answer `status`; its JSON body.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let what = format!("{method} {path}");
        let (got, body) = self.call(method, path, body).await;
        assert_eq!(got, status, "{what}: {body}");
        body
    }

    /// `GET path`, which must answer 200; its JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.expect(Method::GET, path, None, 200).await
    }

    /// `POST path` with a JSON body, which must answer `status`; the reply's JSON body.
    pub async fn post_json(&self, path: &str, body: Value, status: u16) -> Value {
        self.expect(Method::POST, path, Some(body), status).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.request(Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `/api/v1/projects/<project><rest>`.
    pub fn project_path(&self, rest: &str) -> String {
        format!("/api/v1/projects/{}{rest}", self.project)
    }

    /// Creates an agent; its id and enrollment token.
    pub async fn create_agent(&self, name: &str) -> (String, String) {
        let body = self
            .post_json(&self.project_path("/agents"), json!({"name": name}), 201)
            .await;
        (
            body["agent"]["id"].as_str().unwrap().to_owned(),
            body["enrollment_token"].as_str().unwrap().to_owned(),
        )
    }

    /// `GET` of a path in the project, whatever its status; its JSON body (an error's too).
    async fn project_body(&self, rest: &str) -> Value {
        self.call(Method::GET, &self.project_path(rest), None)
            .await
            .1
    }

    /// An agent as the agents API shows it (whatever the status).
    pub async fn agent(&self, id: &str) -> Value {
        self.project_body(&format!("/agents/{id}")).await
    }

    /// Waits up to 20 s for the agent to show as connected (`online`) or not.
    pub async fn wait_online(&self, id: &str, online: bool) {
        let what = if online {
            "the agent to connect"
        } else {
            "the agent to go offline"
        };
        Wait::new(what)
            .until(|| async { self.agent(id).await["online"] == online })
            .await;
    }

    /// Issues a `kind` command (`restart-worker`, …) to `agent`; it must be accepted (202).
    pub async fn issue(&self, agent: &str, kind: &str, mut body: Value) -> String {
        body["agent_id"] = json!(agent);
        let reply = self
            .post_json(&self.project_path(&format!("/commands/{kind}")), body, 202)
            .await;
        reply["id"].as_str().unwrap().to_owned()
    }

    /// A command's detail (whatever the status).
    pub async fn command(&self, id: &str) -> Value {
        self.project_body(&format!("/commands/{id}")).await
    }

    /// Waits up to `limit` for the command to have a status `done` accepts; the command.
    pub async fn wait_command(
        &self,
        id: &str,
        limit: Duration,
        what: &str,
        context: impl Fn() -> String,
        done: impl Fn(&str) -> bool,
    ) -> Value {
        Wait::new(format!("command {id} to be {what}"))
            .within(limit)
            .context(context)
            .until_ok(|| async {
                let command = self.command(id).await;
                match command["status"].as_str() {
                    Some(status) if done(status) => Ok(command),
                    _ => Err(command),
                }
            })
            .await
    }
}
