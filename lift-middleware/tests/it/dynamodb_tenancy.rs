//! Tenant isolation in DynamoDB on the local emulator: one tenant never reads, overwrites
//! or lists another's items, whatever key it asks for.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use lift_core::Error;
use lift_middleware::tenancy::TenantTable;

use crate::aws;

fn item(total: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("total".to_owned(), AttributeValue::N(total.to_owned()))])
}

fn code(error: &Error) -> &str {
    error.code()
}

#[tokio::test]
async fn tenants_see_only_their_own_items() {
    let client = aws::client().await;
    let table = aws::table(&client, "lift-tenants").await;
    let acme = TenantTable::new(&client, &table, "pk", "acme").expect("acme");
    let globex = TenantTable::new(&client, &table, "pk", "globex").expect("globex");

    acme.put("order-1", item("10")).await.expect("put");
    let mine = acme
        .get("order-1")
        .await
        .expect("get")
        .expect("acme's item");
    assert_eq!(mine["total"].as_n().expect("n"), "10");
    assert_eq!(mine["pk"].as_s().expect("s"), "acme#order-1");

    // The same logical key is another item for another tenant: nothing there.
    assert!(globex.get("order-1").await.expect("get").is_none());
    // Asking for acme's stored key directly is refused, not served.
    let refused = globex
        .get_physical("acme#order-1")
        .await
        .expect_err("cross-tenant read");
    assert_eq!(code(&refused), "cross_tenant");
    assert_eq!(refused.status(), http::StatusCode::FORBIDDEN);
    // Writing an item that names acme's key is refused too, and acme's item is untouched.
    let mut forged = item("0");
    forged.insert(
        "pk".to_owned(),
        AttributeValue::S("acme#order-1".to_owned()),
    );
    let refused = globex
        .put("order-1", forged)
        .await
        .expect_err("cross-tenant write");
    assert_eq!(code(&refused), "cross_tenant");
    let still = acme
        .get("order-1")
        .await
        .expect("get")
        .expect("acme's item");
    assert_eq!(still["total"].as_n().expect("n"), "10");

    globex
        .put("order-1", item("99"))
        .await
        .expect("globex's own");
    assert_eq!(
        acme.get("order-1").await.expect("get").expect("item")["total"]
            .as_n()
            .expect("n"),
        "10"
    );
    globex.delete("order-1").await.expect("delete");
    assert!(globex.get("order-1").await.expect("get").is_none());
    assert!(
        acme.get("order-1").await.expect("get").is_some(),
        "acme's stays"
    );
}

#[tokio::test]
async fn queries_stay_inside_the_tenant() {
    let client = aws::client().await;
    let table = format!(
        "lift-tenant-lines-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_nanos()
    );
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("pk"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("sk"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("hash"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(KeyType::Range)
                .build()
                .expect("range"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    let acme = TenantTable::new(&client, &table, "pk", "acme").expect("acme");
    let globex = TenantTable::new(&client, &table, "pk", "globex").expect("globex");
    for (tenant, line) in [(&acme, "1"), (&acme, "2"), (&globex, "1")] {
        let mut line_item = item(line);
        line_item.insert("sk".to_owned(), AttributeValue::S(format!("line-{line}")));
        tenant.put("order-7", line_item).await.expect("put line");
    }
    assert_eq!(acme.query("order-7").await.expect("query").len(), 2);
    let theirs = globex.query("order-7").await.expect("query");
    assert_eq!(theirs.len(), 1);
    assert_eq!(
        globex.logical_key(theirs[0]["pk"].as_s().expect("s")),
        Some("order-7")
    );
}

#[test]
fn malformed_tenant_ids_cannot_build_a_handle() {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(config);
    for bad in ["", "a#b", "with space", &"x".repeat(65)] {
        assert!(
            TenantTable::new(&client, "t", "pk", bad).is_err(),
            "{bad:?}"
        );
    }
}
