//! The OpenAPI document of `/api/v1`, generated from the handlers'
//! declarations and the documents they answer with, plus what every request
//! can meet before a handler runs (`guard`): the bearer token, the host
//! check, body limits, cross-site and content-type refusals.

use std::sync::LazyLock;

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, Response};
use utoipa::{Modify, OpenApi};

use super::{api, talk};

/// The document, generated once.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_pretty_json().unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}")));

/// The OpenAPI document served at `/api/v1/openapi.json`.
pub(super) fn document() -> &'static str {
    &DOCUMENT
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stepbox",
        description = "The stepbox journal over HTTP: the documents of `host … -o json`. Off loopback, every \
                       request needs the server's token (`Authorization: Bearer TOKEN`).",
    ),
    paths(
        api::list,
        api::show,
        api::result,
        api::submit,
        api::cancel,
        api::resume,
        api::fork,
        api::upload,
        api::queues,
        api::workers,
        api::openapi,
        talk::send,
        talk::event,
        talk::schedules,
        talk::set_schedule,
        talk::pause,
        talk::resume,
        talk::delete,
    ),
    modifiers(&Guarded),
)]
struct ApiDoc;

/// What `guard` answers before any handler: the same [`crate::operate::Failure`] document.
struct Guarded;

impl Modify for Guarded {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let failure = |description: &str| {
            Response::builder()
                .description(description)
                .content("application/json", Content::new(Some(Ref::from_schema_name("Failure"))))
                .build()
        };
        let everywhere = [
            ("401", "The server has a token and the request did not present it"),
            ("421", "Without a token the server answers only requests to 127.0.0.1, [::1] or localhost"),
        ];
        let posts = [
            ("403", "A request from another site (Origin or Sec-Fetch-Site)"),
            ("413", "The body is larger than the route takes (64 KiB; 256 MiB for a component)"),
            ("415", "The body's Content-Type is not what the route takes"),
        ];
        for item in openapi.paths.paths.values_mut() {
            let operations: [(&mut Option<Operation>, bool); 2] = [(&mut item.get, false), (&mut item.post, true)];
            for (operation, post) in operations {
                let Some(operation) = operation else { continue };
                operation.security = Some(vec![SecurityRequirement::new::<_, [String; 0], String>("bearer", [])]);
                let extra = everywhere.iter().chain(posts.iter().filter(|_| post));
                for (status, description) in extra {
                    operation.responses.responses.insert((*status).to_string(), failure(description).into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_document_lists_exactly_the_routes_with_their_statuses_and_the_token() {
        let document: serde_json::Value = serde_json::from_str(document()).expect("the document is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().expect("paths");
        let documented: BTreeSet<(String, String)> = paths
            .iter()
            .flat_map(|(path, methods)| {
                methods.as_object().into_iter().flat_map(|m| m.keys()).map(move |method| (path.clone(), method.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> =
            api::table().into_iter().map(|(path, method, _)| (path.to_string(), method.to_string())).collect();
        assert_eq!(documented, served);
        for (path, methods) in paths {
            for (method, operation) in methods.as_object().expect("methods") {
                let responses = operation["responses"].as_object().expect("responses");
                assert!(responses.contains_key("401") && responses.contains_key("421"), "{method} {path}");
                if method == "post" {
                    assert!(["403", "413", "415"].iter().all(|status| responses.contains_key(*status)));
                }
                assert_eq!(operation["security"][0]["bearer"], serde_json::json!([]), "{method} {path}");
            }
        }
        assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        for schema in ["WorkflowList", "WorkflowHistory", "WorkflowResult", "CancelReceipt", "Failure", "SubmitBody"] {
            assert!(document["components"]["schemas"][schema].is_object(), "{schema} is described");
        }
    }
}
