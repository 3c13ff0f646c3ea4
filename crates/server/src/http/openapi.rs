//! `GET /api/openapi.json`: the REST API as an OpenAPI 3.1 document, built on first request
//! from the handlers' `#[utoipa::path]` annotations and the types they read and write, so
//! it changes with the code. The STOMP side (destinations, frames, headers) is not REST and
//! lives in docs/protocol.md.

use std::sync::LazyLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use warp::Filter;
use warp::reply::{Reply, Response};

use super::{health, presence, rest, web};

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chat-service REST API",
        description = "Rooms, history and sending for chat-service. Real-time delivery is STOMP over \
                       WebSocket at /ws (see docs/protocol.md); everything here is also what a bot or \
                       another service uses. Errors are application/problem+json with a stable `code`. \
                       In jwt mode every request needs `Authorization: Bearer <token>`; in open mode \
                       none does.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        rest::create_room,
        rest::list_rooms,
        rest::get_room,
        rest::history,
        rest::post_message,
        rest::get_member,
        rest::put_member,
        rest::delete_member,
        rest::my_rooms,
        presence::room_presence,
        health::live,
        health::ready,
        health::details,
        health::metrics,
        document,
        web::index,
        web::index_html,
        web::script,
        web::stylesheet,
    ),
    modifiers(&BearerToken),
    tags(
        (name = "rooms", description = "Create, list and read rooms"),
        (name = "messages", description = "History (keyset pages by seq) and sending"),
        (name = "members", description = "Who may read and write a private room"),
        (name = "health", description = "Probes for Kubernetes and load balancers"),
        (name = "admin", description = "For operators; on CHAT_ADMIN_BIND when it is set"),
        (name = "meta", description = "This document"),
        (name = "page", description = "The chat page for people, served from the binary"),
    )
)]
pub(crate) struct ApiDoc;

/// The `bearer` scheme the operations name: a JWT, as `CHAT_AUTH=jwt` verifies it.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub(crate) async fn document() -> Response {
    warp::reply::with_header(DOCUMENT.as_str(), "content-type", "application/json").into_response()
}

pub(crate) fn route() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "openapi.json")
        .and(warp::get())
        .then(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_names_the_bearer_scheme() {
        let document: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for schema in [
            "Room",
            "NewRoom",
            "Member",
            "Problem",
            "ChatMessage",
            "ChatMessageRequest",
        ] {
            assert!(
                document["components"]["schemas"][schema].is_object(),
                "schema {schema} is missing"
            );
        }
    }
}
