//! Lookup information over HTTP: the currency list as OpenMeter's `listCurrencies` answers it
//! (a bare array of `Currency`, USD first, gobl's minor units), and `getProgress`, which knows
//! no id because Metron runs no operation that records progress.

use crate::server::*;
use serde_json::{Value, json};

// The list is every currency of the engine, in order, each with exactly the four fields of the
// v1 `Currency` schema; spot values pin the minor units (JPY 0, KWD 3, HUF 0 as in gobl).
#[test]
fn currencies_are_listed_as_openmeter_does() {
    let server = TestServer::start();
    let resp = server
        .get("/api/v1/info/currencies")
        .send()
        .expect_status(200);
    assert_eq!(resp.content_type(), Some("application/json"));
    let list = resp.json();
    let items = list.as_array().expect("a bare array");
    assert_eq!(items.len(), metron_engine::billing::CURRENCIES.len());
    assert_eq!(
        items[0],
        json!({"code": "USD", "name": "United States Dollar", "symbol": "$", "subunits": 2})
    );
    assert_eq!(items[1]["code"], "EUR");
    for item in items {
        let fields: Vec<&str> = item
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields.len(), 4, "{item}");
        let code = item["code"].as_str().expect("code");
        assert!(
            code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
            "{item}"
        );
        assert!(item["subunits"].as_u64().is_some(), "{item}");
    }
    let subunits = |code: &str| -> Value {
        items
            .iter()
            .find(|c| c["code"] == code)
            .map(|c| c["subunits"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(subunits("JPY"), json!(0));
    assert_eq!(subunits("KWD"), json!(3));
    assert_eq!(subunits("HUF"), json!(0));
}

// Any progress id is a 404 problem naming the id, as OpenMeter answers with its progress
// manager disabled; the path serves GET only.
#[test]
fn progress_of_an_unknown_id_is_not_found() {
    let server = TestServer::start();
    let resp = server
        .get("/api/v1/info/progress/query-123")
        .send()
        .expect_status(404);
    assert_eq!(resp.content_type(), Some("application/problem+json"));
    let problem = resp.json();
    assert_eq!(problem["status"], 404);
    assert_eq!(problem["detail"], "progress not found for id: query-123");

    let resp = server
        .post("/api/v1/info/progress/query-123")
        .send()
        .expect_status(405);
    assert_eq!(resp.header("allow"), Some("GET"));
}
