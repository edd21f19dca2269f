//! `/git/{owner}/{repo}/…`: git's smart HTTP protocol toward GitHub, with the run token
//! swapped for the real one.
//!
//! A run may fetch and push its one repository, and push only to its own branch: the
//! command list at the head of a `git-receive-pack` request is read before anything is
//! forwarded, and a push naming any other ref, or deleting the branch, is refused whole.
//! The pack that follows is streamed through unread.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::BytesMut;
use futures::{StreamExt as _, TryStreamExt as _};
use http::{HeaderValue, Method, StatusCode};

use crate::{Gateway, GitGrant, Refusal};

/// The most bytes of a push read to find its command list.
const MAX_COMMANDS: usize = 1 << 20;

/// Request headers git's smart HTTP needs upstream; nothing else is passed.
const GIT_REQUEST_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "content-encoding",
    "git-protocol",
    "user-agent",
];

/// What a request asks of the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Fetch,
    Push,
}

fn refuse(refusal: &Refusal) -> Response {
    let mut response = (refusal.status(), format!("courier gateway: {refusal}\n")).into_response();
    if refusal.status() == StatusCode::UNAUTHORIZED {
        // Lets git ask its credential helper, if one is configured.
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"courier gateway\""),
        );
    }
    response
}

pub(crate) async fn forward(
    State(gateway): State<Gateway>,
    Path((owner, repo, rest)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    match forward_to(&gateway, &owner, &repo, &rest, request).await {
        Ok(response) => response,
        Err(refusal) => {
            tracing::info!(%owner, %repo, reason = %refusal, "gateway refused a git request");
            refuse(&refusal)
        }
    }
}

/// Which service a request is for, from its path and query; `None` for anything git's
/// smart HTTP does not use.
fn service(method: &Method, rest: &str, query: Option<&str>) -> Option<Service> {
    let named = |name: &str| match name {
        "git-upload-pack" => Some(Service::Fetch),
        "git-receive-pack" => Some(Service::Push),
        _ => None,
    };
    match (method, rest) {
        (&Method::GET, "info/refs") => {
            let query = query?;
            let name = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("service="))?;
            named(name)
        }
        (&Method::POST, name) => named(name),
        _ => None,
    }
}

fn same_repo(grant: &GitGrant, owner: &str, repo: &str) -> bool {
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    grant.repo.eq_ignore_ascii_case(&format!("{owner}/{repo}"))
}

async fn forward_to(
    gateway: &Gateway,
    owner: &str,
    repo: &str,
    rest: &str,
    request: Request,
) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    let caller = gateway.caller(&parts.headers).await?;
    let grant = caller
        .grant
        .git
        .ok_or_else(|| Refusal::Git("the run has no GitHub repository and token".into()))?;
    if !same_repo(&grant, owner, repo) {
        return Err(Refusal::Git(format!(
            "the run may only reach {}, not {owner}/{repo}",
            grant.repo
        )));
    }
    let service = service(&parts.method, rest, parts.uri.query()).ok_or_else(|| {
        Refusal::BadRequest(format!(
            "{} /{rest} is not part of git's smart HTTP protocol",
            parts.method
        ))
    })?;
    let body: reqwest::Body = if service == Service::Push && parts.method == Method::POST {
        if parts.headers.contains_key(http::header::CONTENT_ENCODING) {
            // git never compresses a push; a compressed one would hide its commands.
            return Err(Refusal::Git("a compressed push is not accepted".into()));
        }
        let mut stream = body.into_data_stream();
        let mut head = BytesMut::new();
        let commands = loop {
            match read_commands(&head)? {
                Some(commands) => break commands,
                None if head.len() > MAX_COMMANDS => {
                    return Err(Refusal::Git("the push's command list is too long".into()));
                }
                None => match stream.next().await {
                    Some(chunk) => head.extend_from_slice(
                        &chunk
                            .map_err(|e| Refusal::BadRequest(format!("reading the push: {e}")))?,
                    ),
                    None => {
                        return Err(Refusal::Git(
                            "the push ended before its command list".into(),
                        ));
                    }
                },
            }
        };
        check_push(&grant, &commands)?;
        let head = head.freeze();
        let rest = stream.map_err(std::io::Error::other);
        reqwest::Body::wrap_stream(futures::stream::once(async move { Ok(head) }).chain(rest))
    } else {
        reqwest::Body::wrap_stream(body.into_data_stream().map_err(std::io::Error::other))
    };

    let mut url = format!(
        "{}/{}.git/{rest}",
        gateway.inner.upstreams.github.trim_end_matches('/'),
        grant.repo
    );
    if let Some(query) = parts.uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for name in GIT_REQUEST_HEADERS {
        if let Some(value) = parts.headers.get(*name) {
            headers.insert(*name, value.clone());
        }
    }
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("x-access-token:{}", grant.token.expose()));
    let mut auth = HeaderValue::from_str(&format!("Basic {basic}"))
        .map_err(|_| Refusal::Internal("the GitHub token is not a valid header value".into()))?;
    auth.set_sensitive(true);
    headers.insert(http::header::AUTHORIZATION, auth);
    let answer = gateway
        .inner
        .client
        .request(parts.method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| Refusal::Upstream(format!("GitHub: {}", e.without_url())))?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if crate::headers::answer_header(name) && name != http::header::WWW_AUTHENTICATE {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(
            answer
                .bytes_stream()
                .map_err(|e| std::io::Error::other(e.without_url())),
        ))
        .map_err(|e| Refusal::Internal(e.to_string()))
}

