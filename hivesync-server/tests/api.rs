//! The `/api/v1` service through poem's `TestClient`, on the embedded defaults.

mod common;

use common::{TestApp, TestUser};
use poem::http::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn register_login_and_profile() {
    let app = TestApp::new().await;
    let answer = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "  Ada@Example.ORG ", "password": "analytical engine"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 3600);
    assert_eq!(
        answer.body["user"]["email"], "ada@example.org",
        "addresses are normalised"
    );
    assert_eq!(
        answer.body["user"]["display_name"], "ada",
        "defaults to the local part"
    );
    assert!(answer.body["user"].get("password_hash").is_none());

    // Registering the same address again, in another case, conflicts.
    let again = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "ADA@example.org", "password": "another password"}),
        )
        .await;
    again.assert_error(StatusCode::CONFLICT, "CONFLICT");

    let login = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ada@EXAMPLE.org", "password": "analytical engine"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let token = login.body["access_token"].as_str().unwrap().to_owned();

    let me = app.get("/api/v1/users/me", Some(&token)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["email"], "ada@example.org");
    assert_eq!(me.body["preferences"], json!({}));

    let updated = app
        .patch(
            "/api/v1/users/me",
            Some(&token),
            json!({"display_name": "Ada Lovelace", "preferences": {"theme": "dark", "font_size": 14}}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(updated.body["display_name"], "Ada Lovelace");
    assert_eq!(updated.body["preferences"]["font_size"], 14);
    // An absent field is left alone.
    let renamed = app
        .patch(
            "/api/v1/users/me",
            Some(&token),
            json!({"display_name": "Ada"}),
        )
        .await;
    assert_eq!(renamed.body["preferences"]["theme"], "dark");
    assert_eq!(
        app.get("/api/v1/users/me", Some(&token)).await.body["display_name"],
        "Ada"
    );
}

#[tokio::test]
async fn login_failures_do_not_reveal_which_part_was_wrong() {
    let app = TestApp::new().await;
    let user = app.register("bob").await;
    let wrong_password = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": user.email, "password": "not the password"}),
        )
        .await;
    let unknown_account = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "nobody@example.org", "password": "whatever1"}),
        )
        .await;
    let malformed = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "not-an-email", "password": "whatever1"}),
        )
        .await;
    for answer in [&wrong_password, &unknown_account, &malformed] {
        answer.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    assert_eq!(
        wrong_password.body, unknown_account.body,
        "identical answers"
    );
}

#[tokio::test]
async fn registration_validates_its_input() {
    let app = TestApp::new().await;
    let cases = [
        (
            json!({"email": "no-at-sign", "password": "long enough"}),
            "email",
        ),
        (
            json!({"email": "a@example.org", "password": "short"}),
            "password",
        ),
        (
            json!({"email": "a@example.org", "password": "long enough", "display_name": "   "}),
            "display_name",
        ),
        (
            json!({"email": "a@example.org", "password": "x".repeat(1025)}),
            "password",
        ),
    ];
    for (body, field) in cases {
        let answer = app.post("/api/v1/auth/register", None, body).await;
        let body = answer.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(body["details"]["field"], field, "{}", answer.text);
    }
    let answer = app.post("/api/v1/users/me", None, json!({})).await;
    answer.assert_error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn malformed_requests_get_the_standard_error_shape() {
    let app = TestApp::new().await;
    let user = app.register("carol").await;
    let token = Some(user.token.as_str());

    // Malformed JSON.
    let raw = app
        .client
        .post("/api/v1/projects")
        .header("authorization", format!("Bearer {}", user.token))
        .content_type("application/json")
        .body("{\"name\": ")
        .send()
        .await;
    common::read(raw)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    // Wrong types, missing fields, unknown fields.
    for body in [
        json!({"name": 42}),
        json!({}),
        json!({"name": "x", "colour": "red"}),
        json!([1, 2]),
    ] {
        let answer = app.post("/api/v1/projects", token, body.clone()).await;
        answer.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }
    // A wrong content type.
    let raw = app
        .client
        .post("/api/v1/projects")
        .header("authorization", format!("Bearer {}", user.token))
        .content_type("text/plain")
        .body("name=x")
        .send()
        .await;
    common::read(raw)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "VALIDATION_ERROR");
    // Unknown ids and malformed ids.
    let unknown = uuid::Uuid::now_v7();
    app.get(&format!("/api/v1/projects/{unknown}"), token)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    app.get("/api/v1/projects/not-a-uuid", token)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    // Unknown routes.
    app.get("/api/v1/nothing-here", token)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    // Query parameters out of range.
    app.get("/api/v1/projects?limit=0", token)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    app.get("/api/v1/projects?limit=abc", token)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    // Preferences must be an object.
    app.patch("/api/v1/users/me", token, json!({"preferences": [1, 2, 3]}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    // A value of the wrong type is refused without being echoed back (it may be a password).
    let answer = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": user.email, "password": 987654321}),
        )
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert!(!answer.text.contains("987654321"), "{}", answer.text);
}

#[tokio::test]
async fn preferences_can_be_reset_with_null() {
    let app = TestApp::new().await;
    let user = app.register("heidi").await;
    let token = Some(user.token.as_str());
    app.patch(
        "/api/v1/users/me",
        token,
        json!({"preferences": {"theme": "dark"}}),
    )
    .await;
    let reset = app
        .patch("/api/v1/users/me", token, json!({"preferences": null}))
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text);
    assert_eq!(reset.body["preferences"], json!({}));
}

