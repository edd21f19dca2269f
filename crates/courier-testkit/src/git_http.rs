//! A GitHub stand-in for git itself: bare repositories on disk served over git's smart
//! HTTP protocol by the real `git http-backend` (as CGI), behind a token check like
//! GitHub's (`Basic x-access-token:<token>`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A running git HTTP server over the bare repositories under its root.
#[derive(Debug)]
pub struct GitHttp {
    /// `http://127.0.0.1:<port>`: repositories are at `{url}/{owner}/{repo}.git`.
    pub url: String,
    /// Where the bare repositories live (`{root}/{owner}/{repo}.git`).
    pub root: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Served {
    root: PathBuf,
    token: String,
}

impl GitHttp {
    /// Serves the bare repositories under `root`, accepting only `token`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(root: &Path, token: &str) -> GitHttp {
        let served = Arc::new(Served {
            root: root.to_path_buf(),
            token: token.to_owned(),
        });
        let app = axum::Router::new().fallback(cgi).with_state(served);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GitHttp {
            url,
            root: root.to_path_buf(),
            server,
        }
    }
}

fn authorized(request: &Request, token: &str) -> bool {
    use base64::Engine as _;
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {expected}"))
}

async fn cgi(State(served): State<Arc<Served>>, request: Request) -> Response {
    if !authorized(&request, &served.token) {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"GitHub\"")],
            "bad credentials",
        )
            .into_response();
    }
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &served.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        // Turns receive-pack on, as an authenticated user.
        .env("REMOTE_USER", "x-access-token")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let body = match axum::body::to_bytes(body, 256 << 20).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let Ok(mut child) = command.spawn() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "git http-backend").into_response();
    };
    let mut stdin = child.stdin.take().expect("piped");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let mut out = Vec::new();
    let _ = child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut out)
        .await;
    let _ = writer.await;
    let _ = child.wait().await;
    let Some(split) = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
    else {
        return (StatusCode::BAD_GATEWAY, "git http-backend said nothing").into_response();
    };
    let (head, rest) = out.split_at(split.0);
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    response
        .status(status)
        .body(Body::from(rest[split.1..].to_vec()))
        .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}
