//! The port tunnel: `GET /tunnel/{port}` with `Connection: Upgrade` and
//! `Upgrade: courier-tunnel` answers `101 Switching Protocols` and then pipes raw bytes
//! both ways between the upgraded connection and `127.0.0.1:<port>` inside the sandbox.
//! The host-side port proxy uses it to reach services bound to loopback. A closed port
//! answers 502 `{"code":502,"message":"… port is not open"}` before any upgrade.

use axum::{
    extract::{Path, Request},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{Error, error::json_error};

/// The `Upgrade` protocol token the tunnel expects.
pub const TUNNEL_PROTOCOL: &str = "courier-tunnel";

pub(crate) async fn tunnel(Path(port): Path<String>, mut req: Request) -> Response {
    let Ok(port) = port.parse::<u16>() else {
        return json_error(&Error::InvalidArgument(format!("invalid port {port:?}")));
    };
    let upgrade_ok = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(TUNNEL_PROTOCOL));
    if !upgrade_ok || port == 0 {
        return json_error(&Error::InvalidArgument(format!(
            "the tunnel needs 'Connection: Upgrade' and 'Upgrade: {TUNNEL_PROTOCOL}' and a port in 1..=65535"
        )));
    }
    let upstream = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(stream) => stream,
        Err(e) => {
            let body = serde_json::json!({
                "code": 502,
                "message": format!("the sandbox is running but port is not open ({port}: {e})"),
            });
            return (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut client = TokioIo::new(upgraded);
        let mut upstream = upstream;
        // A peer that resets or drops the connection ends the tunnel; nobody waits for it.
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "tunnel closed with an error");
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(TUNNEL_PROTOCOL));
    response
}