/// One ref update of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Command {
    old: String,
    new: String,
    name: String,
}

const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// The command list at the head of a push (pkt-lines up to the first flush), or `None`
/// when more bytes are needed.
fn read_commands(bytes: &[u8]) -> Result<Option<Vec<Command>>, Refusal> {
    let malformed = |why: &str| Refusal::Git(format!("malformed push: {why}"));
    let mut commands = Vec::new();
    let mut at = 0;
    loop {
        let Some(length) = bytes.get(at..at + 4) else {
            return Ok(None);
        };
        let length = std::str::from_utf8(length)
            .ok()
            .and_then(|l| usize::from_str_radix(l, 16).ok())
            .ok_or_else(|| malformed("a pkt-line length is not hex"))?;
        if length == 0 {
            return Ok(Some(commands));
        }
        if length < 4 {
            return Err(malformed("a pkt-line is shorter than its header"));
        }
        let Some(line) = bytes.get(at + 4..at + length) else {
            return Ok(None);
        };
        at += length;
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.split(|&b| b == 0).next().unwrap_or(line);
        let line = std::str::from_utf8(line).map_err(|_| malformed("a command is not UTF-8"))?;
        if line.starts_with("shallow ") {
            continue;
        }
        if line.starts_with("push-cert") {
            return Err(Refusal::Git("signed pushes are not accepted".into()));
        }
        let mut fields = line.splitn(3, ' ');
        match (fields.next(), fields.next(), fields.next()) {
            (Some(old), Some(new), Some(name)) => commands.push(Command {
                old: old.to_owned(),
                new: new.to_owned(),
                name: name.to_owned(),
            }),
            _ => return Err(malformed("a command is not `old new ref`")),
        }
    }
}

fn check_push(grant: &GitGrant, commands: &[Command]) -> Result<(), Refusal> {
    let allowed = format!("refs/heads/{}", grant.branch);
    if commands.is_empty() {
        return Err(Refusal::Git("the push names no ref".into()));
    }
    for command in commands {
        if command.name != allowed {
            return Err(Refusal::Git(format!(
                "the run may only push {allowed}, not {}",
                command.name
            )));
        }
        if command.new.trim_start_matches('0').is_empty() || command.new == ZERO_ID {
            return Err(Refusal::Git(format!("the run may not delete {allowed}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_secret::Secret;

    fn pkt(line: &str) -> String {
        format!("{:04x}{line}", line.len() + 4)
    }

    fn grant() -> GitGrant {
        GitGrant {
            repo: "acme/project".into(),
            branch: "courier/abc".into(),
            token: Secret::new("ghp_real"),
        }
    }

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn a_push_to_the_runs_branch_passes_and_nothing_else_does() {
        let push = |lines: &[String]| {
            let mut body = lines.concat();
            body.push_str("0000PACK....");
            read_commands(body.as_bytes()).unwrap().unwrap()
        };
        let ok = push(&[pkt(&format!(
            "{A} {B} refs/heads/courier/abc\0report-status side-band-64k\n"
        ))]);
        assert_eq!(check_push(&grant(), &ok), Ok(()));
        // An attacker inside the sandbox tries main, a tag, a second ref beside its own,
        // deleting its branch, and a branch whose name only starts like its own.
        for lines in [
            vec![pkt(&format!("{A} {B} refs/heads/main\0report-status\n"))],
            vec![pkt(&format!("{ZERO_ID} {B} refs/tags/v1\n"))],
            vec![
                pkt(&format!("{A} {B} refs/heads/courier/abc\0report-status\n")),
                pkt(&format!("{A} {B} refs/heads/main\n")),
            ],
            vec![pkt(&format!("{A} {ZERO_ID} refs/heads/courier/abc\n"))],
            vec![pkt(&format!("{A} {B} refs/heads/courier/abc-evil\n"))],
        ] {
            let commands = push(&lines);
            assert!(check_push(&grant(), &commands).is_err(), "{commands:?}");
        }
        assert!(check_push(&grant(), &[]).is_err());
    }

    #[test]
    fn the_command_list_is_read_only_when_complete() {
        let body = format!("{}0000", pkt(&format!("{A} {B} refs/heads/x\n")));
        for cut in 0..body.len() {
            assert_eq!(
                read_commands(&body.as_bytes()[..cut]).unwrap(),
                None,
                "{cut}"
            );
        }
        assert_eq!(read_commands(body.as_bytes()).unwrap().unwrap().len(), 1);
        assert!(read_commands(b"zzzz").is_err());
        assert!(read_commands(b"0003").is_err());
        assert!(read_commands(pkt("push-cert\0x\n").as_bytes()).is_err());
    }

    #[test]
    fn only_the_runs_repository_and_git_routes() {
        assert!(same_repo(&grant(), "acme", "project.git"));
        assert!(same_repo(&grant(), "ACME", "Project"));
        assert!(!same_repo(&grant(), "acme", "other"));
        assert!(!same_repo(&grant(), "evil", "project"));
        assert_eq!(
            service(&Method::GET, "info/refs", Some("service=git-receive-pack")),
            Some(Service::Push)
        );
        assert_eq!(
            service(&Method::POST, "git-upload-pack", None),
            Some(Service::Fetch)
        );
        assert_eq!(service(&Method::GET, "info/refs", None), None);
        assert_eq!(service(&Method::GET, "HEAD", None), None);
        assert_eq!(service(&Method::POST, "objects/info/packs", None), None);
    }
}
