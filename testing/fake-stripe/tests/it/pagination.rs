use crate::support::{Client, draft_with_items};
use metron_fake_stripe::FakeStripe;

/// 25 lines read 10 at a time with `starting_after`: all of them, in order, once.
#[test]
fn lines_page_in_invoice_order() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let amounts: Vec<i64> = (1..=25).collect();
    let (_, invoice) = draft_with_items(&fake, &client, &amounts);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = after
            .as_ref()
            .map_or(String::new(), |a| format!("&starting_after={a}"));
        let page = client
            .get(&format!("/v1/invoices/{invoice}/lines?limit=10{query}"))
            .unwrap()
            .json;
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|l| l["amount"].as_i64().unwrap()));
        after = data.last().map(|l| l["id"].as_str().unwrap().to_owned());
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(seen, amounts);
    let inline = client.get(&format!("/v1/invoices/{invoice}")).unwrap().json;
    assert_eq!(
        (
            inline["lines"]["data"].as_array().unwrap().len(),
            &inline["lines"]["has_more"]
        ),
        (10, &serde_json::json!(true))
    );
}

#[test]
fn invoices_list_newest_first_filtered_and_bounded() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let (customer, first) = draft_with_items(&fake, &client, &[1]);
    let second = client.ok("/v1/invoices", &[("customer", &customer)])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    draft_with_items(&fake, &client, &[1]);
    let list = client
        .get(&format!("/v1/invoices?customer={customer}&limit=1"))
        .unwrap()
        .json;
    assert_eq!(
        (&list["data"][0]["id"], &list["has_more"]),
        (&serde_json::json!(second), &serde_json::json!(true))
    );
    let next = client
        .get(&format!(
            "/v1/invoices?customer={customer}&limit=1&starting_after={second}"
        ))
        .unwrap()
        .json;
    assert_eq!(
        (&next["data"][0]["id"], &next["has_more"]),
        (&serde_json::json!(first), &serde_json::json!(false))
    );
    let drafts = client.get("/v1/invoices?status=draft").unwrap().json;
    assert_eq!(drafts["data"].as_array().unwrap().len(), 3);
    let before = client
        .get(&format!(
            "/v1/invoices?customer={customer}&ending_before={first}"
        ))
        .unwrap()
        .json;
    assert_eq!(
        (&before["data"][0]["id"], &before["has_more"]),
        (&serde_json::json!(second), &serde_json::json!(false))
    );
    assert_eq!(client.get("/v1/invoices?limit=0").unwrap().status, 400);
    assert_eq!(
        client
            .get("/v1/invoices?starting_after=in_nope")
            .unwrap()
            .code(),
        Some("resource_missing")
    );
    let items = client
        .get(&format!("/v1/invoiceitems?invoice={first}"))
        .unwrap()
        .json;
    assert_eq!(items["data"].as_array().unwrap().len(), 1);
}
