//! What an attacker can do to the real `hivesync` binary over a socket, and what it cannot
//! (docs/SECURITY.md names the test behind each promise).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hivesync_core::testkit;
use hivesync_core::testkit::examples::{example_app, tar_of_sources};
use serde_json::{Value, json};

#[path = "common/binary.rs"]
mod binary;

use binary::{Server, send};

/// A server on the embedded defaults in `data`, with npm's cache from this machine's `HOME`.
fn embedded(data: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("DATA_DIR", data.display().to_string()),
        (
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned()),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    Server::start(&env)
}

/// Registers a user and returns their access token.
async fn register(server: &Server, http: &reqwest::Client, name: &str) -> String {
    let (status, body) = send(http.post(server.url("/api/v1/auth/register")).json(&json!({
        "email": format!("{name}-{}@example.org", testkit::unique_suffix()),
        "password": "a long enough password",
    })))
    .await;
    assert_eq!(status, 201, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A TCP listener on loopback that counts the connections it gets and answers none of them:
/// the internal service an attacker aims at.
async fn bait() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

/// Polls a build's status until it is finished.
async fn finished(server: &Server, http: &reqwest::Client, token: &str, job: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let (status, body) = send(
            http.get(server.url(&format!("/api/v1/preview/status/{job}")))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if ["success", "failed", "cancelled"].contains(&body["status"].as_str().unwrap_or("")) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Item 1 of the hardening issue: a project naming a tarball and a git repository on the
/// worker's loopback gets a clear refusal, the targets are never contacted, and the message
/// carries no server path.
#[tokio::test]
async fn a_dependency_install_reaches_only_the_registries() {
    let data = tempfile::tempdir().unwrap();
    let server = embedded(data.path(), &[]);
    let http = reqwest::Client::new();
    let owner = register(&server, &http, "ssrf").await;
    let (_, project) = send(
        http.post(server.url("/api/v1/projects"))
            .bearer_auth(&owner)
            .json(&json!({"name": "ssrf"})),
    )
    .await;
    let project = project["id"].as_str().unwrap().to_owned();

    let (port, contacted) = bait().await;
    let tarball = format!("http://127.0.0.1:{port}/x.tgz");
    let repository = format!("git+http://127.0.0.1:{port}/y.git");
    let tar = tar_of_sources(&example_app("rn-app"), &|path, bytes| match path {
        "package.json" => {
            let mut manifest: Value = serde_json::from_slice(&bytes).unwrap();
            manifest["dependencies"]["internal-a"] = json!(tarball);
            manifest["dependencies"]["internal-b"] = json!(repository);
            Some(serde_json::to_vec_pretty(&manifest).unwrap())
        }
        // Without the lockfile npm resolves package.json as written.
        "package-lock.json" => None,
        _ => Some(bytes),
    });
    let response = http
        .post(server.url(&format!("/api/v1/projects/{project}/sync")))
        .bearer_auth(&owner)
        .header("content-type", "application/x-tar")
        .body(tar)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let (status, token) = send(
        http.post(server.url("/api/v1/preview/token"))
            .bearer_auth(&owner)
            .json(&json!({"project_id": project, "platform": "android"})),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let token = token["token"].as_str().unwrap().to_owned();
    let (status, accepted) = send(
        http.post(server.url("/api/v1/preview/build"))
            .bearer_auth(&token)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let job = accepted["job_id"].as_str().unwrap();
    let done = finished(&server, &http, &token, job).await;

    let log = http
        .get(server.url(&format!("/api/v1/preview/logs/{job}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "MISSING_DEPENDENCIES", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "the message names what was refused: {message}\n{log}"
    );
    assert!(message.contains("PREVIEW_INSTALL_HOSTS"), "{message}");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    // Neither the message nor the build log (which preview-token holders read) shows where the
    // worker keeps things.
    assert!(log.contains("preview build"), "{log}");
    for path in [
        data.path().to_str().unwrap(),
        home.as_str(),
        "/tmp/",
        "/usr/",
    ] {
        assert!(
            !message.contains(path),
            "the message shows a server path ({path}): {message}"
        );
        assert!(
            !log.contains(path),
            "the build log shows a server path ({path}):\n{log}"
        );
    }
    assert_eq!(
        contacted.load(Ordering::SeqCst),
        0,
        "the build contacted the loopback service"
    );
}

/// Reads what the server sends until it closes the connection; fails when it is still open after
/// `within` (the server's own timeouts are far shorter).
async fn until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("the server still holds the connection");
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends raw bytes on a new connection from `from` (a loopback address) to the server.
async fn raw(server: &Server, from: &str, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let address = server.base.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// The status, the headers (lowercase names) and the JSON body of a raw HTTP/1.1 response.
fn parse_response(text: &str) -> (u16, Vec<(String, String)>, Value) {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not a response: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (
        status,
        headers,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn assert_standard_error(text: &str, status: u16, code: &str) -> Vec<(String, String)> {
    let (got, headers, body) = parse_response(text);
    assert_eq!(got, status, "{text}");
    assert_eq!(body["code"], code, "{text}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{text}"
    );
    assert!(body["details"].is_object(), "{text}");
    assert!(
        header(&headers, "content-type").is_some_and(|t| t.starts_with("application/json")),
        "{text}"
    );
    headers
}

/// Item 2: unfinished headers, a stalled body and an unfinished chunk are all cut off, and a
/// client holding many half-open connections is bounded, while others are still served.
#[tokio::test]
async fn slow_clients_are_cut_off_and_cannot_starve_others() {
    let data = tempfile::tempdir().unwrap();
    let server = embedded(
        data.path(),
        &[
            ("HTTP_HEADER_TIMEOUT_SECONDS", "2"),
            ("HTTP_BODY_TIMEOUT_SECONDS", "2"),
            ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "20"),
        ],
    );
    let within = Duration::from_secs(30);

    // Unfinished headers: closed without an answer.
    let mut stream = raw(
        &server,
        "127.0.0.1",
        b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    until_closed(&mut stream, within).await;

    // 8 of 1,000 announced bytes, then nothing: 408 in the standard shape, and closed.
    let mut stream = raw(
        &server,
        "127.0.0.1",
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"email\"",
    )
    .await;
    let answer = until_closed(&mut stream, within).await;
    let headers = assert_standard_error(&answer, 408, "VALIDATION_ERROR");
    assert_eq!(header(&headers, "connection"), Some("close"), "{answer}");

    // A chunk that announces 1,000 bytes and stops after 8.
    let mut stream = raw(
        &server,
        "127.0.0.1",
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n{\"email\"",
    )
    .await;
    let answer = until_closed(&mut stream, within).await;
    assert_standard_error(&answer, 408, "VALIDATION_ERROR");

    // 40 half-open connections from one address: the 21st and later are answered 429 and closed
    // at once, while another address is served.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(raw(&server, "127.0.0.1", b"GET /api/v1/health HTTP/1.1\r\n").await);
    }
    for _ in 0..20 {
        let mut refused = raw(&server, "127.0.0.1", b"GET /api/v1/health HTTP/1.1\r\n").await;
        let answer = until_closed(&mut refused, within).await;
        let headers = assert_standard_error(&answer, 429, "RATE_LIMITED");
        assert_eq!(header(&headers, "retry-after"), Some("1"), "{answer}");
    }
    let mut other = raw(
        &server,
        "127.0.0.2",
        b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answer = until_closed(&mut other, within).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The held ones are cut off by the header timeout, which frees their places.
    for mut stream in held {
        until_closed(&mut stream, within).await;
    }
    let (status, _) = send(reqwest::Client::new().get(server.url("/api/v1/health"))).await;
    assert_eq!(status, 200);
}

/// Item 6: what hyper itself refuses (a malformed Content-Length, a URL too long, too many
/// headers) answers in the standard error shape, and a response sent before the request's body
/// was read says the connection closes.
#[tokio::test]
async fn malformed_requests_get_the_standard_error_shape() {
    let data = tempfile::tempdir().unwrap();
    let server = embedded(data.path(), &[]);
    let within = Duration::from_secs(30);

    let mut stream = raw(
        &server,
        "127.0.0.1",
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n{}",
    )
    .await;
    let answer = until_closed(&mut stream, within).await;
    let headers = assert_standard_error(&answer, 400, "VALIDATION_ERROR");
    assert_eq!(header(&headers, "connection"), Some("close"), "{answer}");

    let long = format!(
        "GET /api/v1/projects?x={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let mut stream = raw(&server, "127.0.0.1", long.as_bytes()).await;
    let answer = until_closed(&mut stream, within).await;
    assert_standard_error(&answer, 414, "VALIDATION_ERROR");

    let many: String = (0..200).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let request = format!("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let mut stream = raw(&server, "127.0.0.1", request.as_bytes()).await;
    let answer = until_closed(&mut stream, within).await;
    assert_standard_error(&answer, 431, "VALIDATION_ERROR");

    // 5 MB announced to a JSON route (1 MiB limit): 413 before the body is read, and the
    // connection closes, as the answer says.
    let mut stream = raw(
        &server,
        "127.0.0.1",
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{",
    )
    .await;
    let answer = until_closed(&mut stream, within).await;
    let headers = assert_standard_error(&answer, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(header(&headers, "connection"), Some("close"), "{answer}");

    // A well-formed request on a kept-alive connection is unaffected.
    let mut stream = raw(
        &server,
        "127.0.0.1",
        b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answer = until_closed(&mut stream, within).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let second = &answer[answer.find("HTTP/1.1 404").expect("the second answer")..];
    assert_standard_error(second, 404, "NOT_FOUND");
}

/// Item 6: a NUL character in JSON text or in the URL is refused the same way on SQLite and on
/// PostgreSQL (which cannot store it), and an escaped backslash before `u0000` is plain text.
#[tokio::test]
async fn a_nul_character_is_refused_alike_on_every_database() {
    let data = tempfile::tempdir().unwrap();
    let mut servers = vec![("sqlite", embedded(data.path(), &[]), None)];
    let test = "a_nul_character_is_refused_alike_on_every_database";
    let pg_data = tempfile::tempdir().unwrap();
    if let Some(admin_url) = testkit::service_env("DATABASE_URL", test) {
        let database = testkit::postgres::TestDatabase::create(&admin_url)
            .await
            .unwrap();
        let jwt = format!("jwt-{}-{}", testkit::unique_suffix(), "x".repeat(32));
        let preview = format!("pt-{}-{}", testkit::unique_suffix(), "y".repeat(32));
        let server = embedded(
            pg_data.path(),
            &[
                ("DATABASE_URL", database.url()),
                ("JWT_SECRET", &jwt),
                ("PREVIEW_TOKEN_SECRET", &preview),
            ],
        );
        servers.push(("postgres", server, Some(database)));
    }
    let http = reqwest::Client::new();
    for (name, server, _) in &servers {
        let token = register(server, &http, "nul").await;
        let refused = [
            (
                "PATCH",
                "/api/v1/users/me",
                r#"{"preferences": {"theme": "a\u0000b"}}"#,
            ),
            (
                "PATCH",
                "/api/v1/users/me",
                r#"{"preferences": {"a\u0000": 1}}"#,
            ),
            ("POST", "/api/v1/projects", r#"{"name": "x\u0000y"}"#),
            ("GET", "/api/v1/projects?after=%00", ""),
        ];
        for (method, path, body) in refused {
            let request = http
                .request(method.parse().unwrap(), server.url(path))
                .bearer_auth(&token)
                .header("content-type", "application/json");
            let request = if body.is_empty() {
                request
            } else {
                request.body(body)
            };
            let (status, answer) = send(request).await;
            assert_eq!(status, 400, "{name}: {method} {path} {body}: {answer}");
            assert_eq!(answer["code"], "VALIDATION_ERROR", "{name}: {answer}");
        }
        let (status, answer) = send(
            http.patch(server.url("/api/v1/users/me"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(r#"{"preferences": {"theme": "\\u0000"}}"#),
        )
        .await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(
            answer["preferences"]["theme"], "\\u0000",
            "{name}: {answer}"
        );
    }
    for (_, server, database) in servers {
        drop(server);
        if let Some(database) = database {
            database.drop_database().await.unwrap();
        }
    }
}

/// Item 4: failures spread over many addresses keep guessing as slow as before (the account is
/// locked for addresses it never signed in from), but never lock its owner out of an address
/// they signed in from.
#[tokio::test]
async fn distributed_login_failures_do_not_lock_the_owner_out() {
    let data = tempfile::tempdir().unwrap();
    let server = embedded(data.path(), &[("TRUST_PROXY_HEADERS", "true")]);
    let http = reqwest::Client::new();
    let email = format!("owner-{}@example.org", testkit::unique_suffix());
    let password = "the owner's long password";
    let login = |from: String, password: &'static str| {
        let request = http
            .post(server.url("/api/v1/auth/login"))
            .header("x-forwarded-for", from)
            .json(&json!({"email": email, "password": password}));
        async move { send(request).await.0 }
    };
    let (status, _) = send(
        http.post(server.url("/api/v1/auth/register"))
            .header("x-forwarded-for", "10.0.0.1")
            .json(&json!({"email": email, "password": password})),
    )
    .await;
    assert_eq!(status, 201);

    // Two addresses at their own limit, and thirteen with one failure each.
    let mut answers = Vec::new();
    for from in ["10.9.0.1", "10.9.0.2"] {
        for _ in 0..10 {
            answers.push(login(from.to_owned(), "wrong guess").await);
        }
    }
    for i in 0..13 {
        answers.push(login(format!("10.8.0.{i}"), "wrong guess").await);
    }
    assert!(
        answers.iter().all(|s| *s == 401 || *s == 429),
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 401).count(),
        10,
        "the account took ten failures a minute from new addresses, as before: {answers:?}"
    );
    // Guessing stays locked from any other new address, even with the right password.
    assert_eq!(login("10.7.0.1".to_owned(), "wrong guess").await, 429);
    assert_eq!(login("10.7.0.2".to_owned(), password).await, 429);
    // The owner, from where they signed in, gets in every time.
    for _ in 0..8 {
        assert_eq!(login("10.0.0.1".to_owned(), password).await, 200);
    }
    // Their address's own failures still count, against that address.
    let mut own = Vec::new();
    for _ in 0..2 {
        own.push(login("10.0.0.1".to_owned(), "a typo").await);
    }
    assert_eq!(
        own,
        [401, 429],
        "ten attempts a minute per address, as before"
    );
}

/// Item 5, in part (schemathesis runs the rest): the served document states what the server
/// enforces — closed request objects, nullable optional fields, parameter bounds, the 408 and
/// 415 answers — and a 405 names the methods the path takes.
#[tokio::test]
async fn the_served_spec_states_what_the_server_enforces() {
    let data = tempfile::tempdir().unwrap();
    let server = embedded(data.path(), &[]);
    let http = reqwest::Client::new();
    let (status, spec) = send(http.get(server.url("/api/v1/openapi.json"))).await;
    assert_eq!(status, 200);
    let schemas = &spec["components"]["schemas"];
    let token = register(&server, &http, "spec").await;

    let mut bodies = 0;
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let Some(body) = operation.get("requestBody") else {
                continue;
            };
            assert!(responses.contains_key("415"), "{method} {path}");
            assert!(responses.contains_key("408"), "{method} {path}");
            let Some(reference) = body
                .pointer("/content/application~1json; charset=utf-8/schema/$ref")
                .or_else(|| body.pointer("/content/application~1json/schema/$ref"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let name = reference.trim_start_matches("#/components/schemas/");
            assert_eq!(
                schemas[name]["additionalProperties"], false,
                "{method} {path}: {name} takes no unknown properties"
            );
            bodies += 1;
        }
    }
    assert!(bodies >= 10, "{bodies} JSON request bodies");
    // And the server refuses what the document says it refuses.
    let (status, answer) = send(
        http.post(server.url("/api/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({"name": "p", "colour": "red"})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        schemas["ProjectList"]["properties"]["next_after"]["nullable"],
        true
    );
    let limit = spec["paths"]["/projects"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(limit["schema"]["maximum"].as_f64(), Some(200.0));
    let (status, answer) = send(
        http.get(server.url("/api/v1/projects?limit=0"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["details"]["field"], "limit", "{answer}");

    // A method the path does not take: 405 with Allow.
    for (method, path, allow) in [
        ("TRACE", "/api/v1/projects", "GET, HEAD, POST"),
        ("PUT", "/api/v1/users/me", "GET, HEAD, PATCH"),
        ("DELETE", "/api/v1/health", "GET, HEAD"),
    ] {
        let response = http
            .request(method.parse().unwrap(), server.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }
    // A missing Content-Type: the documented 415, in the standard shape.
    let (status, answer) = send(
        http.post(server.url("/api/v1/projects"))
            .bearer_auth(&token)
            .body(r#"{"name": "p"}"#),
    )
    .await;
    assert_eq!(status, 415, "{answer}");
    assert_eq!(answer["code"], "VALIDATION_ERROR", "{answer}");

    // Rules that need look-aheads are in the document as patterns, and configured bounds as
    // bounds; the server answers by them (a test next to each rule shows pattern and check agree).
    let file = &schemas["ManifestFileView"]["properties"];
    assert_eq!(
        file["path"]["pattern"],
        hivesync_core::repo::RepoPath::PATTERN
    );
    assert_eq!(file["size"]["maximum"].as_u64(), Some(50 * 1024 * 1024));
    assert_eq!(
        schemas["PlanRequest"]["properties"]["branch"]["pattern"],
        hivesync_core::repo::BranchName::PATTERN
    );
    assert_eq!(
        schemas["ImportRequest"]["properties"]["url"]["pattern"],
        hivesync_core::repo::IMPORT_URL_PATTERN
    );
    let (status, project) = send(
        http.post(server.url("/api/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({"name": "rules"})),
    )
    .await;
    assert_eq!(status, 201, "{project}");
    let plan = server.url(&format!(
        "/api/v1/projects/{}/sync/plan",
        project["id"].as_str().unwrap()
    ));
    let file = |path: &str, size: u64| json!({"path": path, "size": size, "mode": "file", "hash": "0".repeat(40)});
    for (body, field) in [
        (json!({"branch": "HEAD", "files": [file("a", 1)]}), "branch"),
        (
            json!({"branch": "x.lock", "files": [file("a", 1)]}),
            "branch",
        ),
        (json!({"files": [file("a/.git/config", 1)]}), "path"),
        (json!({"files": [file(&"é".repeat(64), 1)]}), "path"),
        (json!({"files": [file("a", 50 * 1024 * 1024 + 1)]}), "size"),
        (json!({"files": []}), "files"),
    ] {
        let (status, answer) = send(http.post(&plan).bearer_auth(&token).json(&body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["details"]["field"], field, "{body}: {answer}");
    }
    let (status, answer) =
        send(http.post(&plan).bearer_auth(&token).json(
            &json!({"branch": "feature/été", "files": [file("dir/é.txt", 50 * 1024 * 1024)]}),
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["missing"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
}
