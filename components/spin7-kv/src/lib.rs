//! A Spin 7 key-value component, as Spin's key-value tutorial writes one:
//! `Store::open_default()` and the store's async methods, in an
//! `#[http_service]`. Built for Spin; Membrane serves it unmodified.
//!
//! - `GET .../count`: increments `count` (decimal text), answers it;
//! - `PUT .../kv/KEY` (body) sets, `GET` reads (404 when missing), `DELETE`
//!   deletes, `HEAD` answers 200 or 404 by `exists`;
//! - `GET .../keys`: every key (`get-keys`, a stream), one per line;
//! - `GET .../denied`: opens a store it was not granted, answers the error.

use spin_sdk::http::body::IncomingBodyExt as _;
use spin_sdk::http::{IntoResponse, Method, Request, Response, StatusCode};
use spin_sdk::http_service;
use spin_sdk::key_value::Store;

fn answer(status: u16, body: impl Into<String>) -> Response<String> {
    let mut response = Response::new(body.into());
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
}

#[http_service]
async fn handle(request: Request) -> anyhow::Result<impl IntoResponse> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    if path.ends_with("/denied") {
        return Ok(match Store::open("not-granted").await {
            Ok(_) => answer(200, "opened\n"),
            Err(e) => answer(403, format!("{e:?}\n")),
        });
    }
    let store = Store::open_default().await?;
    if path.ends_with("/count") {
        let n: u64 = match store.get("count").await? {
            Some(bytes) => String::from_utf8(bytes)?.trim().parse()?,
            None => 0,
        } + 1;
        store.set("count", n.to_string().as_bytes()).await?;
        return Ok(answer(200, format!("count = {n}\n")));
    }
    if path.ends_with("/keys") {
        let keys = store.get_keys().await.collect().await?;
        return Ok(answer(200, keys.iter().map(|k| format!("{k}\n")).collect::<String>()));
    }
    let Some((_, key)) = path.rsplit_once("/kv/") else {
        return Ok(answer(404, format!("no route for {path}\n")));
    };
    Ok(match method {
        Method::PUT => {
            let body = request.into_body().bytes().await?;
            store.set(key, &body).await?;
            answer(200, format!("{key} set\n"))
        }
        Method::DELETE => {
            store.delete(key).await?;
            answer(200, format!("{key} deleted\n"))
        }
        Method::HEAD => answer(if store.exists(key).await? { 200 } else { 404 }, ""),
        _ => match store.get(key).await? {
            Some(value) => answer(200, String::from_utf8_lossy(&value)),
            None => answer(404, format!("{key} missing\n")),
        },
    })
}
