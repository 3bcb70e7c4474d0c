//! The error answers every operation can give for reasons outside its handler, added to the
//! OpenAPI document in one place. The extractors, the authentication and the store answer
//! them for every route alike (a missing token is 401 whatever the route, a body that is not
//! JSON is 415), so listing them by hand on each `#[utoipa::path]` would miss some — and a
//! client generated from the document, or Schemathesis checking the server against it, would
//! then meet answers the document says cannot happen.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// Adds the shared error answers to every operation of `doc` that can give them and does not
/// document them itself (a handler's own wording wins).
pub fn add_to(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let api = path.starts_with("/api/v1/");
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_to_operation(op, api);
        }
    }
}

fn add_to_operation(op: &mut Operation, api: bool) {
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = op.request_body.is_some();
    // No `security` of its own means the document-wide bearer token; `security(())` (the
    // empty requirement) marks the routes open to anyone.
    let needs_token = op.security.as_ref().is_none_or(|reqs| {
        reqs.iter()
            .any(|requirement| *requirement != SecurityRequirement::default())
    });
    if has_params || has_body {
        add(
            op,
            "400",
            "A parameter or the body is invalid; `field` names it",
        );
    }
    if needs_token {
        add(
            op,
            "401",
            "No bearer token, or one that is unknown, expired or revoked",
        );
    }
    if has_body {
        add(op, "413", "The body is larger than the limit");
        add(op, "415", "The body is not sent as `application/json`");
    }
    if api {
        add(
            op,
            "503",
            "The store is unavailable, or the request went over its time budget",
        );
    }
}

/// Documents `status` with the API's error body, unless the operation already documents it.
fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        });
}
