//! Responses fulcrum writes itself (health, status pages, 4xx/5xx errors).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// Writes a complete response with a body; HEAD requests get headers only.
pub async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: impl Into<Bytes>,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let body: Bytes = body.into();
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header("Content-Type", content_type)?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    for (k, v) in extra {
        resp.insert_header(*k, *v)?;
    }
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// A short text response (`"404 Not Found: ..."`).
pub async fn respond_text(session: &mut Session, status: u16, text: &str) -> Result<()> {
    respond(
        session,
        status,
        "text/plain; charset=utf-8",
        format!("{text}\n"),
        &[],
    )
    .await
}
