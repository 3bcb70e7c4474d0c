//! How the request trace layer judges a response: a server error is a failure, logged at
//! ERROR, except `/readyz`'s 503. With `--readyz-fail-on-audit` that 503 is the probe's
//! answer while a chain stays broken (reported once, at ERROR, by the audit watch); logging it
//! as a fault on every probe would bury that one line under one per probe.

use std::fmt::Display;

use axum::http::{Request, Response, StatusCode};
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, MakeClassifier, NeverClassifyEos, ServerErrorsAsFailures,
    ServerErrorsFailureClass,
};

/// The path whose 503 is an answer, not a failure.
const READYZ: &str = "/readyz";

/// Makes a [`ProbeAware`] classifier for each request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeAwareClassifier;

/// [`ServerErrorsAsFailures`], but a readiness probe's 503 succeeds.
#[derive(Debug, Clone, Copy)]
pub struct ProbeAware {
    readiness_probe: bool,
}

impl MakeClassifier for ProbeAwareClassifier {
    type Classifier = ProbeAware;
    type FailureClass = ServerErrorsFailureClass;
    type ClassifyEos = NeverClassifyEos<ServerErrorsFailureClass>;

    fn make_classifier<B>(&self, req: &Request<B>) -> ProbeAware {
        ProbeAware {
            readiness_probe: req.uri().path() == READYZ,
        }
    }
}

impl ClassifyResponse for ProbeAware {
    type FailureClass = ServerErrorsFailureClass;
    type ClassifyEos = NeverClassifyEos<ServerErrorsFailureClass>;

    fn classify_response<B>(
        self,
        res: &Response<B>,
    ) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        if self.readiness_probe && res.status() == StatusCode::SERVICE_UNAVAILABLE {
            return ClassifiedResponse::Ready(Ok(()));
        }
        ServerErrorsAsFailures::new().classify_response(res)
    }

    fn classify_error<E: Display + 'static>(self, error: &E) -> Self::FailureClass {
        ServerErrorsAsFailures::new().classify_error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(path: &str, status: StatusCode) -> bool {
        let req = Request::get(path).body(()).unwrap();
        let res = Response::builder().status(status).body(()).unwrap();
        match ProbeAwareClassifier
            .make_classifier(&req)
            .classify_response(&res)
        {
            ClassifiedResponse::Ready(result) => result.is_err(),
            ClassifiedResponse::RequiresEos(_) => unreachable!("never waits for the end"),
        }
    }

    #[test]
    fn only_the_readiness_probes_503_is_not_logged_as_a_failure() {
        assert!(!failed("/readyz", StatusCode::SERVICE_UNAVAILABLE));
        assert!(failed("/readyz", StatusCode::INTERNAL_SERVER_ERROR));
        assert!(failed("/api/v1/projects", StatusCode::SERVICE_UNAVAILABLE));
        assert!(failed("/healthz", StatusCode::SERVICE_UNAVAILABLE));
        assert!(!failed("/api/v1/projects", StatusCode::OK));
    }
}
