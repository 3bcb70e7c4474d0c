//! Celery on Redis over TLS (`rediss://`), all real: a `redis-server` of the test's own serving
//! TLS only and requiring client certificates, with certificates from a CA made in the test; a
//! Celery worker that reaches it with kombu's `ssl_*` URL options; an agent that trusts the CA
//! through `--broker-ca-file` and presents its own certificate. A wrong CA is refused at enroll,
//! before the token is spent.

mod support;

use std::path::Path;

use support::{AGENT, CeleryHost};
use taskward_testkit::agent::enroll_output;
use taskward_testkit::{Broker, RedisServer, RedisTls, TestCa};

/// The TLS Redis, the CA's file, the client certificate and key the agent presents.
struct TlsRedis {
    redis: RedisServer,
    ca_file: String,
    client_cert: String,
    client_key: String,
}

fn tls_redis(dir: &Path) -> TlsRedis {
    let ca = TestCa::new("taskward broker CA");
    let ca_file = ca.write_pem(&dir.join("ca.pem"));
    let (cert, key) = ca.issue_loopback().write(&dir.join("server"));
    let (client_cert, client_key) = ca.issue_loopback().write(&dir.join("client"));
    let redis = RedisServer::start_tls(
        &dir.join("redis"),
        RedisTls {
            cert,
            key,
            ca: ca_file.clone(),
            auth_clients: "yes",
        },
    );
    let text = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
    TlsRedis {
        redis,
        ca_file: text(ca_file),
        client_cert: text(client_cert),
        client_key: text(client_key),
    }
}

/// A worker's tasks on a TLS-only Redis reach the brain through an agent that verifies the
/// broker against a private CA and authenticates with a client certificate; the same enroll
/// with a CA that did not sign the broker's certificate fails, saying so, and the token then
/// still enrolls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_celery_worker_on_rediss_reaches_the_brain_through_a_verifying_agent() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_redis(dir.path());
    let agent_broker = tls.redis.url(0);
    // kombu's own spelling of the same TLS settings, for the worker and the test's Python.
    let celery_broker = format!(
        "{agent_broker}?ssl_cert_reqs=required&ssl_ca_certs={}&ssl_certfile={}&ssl_keyfile={}",
        tls.ca_file, tls.client_cert, tls.client_key
    );
    let tls_flags = [
        "--broker-ca-file",
        tls.ca_file.as_str(),
        "--broker-client-cert",
        tls.client_cert.as_str(),
        "--broker-client-key",
        tls.client_key.as_str(),
    ];
    let host = CeleryHost::start_with(
        Broker::Url(celery_broker),
        &["celery"],
        false,
        Some(&agent_broker),
        &tls_flags,
    )
    .await;
    let _worker = host
        .celery
        .worker("w1@taskward-tls", &["-E", "--pool", "solo"], &[]);
    let id = host.send("app.add.delay(2, 3)");
    host.wait_task(&id, "add over rediss", |t| t.state == "succeeded")
        .await;
    assert_eq!(host.task(&id).unwrap().result.as_deref(), Some("5"));

    // A second agent names a CA that did not sign the broker's certificate.
    let (second, token) = host.api.create_agent("second").await;
    let other_ca = TestCa::new("someone else's CA").write_pem(&dir.path().join("other.pem"));
    let config = dir.path().join("second/agent.toml");
    let enroll = |ca: &str| {
        let mut args = vec!["--broker", agent_broker.as_str(), "--broker-ca-file", ca];
        args.extend_from_slice(&tls_flags[2..]);
        enroll_output(Path::new(AGENT), &config, &host.brain.url(), &token, &args)
    };
    let refused = enroll(other_ca.to_str().unwrap());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot be reached")
            && stderr.contains("does not chain to --broker-ca-file"),
        "{stderr}"
    );
    assert!(!config.exists());
    assert_eq!(
        host.api.agent(&second).await["enrolled"],
        false,
        "token unspent"
    );

    let enrolled = enroll(&tls.ca_file);
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("broker_ca_file"), "{written}");
}