#[tokio::test]
async fn a_panicking_handler_answers_500_in_the_standard_shape() {
    #[poem::handler]
    fn explode() -> &'static str {
        panic!("boom")
    }
    let app = TestApp::new().await;
    let routes = poem::Route::new().at("/explode", poem::get(explode));
    let client = poem::test::TestClient::new(hivesync_server::http::with_middleware(
        routes,
        app.state.clone(),
    ));
    let answer = common::read(client.get("/explode").send().await).await;
    let body = answer.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR");
    assert_eq!(body["message"], "internal error");
    assert!(answer.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = TestApp::with_env(&[("MAX_REQUEST_BODY_BYTES", "2048")]).await;
    let user = app.register("dave").await;
    let big = json!({"name": "x", "description": "d".repeat(4000)});
    // Chunked (no Content-Length): refused while reading.
    let answer = app
        .post("/api/v1/projects", Some(&user.token), big.clone())
        .await;
    let body = answer.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    assert!(body["message"].as_str().unwrap().contains("2048"));
    // Declared too large: refused before reading.
    let raw = app
        .client
        .post("/api/v1/projects")
        .header("authorization", format!("Bearer {}", user.token))
        .header("content-length", "999999")
        .content_type("application/json")
        .body(serde_json::to_vec(&big).unwrap())
        .send()
        .await;
    common::read(raw)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    // Nothing was created.
    let list = app.get("/api/v1/projects", Some(&user.token)).await;
    assert_eq!(list.body["items"], json!([]));
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let app = TestApp::new().await;
    let user = app.register("erin").await;
    let mut tampered = user.token.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let expired = app
        .state
        .jwt
        .issue(
            user.id.parse().unwrap(),
            chrono::Utc::now().timestamp() - 7200,
        )
        .unwrap();
    let none_alg = {
        use base64::Engine;
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = json!({"sub": user.id, "iss": "hivesync", "iat": 0, "exp": 9_999_999_999_i64});
        format!(
            "{}.{}.",
            enc.encode(r#"{"alg":"none","typ":"JWT"}"#),
            enc.encode(claims.to_string())
        )
    };
    for token in [
        tampered.as_str(),
        expired.as_str(),
        none_alg.as_str(),
        "garbage",
    ] {
        app.get("/api/v1/users/me", Some(token))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    app.get("/api/v1/users/me", None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let raw = app
        .client
        .get("/api/v1/users/me")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await;
    common::read(raw)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn every_protected_route_requires_a_token() {
    let app = TestApp::new().await;
    let id = uuid::Uuid::now_v7();
    let routes = [
        (Method::GET, "/api/v1/users/me".to_owned()),
        (Method::PATCH, "/api/v1/users/me".to_owned()),
        (Method::GET, "/api/v1/projects".to_owned()),
        (Method::POST, "/api/v1/projects".to_owned()),
        (Method::GET, format!("/api/v1/projects/{id}")),
        (Method::PATCH, format!("/api/v1/projects/{id}")),
        (Method::DELETE, format!("/api/v1/projects/{id}")),
        (Method::GET, format!("/api/v1/projects/{id}/members")),
        (Method::POST, format!("/api/v1/projects/{id}/members")),
        (Method::PATCH, format!("/api/v1/projects/{id}/members/{id}")),
        (
            Method::DELETE,
            format!("/api/v1/projects/{id}/members/{id}"),
        ),
    ];
    for (method, path) in routes {
        let answer = app.call(method.clone(), &path, None, Some(json!({}))).await;
        answer.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn project_crud_and_paging() {
    let app = TestApp::new().await;
    let owner = app.register("owner").await;
    let token = Some(owner.token.as_str());
    let created = app
        .post(
            "/api/v1/projects",
            token,
            json!({"name": "  Hive  ", "description": "first"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["name"], "Hive", "names are trimmed");
    assert_eq!(created.body["role"], "owner");
    assert_eq!(created.body["created_by"], owner.id.as_str());
    let id = created.body["id"].as_str().unwrap().to_owned();

    let fetched = app.get(&format!("/api/v1/projects/{id}"), token).await;
    assert_eq!(fetched.body["description"], "first");

    let patched = app
        .patch(
            &format!("/api/v1/projects/{id}"),
            token,
            json!({"name": "Hive 2"}),
        )
        .await;
    assert_eq!(
        (
            patched.body["name"].as_str(),
            patched.body["description"].as_str()
        ),
        (Some("Hive 2"), Some("first"))
    );
    app.patch(
        &format!("/api/v1/projects/{id}"),
        token,
        json!({"name": ""}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");

    for i in 0..4 {
        app.create_project(&owner, &format!("p{i}")).await;
    }
    let page1 = app.get("/api/v1/projects?limit=3", token).await;
    assert_eq!(page1.body["items"].as_array().unwrap().len(), 3);
    let after = page1.body["next_after"]
        .as_str()
        .expect("more pages")
        .to_owned();
    let page2 = app
        .get(&format!("/api/v1/projects?limit=3&after={after}"), token)
        .await;
    let names: Vec<&str> = page2.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p2", "p3"]);
    assert!(
        page2.body.get("next_after").is_none_or(Value::is_null),
        "last page"
    );

    let deleted = app.delete(&format!("/api/v1/projects/{id}"), token).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.get(&format!("/api/v1/projects/{id}"), token)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

/// The roles that an actor can have in a project, for the authorization matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    NonMember,
    Viewer,
    Editor,
    Owner,
}

struct Cast {
    owner: TestUser,
    editor: TestUser,
    viewer: TestUser,
    outsider: TestUser,
    target: TestUser,
    newcomer: TestUser,
}

impl Cast {
    fn actor(&self, actor: Actor) -> &TestUser {
        match actor {
            Actor::NonMember => &self.outsider,
            Actor::Viewer => &self.viewer,
            Actor::Editor => &self.editor,
            Actor::Owner => &self.owner,
        }
    }
}

#[tokio::test]
async fn authorization_matrix() {
    let app = TestApp::new().await;
    let cast = Cast {
        owner: app.register("owner").await,
        editor: app.register("editor").await,
        viewer: app.register("viewer").await,
        outsider: app.register("outsider").await,
        target: app.register("target").await,
        newcomer: app.register("newcomer").await,
    };
    use Actor::*;
    type Expect = [(Actor, StatusCode); 4];
    let read: Expect = [
        (NonMember, StatusCode::NOT_FOUND),
        (Viewer, StatusCode::OK),
        (Editor, StatusCode::OK),
        (Owner, StatusCode::OK),
    ];
    let edit: Expect = [
        (NonMember, StatusCode::NOT_FOUND),
        (Viewer, StatusCode::FORBIDDEN),
        (Editor, StatusCode::OK),
        (Owner, StatusCode::OK),
    ];
    let manage = |ok: StatusCode| -> Expect {
        [
            (NonMember, StatusCode::NOT_FOUND),
            (Viewer, StatusCode::FORBIDDEN),
            (Editor, StatusCode::FORBIDDEN),
            (Owner, ok),
        ]
    };
    let routes: Vec<(&str, Method, &str, Option<Value>, Expect)> = vec![
        ("get project", Method::GET, "", None, read),
        (
            "update project",
            Method::PATCH,
            "",
            Some(json!({"description": "changed"})),
            edit,
        ),
        (
            "delete project",
            Method::DELETE,
            "",
            None,
            manage(StatusCode::NO_CONTENT),
        ),
        ("list members", Method::GET, "/members", None, read),
        (
            "add member",
            Method::POST,
            "/members",
            Some(json!({"email": cast.newcomer.email, "role": "viewer"})),
            manage(StatusCode::CREATED),
        ),
        (
            "change role",
            Method::PATCH,
            "/members/{target}",
            Some(json!({"role": "editor"})),
            manage(StatusCode::OK),
        ),
        (
            "remove member",
            Method::DELETE,
            "/members/{target}",
            None,
            manage(StatusCode::NO_CONTENT),
        ),
    ];
    for (name, method, suffix, body, expectations) in routes {
        for (actor, expected) in expectations {
            // A fresh project per case, so that one case's change cannot decide another's outcome.
            let project = app.create_project(&cast.owner, name).await;
            app.add_member(&cast.owner, &project, &cast.editor, "editor")
                .await;
            app.add_member(&cast.owner, &project, &cast.viewer, "viewer")
                .await;
            app.add_member(&cast.owner, &project, &cast.target, "viewer")
                .await;
            let path = format!(
                "/api/v1/projects/{project}{}",
                suffix.replace("{target}", &cast.target.id)
            );
            let user = cast.actor(actor);
            let answer = app
                .call(method.clone(), &path, Some(&user.token), body.clone())
                .await;
            assert_eq!(
                answer.status, expected,
                "{name} as {actor:?}: {}",
                answer.text
            );
            if !answer.status.is_success() {
                let code = match expected {
                    StatusCode::NOT_FOUND => "NOT_FOUND",
                    _ => "FORBIDDEN",
                };
                answer.assert_error(expected, code);
            }
            // A refused request changed nothing: same members with the same roles, same project.
            if !answer.status.is_success() {
                let after = app
                    .get(
                        &format!("/api/v1/projects/{project}/members"),
                        Some(&cast.owner.token),
                    )
                    .await;
                let members: Vec<(String, String)> = after.body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        (
                            m["user_id"].as_str().unwrap().to_owned(),
                            m["role"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                let expected: Vec<(String, String)> = [
                    (&cast.owner, "owner"),
                    (&cast.editor, "editor"),
                    (&cast.viewer, "viewer"),
                    (&cast.target, "viewer"),
                ]
                .iter()
                .map(|(u, r)| (u.id.clone(), (*r).to_owned()))
                .collect();
                assert_eq!(members, expected, "{name} as {actor:?}");
                let project_now = app
                    .get(
                        &format!("/api/v1/projects/{project}"),
                        Some(&cast.owner.token),
                    )
                    .await;
                assert_eq!(
                    project_now.status,
                    StatusCode::OK,
                    "{name} as {actor:?}: the project still exists"
                );
                assert_eq!(project_now.body["description"], "", "{name} as {actor:?}");
            }
        }
    }
    // A non-member learns nothing: the answer for an existing project equals the one for a
    // project that does not exist.
    let project = app.create_project(&cast.owner, "secret").await;
    let existing = app
        .get(
            &format!("/api/v1/projects/{project}"),
            Some(&cast.outsider.token),
        )
        .await;
    let missing = app
        .get(
            &format!("/api/v1/projects/{}", uuid::Uuid::now_v7()),
            Some(&cast.outsider.token),
        )
        .await;
    assert_eq!(
        (existing.status, &existing.body),
        (missing.status, &missing.body)
    );
    let listed = app
        .get("/api/v1/projects", Some(&cast.outsider.token))
        .await;
    assert_eq!(listed.body["items"], json!([]));
}

#[tokio::test]
async fn members_and_the_last_owner() {
    let app = TestApp::new().await;
    let owner = app.register("owner").await;
    let viewer = app.register("viewer").await;
    let other = app.register("other").await;
    let project = app.create_project(&owner, "team").await;
    let members_path = format!("/api/v1/projects/{project}/members");

    let added = app
        .post(
            &members_path,
            Some(&owner.token),
            json!({"email": viewer.email.to_uppercase(), "role": "viewer"}),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    assert_eq!(added.body["role"], "viewer");
    assert_eq!(added.body["user_id"], viewer.id.as_str());

    app.post(
        &members_path,
        Some(&owner.token),
        json!({"email": viewer.email, "role": "editor"}),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "CONFLICT");
    app.post(
        &members_path,
        Some(&owner.token),
        json!({"email": "ghost@example.org", "role": "viewer"}),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "CONFLICT");
    app.post(
        &members_path,
        Some(&owner.token),
        json!({"email": other.email, "role": "admin"}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");

    // The last owner can neither leave nor be demoted.
    let owner_path = format!("{members_path}/{}", owner.id);
    app.delete(&owner_path, Some(&owner.token))
        .await
        .assert_error(StatusCode::CONFLICT, "CONFLICT");
    app.patch(&owner_path, Some(&owner.token), json!({"role": "editor"}))
        .await
        .assert_error(StatusCode::CONFLICT, "CONFLICT");

    // A viewer may leave on their own.
    let left = app
        .delete(
            &format!("{members_path}/{}", viewer.id),
            Some(&viewer.token),
        )
        .await;
    assert_eq!(left.status, StatusCode::NO_CONTENT);
    app.get(&format!("/api/v1/projects/{project}"), Some(&viewer.token))
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");

    // With a second owner, the first may step down.
    app.add_member(&owner, &project, &other, "owner").await;
    let demoted = app
        .patch(&owner_path, Some(&owner.token), json!({"role": "viewer"}))
        .await;
    assert_eq!(demoted.status, StatusCode::OK, "{}", demoted.text);
    assert_eq!(demoted.body["role"], "viewer");
    // ...and then manages nothing.
    app.post(
        &members_path,
        Some(&owner.token),
        json!({"email": viewer.email, "role": "viewer"}),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    let listed = app.get(&members_path, Some(&owner.token)).await;
    let roles: Vec<(&str, &str)> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            (owner.email.as_str(), "viewer"),
            (other.email.as_str(), "owner")
        ]
    );
}

#[tokio::test]
async fn login_is_rate_limited_per_client_and_per_account() {
    let app = TestApp::with_env(&[
        ("LOGIN_RATE_LIMIT_PER_MINUTE", "3"),
        ("TRUST_PROXY_HEADERS", "true"),
    ])
    .await;
    let user = app.register("frank").await;
    let attempt = |ip: &'static str, email: String| {
        let client = &app.client;
        async move {
            common::read(
                client
                    .post("/api/v1/auth/login")
                    .header("x-forwarded-for", ip)
                    .body_json(&json!({"email": email, "password": "wrong password"}))
                    .send()
                    .await,
            )
            .await
        }
    };
    // Per account: three tries from different addresses, then refused from a fourth.
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        assert_eq!(
            attempt(ip, user.email.clone()).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = attempt("10.0.0.4", user.email.clone()).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(limited.body["details"]["retry_after_seconds"], retry_after);
    // Even the right password is refused while limited.
    let right = common::read(
        app.client
            .post("/api/v1/auth/login")
            .header("x-forwarded-for", "10.0.0.5")
            .body_json(&json!({"email": user.email, "password": user.password}))
            .send()
            .await,
    )
    .await;
    right.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");

    // Per client address: three different accounts from one address, then refused.
    for i in 0..3 {
        let answer = attempt("10.9.9.9", format!("someone{i}@example.org")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    attempt("10.9.9.9", "someone-else@example.org".to_owned())
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
}

#[tokio::test]
async fn successful_logins_never_lock_an_account() {
    let app = TestApp::with_env(&[
        ("LOGIN_RATE_LIMIT_PER_MINUTE", "3"),
        ("TRUST_PROXY_HEADERS", "true"),
    ])
    .await;
    let user = app.register("ivan").await;
    for i in 0..6 {
        let answer = common::read(
            app.client
                .post("/api/v1/auth/login")
                .header("x-forwarded-for", format!("10.1.0.{i}"))
                .body_json(&json!({"email": user.email, "password": user.password}))
                .send()
                .await,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "login {i}: {}", answer.text);
    }
}

#[tokio::test]
async fn only_the_last_forwarded_address_is_trusted() {
    let app = TestApp::with_env(&[
        ("LOGIN_RATE_LIMIT_PER_MINUTE", "2"),
        ("TRUST_PROXY_HEADERS", "true"),
    ])
    .await;
    // A client that forges its own X-Forwarded-For entries still lands on the address the proxy
    // appended last.
    let attempt = |forwarded: String, email: String| {
        let client = &app.client;
        async move {
            common::read(
                client
                    .post("/api/v1/auth/login")
                    .header("x-forwarded-for", forwarded)
                    .body_json(&json!({"email": email, "password": "whatever1"}))
                    .send()
                    .await,
            )
            .await
        }
    };
    for i in 0..2 {
        let answer = attempt(format!("1.2.3.{i}, 192.0.2.7"), format!("x{i}@example.org")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    attempt("9.9.9.9, 192.0.2.7".to_owned(), "x9@example.org".to_owned())
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
}

#[tokio::test]
async fn health_docs_and_request_ids() {
    let app = TestApp::new().await;
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert_eq!(health.body["status"], "ok");
    assert_eq!(health.body["components"]["database"]["status"], "up");
    assert_eq!(health.body["components"]["object_store"]["status"], "up");
    let generated = health.headers["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID");

    let echoed = common::read(
        app.client
            .get("/api/v1/health")
            .header("x-request-id", "abc-123")
            .send()
            .await,
    )
    .await;
    assert_eq!(echoed.headers["x-request-id"], "abc-123");
    let refused = common::read(
        app.client
            .get("/api/v1/health")
            .header("x-request-id", "bad id with spaces")
            .send()
            .await,
    )
    .await;
    assert_ne!(refused.headers["x-request-id"], "bad id with spaces");

    let docs = common::read(app.client.get("/docs").send().await).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.contains("swagger"), "Swagger UI page");
}

#[tokio::test]
async fn the_served_spec_lists_every_route() {
    let app = TestApp::new().await;
    let spec = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(spec.status, StatusCode::OK);
    let paths = spec.body["paths"].as_object().expect("paths");
    let expected = [
        ("/auth/register", "post"),
        ("/auth/login", "post"),
        ("/users/me", "get"),
        ("/users/me", "patch"),
        ("/projects", "get"),
        ("/projects", "post"),
        ("/projects/{id}", "get"),
        ("/projects/{id}", "patch"),
        ("/projects/{id}", "delete"),
        ("/projects/{id}/members", "get"),
        ("/projects/{id}/members", "post"),
        ("/projects/{id}/members/{user_id}", "patch"),
        ("/projects/{id}/members/{user_id}", "delete"),
        ("/projects/{id}/sync", "post"),
        ("/projects/{id}/sync/plan", "post"),
        ("/projects/{id}/sync/commit", "post"),
        ("/projects/{id}/import", "post"),
        ("/projects/{id}/refs", "get"),
        ("/projects/{id}/tree", "get"),
        ("/projects/{id}/files/{path}", "get"),
        ("/preview/token", "post"),
        ("/preview/build", "post"),
        ("/preview/status/{job_id}", "get"),
        ("/preview/download/{job_id}", "get"),
        ("/preview/logs/{job_id}", "get"),
        ("/ai/file-summary", "post"),
        ("/ai/inline-comment", "post"),
        ("/ai/rename-suggestions", "post"),
        ("/ai/result/{job_id}", "get"),
        ("/health", "get"),
        ("/admin/workers", "get"),
        ("/admin/queues", "get"),
        ("/admin/jobs", "get"),
        ("/admin/dead-letters", "get"),
        ("/admin/dead-letters/{job_id}/retry", "post"),
        ("/admin/dead-letters/{job_id}", "delete"),
        ("/admin/autoscaler", "get"),
    ];
    for (path, method) in expected {
        let operation = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[method];
        assert!(operation.is_object(), "{method} {path} missing");
        let responses = operation["responses"].as_object().unwrap();
        if path != "/health" && !path.starts_with("/auth") {
            assert!(
                responses.contains_key("401"),
                "{method} {path} documents 401"
            );
            assert!(
                operation["security"].is_array(),
                "{method} {path} documents its security"
            );
        }
    }
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(operations, expected.len(), "no undocumented extra routes");
    assert_eq!(spec.body["servers"][0]["url"], "/api/v1");
    assert!(spec.body["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn login_limits_are_shared_through_redis() {
    let Some(url) =
        hivesync_core::testkit::service_env("REDIS_URL", "login_limits_are_shared_through_redis")
    else {
        return;
    };
    let prefix = format!("hivesync-test:{}:", hivesync_core::testkit::unique_suffix());
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("LOGIN_RATE_LIMIT_PER_MINUTE", "2"),
        ("TRUST_PROXY_HEADERS", "true"),
    ];
    // Two servers on one Redis: the second sees the attempts made on the first.
    let first = TestApp::with_env(&env).await;
    let second = TestApp::with_env(&env).await;
    assert_eq!(first.state.queue.name(), "redis");
    async fn attempt(app: &TestApp) -> common::Answer {
        common::read(
            app.client
                .post("/api/v1/auth/login")
                .header("x-forwarded-for", "10.7.7.7")
                .body_json(&json!({"email": "someone@example.org", "password": "wrong password"}))
                .send()
                .await,
        )
        .await
    }
    assert_eq!(attempt(&first).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(attempt(&second).await.status, StatusCode::UNAUTHORIZED);
    attempt(&first)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    attempt(&second)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    if let Some(redis) = &first.state.redis {
        redis.clear_namespace().await.unwrap();
    }
}
