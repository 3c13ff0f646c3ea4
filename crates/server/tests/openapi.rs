//! `GET /api/openapi.json` against the server itself: every route the server answers is in
//! the document and every documented operation is answered (so the document cannot fall
//! behind a new route), and schemathesis (from PyPI) fuzzes the real binary from the
//! document: no 5xx, and every response's status, content type, headers and body match it.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::process::ServerProcess;
use support::spawn_app;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// Whether the server has a route for this request: anything but its "no such endpoint"
/// and "method not allowed" answers.
async fn answers(client: &reqwest::Client, method: &str, url: &str) -> bool {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method.clone(), url);
    if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
        request = request
            .header("content-type", "application/json")
            .body("{}");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    !(status == 405 || (status == 404 && body["code"] == "NOT_FOUND"))
}

#[tokio::test]
async fn every_route_the_server_answers_is_in_the_document_and_back() {
    let app = spawn_app().await;
    let document: Value = reqwest::get(app.http("/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                documented.insert((method, path.clone()));
            }
        }
    }
    assert!(documented.len() >= 12, "{documented:?}");

    let room = app.create_room("routes").await.to_string();
    let concrete = |template: &str| template.replace("{id}", &room).replace("{userId}", "7");
    // The documented paths, and their neighbours a new route would most likely take.
    let mut templates: BTreeSet<String> = documented.iter().map(|(_, p)| p.clone()).collect();
    templates.extend(
        [
            "/",
            "/api",
            "/api/me",
            "/api/me/rooms",
            "/api/chatrooms/{id}/members",
            "/api/chatrooms/{id}/messages/{userId}",
            "/api/chatrooms/{id}/presence",
            "/api/users",
            "/health",
            "/index.html",
        ]
        .map(str::to_owned),
    );
    let client = reqwest::Client::new();
    for template in &templates {
        for method in METHODS {
            let url = app.http(&concrete(template));
            let is_route = answers(&client, method, &url).await;
            let is_documented = documented.contains(&(method, template.clone()));
            assert_eq!(
                is_route,
                is_documented,
                "{method} {template}: the server {} it and the OpenAPI document {} it",
                if is_route {
                    "answers"
                } else {
                    "does not answer"
                },
                if is_documented {
                    "has"
                } else {
                    "does not have"
                },
            );
        }
    }
}

/// Runs schemathesis (PyPI: `pip install schemathesis`; scripts/test installs it) against
/// the release-shaped binary on its embedded default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let server = ServerProcess::start(&[("CHAT_ROOM_CREATE_RATE", "30")]).await;
    let schema = format!("http://{}/api/openapi.json", server.addr);
    let run = tokio::process::Command::new("schemathesis")
        .args(["run", &schema, "--no-color", "--seed", "20261203"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "60"])
        // Its example database (.schemathesis/) goes there, not into the source tree.
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("schemathesis finishes within 5 minutes")
        .unwrap_or_else(|e| {
            panic!(
                "cannot run schemathesis ({e}): install it with `python3 -m pip install \
                 schemathesis` (scripts/test does when it is missing)"
            )
        });
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // It really ran every operation: "Selected: N/N" and "Tested: N".
    let figure = |label: &str| {
        report
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.trim().split('/').next_back()?.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{report}"))
    };
    assert!(figure("Selected:") >= 12, "{report}");
    assert_eq!(figure("Tested:"), figure("Selected:"), "{report}");
    assert_eq!(server.terminate().await.code(), Some(0));
}
