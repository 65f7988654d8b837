//! Tenant isolation in DynamoDB on the local emulator: one tenant never reads, overwrites
//! or lists another's items, whatever key it asks for.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
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
    let table = aws::table_with_sort_key(&client, "lift-tenant-lines").await;
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

#[tokio::test]
async fn insert_and_versioned_replace_never_lose_a_write() {
    let client = aws::client().await;
    let table = aws::table(&client, "lift-tenant-writes").await;
    let acme = TenantTable::new(&client, &table, "pk", "acme").expect("acme");
    let globex = TenantTable::new(&client, &table, "pk", "globex").expect("globex");

    acme.insert("order-1", item("10"))
        .await
        .expect("first insert");
    let again = acme
        .insert("order-1", item("20"))
        .await
        .expect_err("the key is taken");
    assert_eq!(
        (again.status().as_u16(), again.code()),
        (409, "item_exists")
    );
    // Another tenant's key of the same name is another item.
    globex
        .insert("order-1", item("30"))
        .await
        .expect("globex's own");

    let v1 = acme
        .replace_versioned("cart", item("1"), "version", None)
        .await
        .expect("created");
    assert_eq!(v1, 1);
    let stale = acme
        .replace_versioned("cart", item("1"), "version", None)
        .await
        .expect_err("it exists now");
    assert_eq!(stale.code(), "version_conflict");

    // Eight writers read version 1 and race: exactly one wins.
    let writers = (0..8).map(|n| {
        let acme = acme.clone();
        async move {
            acme.replace_versioned("cart", item(&n.to_string()), "version", Some(v1))
                .await
        }
    });
    let results = futures_util::future::join_all(writers).await;
    let won: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(won, [2], "{results:?}");
    for lost in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            (lost.status().as_u16(), lost.code()),
            (409, "version_conflict")
        );
    }
    let stored = acme.get("cart").await.expect("get").expect("cart");
    assert_eq!(stored["version"].as_n().expect("n"), "2");

    let cross = acme
        .insert("order-9", {
            let mut other = item("1");
            other.insert(
                "pk".to_owned(),
                AttributeValue::S("globex#order-9".to_owned()),
            );
            other
        })
        .await
        .expect_err("another tenant's key");
    assert_eq!(cross.code(), "cross_tenant");
}

/// A handle whose `key_attr` is not the table's partition key would let an item carry the
/// real key of another tenant's item: the key schema is checked before the first write,
/// and every call on such a table is refused.
#[tokio::test]
async fn a_key_attr_that_is_not_the_partition_key_is_refused() {
    let client = aws::client().await;
    let table = aws::table_keyed(&client, "lift-tenant-schema", "id").await;
    // Correctly configured: the partition key is `id`.
    let globex = TenantTable::new(&client, &table, "id", "globex").expect("globex");
    globex
        .put("order-1", item("99"))
        .await
        .expect("globex's own");

    // Misconfigured: `pk` is just an attribute here, `id` the real key.
    let acme = lift_middleware::tenancy::TenantTables::new(&client, &table, "pk");
    let acme = acme.for_tenant("acme").expect("acme");
    let mut forged = item("0");
    forged.insert("id".to_owned(), AttributeValue::S("globex#order-1".into()));
    let refused = acme.put("order-1", forged).await.expect_err("refused");
    assert_eq!(refused.code(), "invalid_configuration");
    assert!(
        refused.to_string().contains("is `id`, not `pk`"),
        "{refused}"
    );
    let refused = acme.get("order-1").await.expect_err("reads refused too");
    assert_eq!(refused.code(), "invalid_configuration");
    // globex's item is untouched.
    let still = globex.get("order-1").await.expect("get").expect("item");
    assert_eq!(still["total"].as_n().expect("n"), "99");
}

#[tokio::test]
async fn queries_read_every_page_and_cursors_stay_inside_the_tenant() {
    let client = aws::client().await;
    let table = aws::table_with_sort_key(&client, "lift-tenant-pages").await;
    let tables = lift_middleware::tenancy::TenantTables::new(&client, &table, "pk");
    let acme = tables.for_tenant("acme").expect("acme");
    let globex = tables.for_tenant("globex").expect("globex");
    for line in 0..30 {
        let mut line_item = item(&line.to_string());
        line_item.insert(
            "sk".to_owned(),
            AttributeValue::S(format!("line-{line:02}")),
        );
        acme.put("order-9", line_item).await.expect("put line");
    }
    globex
        .put("order-9", {
            let mut line_item = item("1");
            line_item.insert("sk".to_owned(), AttributeValue::S("line-00".into()));
            line_item
        })
        .await
        .expect("globex line");

    // Page by page, 7 at a time: 5 pages, every line once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = acme
            .query_page("order-9", cursor.as_ref(), Some(7))
            .await
            .expect("page");
        pages += 1;
        assert!(page.items.len() <= 7);
        seen.extend(
            page.items
                .iter()
                .map(|i| i["sk"].as_s().expect("sk").clone()),
        );
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..30).map(|n| format!("line-{n:02}")).collect();
    assert_eq!(seen, expected);
    assert!(pages >= 5, "{pages} pages");

    // The whole partition in one call follows every page.
    assert_eq!(acme.query("order-9").await.expect("all").len(), 30);

    // A cursor of acme's handed to globex is refused; a malformed one is a 400.
    let first = acme
        .query_page("order-9", None, Some(7))
        .await
        .expect("first");
    let cursor = first.next.expect("more pages");
    let refused = globex
        .query_page("order-9", Some(&cursor), Some(7))
        .await
        .expect_err("cross-tenant cursor");
    assert_eq!(refused.code(), "cross_tenant");
    let bad = lift_middleware::tenancy::Cursor::from_text("not a cursor!");
    let refused = acme
        .query_page("order-9", Some(&bad), None)
        .await
        .expect_err("malformed");
    assert_eq!(refused.status(), http::StatusCode::BAD_REQUEST);
}

/// A store failure keeps its kind: the internal error's source is the typed DynamoDB
/// error, which the DynamoDB retry policy reads.
#[tokio::test]
async fn store_failures_keep_their_kind() {
    use lift_middleware::dynamo::DynamoError;
    let client = aws::client().await;
    let missing =
        TenantTable::new(&client, "lift-no-such-tenant-table", "pk", "acme").expect("handle");
    let error = missing.get("order-1").await.expect_err("no table");
    assert_eq!(error.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    let source = std::error::Error::source(&error).expect("source");
    assert!(
        matches!(
            source.downcast_ref::<DynamoError>(),
            Some(DynamoError::ResourceNotFound { .. })
        ),
        "{source:?}"
    );
}

/// A conditional put the table applied but whose answer was lost is sent again by the SDK
/// and fails its own condition: recognised by its write token, it is the call's success
/// (it was a 409 against itself). A write by anyone else is still a conflict, and reads
/// do not show the token.
#[tokio::test]
async fn a_write_whose_answer_was_lost_is_not_a_conflict_with_itself() {
    let setup = aws::client().await;
    let table = aws::table(&setup, "lift-tenant-lost").await;
    let (client, puts) = aws::answer_losing_client("PutItem", 1).await;
    let acme = TenantTable::new(&client, &table, "pk", "acme").expect("acme");

    acme.insert("order-1", item("10"))
        .await
        .expect("the insert was this call's");
    assert_eq!(puts.attempts(), 2, "the SDK sent the put again");
    let stored = acme.get("order-1").await.expect("get").expect("item");
    assert_eq!(stored["total"].as_n().expect("n"), "10");
    assert!(!stored.contains_key(lift_middleware::tenancy::WRITE_TOKEN_ATTR));

    puts.fail_next(1);
    let v1 = acme
        .replace_versioned("cart", item("1"), "version", None)
        .await
        .expect("created");
    puts.fail_next(1);
    let v2 = acme
        .replace_versioned("cart", item("2"), "version", Some(v1))
        .await
        .expect("replaced");
    assert_eq!((v1, v2), (1, 2));
    let page = acme.query_page("cart", None, None).await.expect("query");
    assert_eq!(page.items.len(), 1);
    assert!(!page.items[0].contains_key(lift_middleware::tenancy::WRITE_TOKEN_ATTR));

    // Another writer's item under the key is a conflict, whatever its answers.
    let other = TenantTable::new(&setup, &table, "pk", "acme").expect("acme");
    puts.fail_next(1);
    acme.insert("order-2", item("1"))
        .await
        .expect("this call's");
    let again = other.insert("order-2", item("2")).await.expect_err("taken");
    assert_eq!(again.code(), "item_exists");
    let stale = other
        .replace_versioned("cart", item("3"), "version", Some(v1))
        .await
        .expect_err("moved on");
    assert_eq!(stale.code(), "version_conflict");
}

/// A versioned write applied under a lost answer, then replaced by another writer before
/// the SDK's retry, was neither refused nor is it a success: `version_conflict` ("read
/// again and retry") would have the caller apply its change twice. Whether the answer is
/// a server error or a body that never arrived after its `200`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_write_replaced_before_the_retry_is_an_unknown_outcome() {
    for body_lost in [false, true] {
        let setup = aws::client().await;
        let table = aws::table(&setup, "lift-tenant-unknown").await;
        let (client, puts) = aws::answer_losing_client("PutItem", 0).await;
        if body_lost {
            puts.lose_bodies();
        }
        let acme = TenantTable::new(&client, &table, "pk", "acme").expect("acme");
        let v1 = acme
            .replace_versioned("cart", item("1"), "version", None)
            .await
            .expect("created");

        // Another writer reads version 2 (this call's, applied) and writes version 3.
        let other = TenantTable::new(&setup, &table, "pk", "acme").expect("acme");
        let runtime = tokio::runtime::Handle::current();
        puts.before_the_retry(move || {
            std::thread::spawn(move || {
                runtime.block_on(other.replace_versioned("cart", item("30"), "version", Some(2)))
            })
            .join()
            .expect("the other writer")
            .expect("its write");
        });
        puts.fail_next(1);
        let outcome = acme
            .replace_versioned("cart", item("2"), "version", Some(v1))
            .await
            .expect_err("neither applied nor refused for sure");
        assert_eq!(
            (outcome.status().as_u16(), outcome.code()),
            (409, "write_outcome_unknown"),
            "body lost: {body_lost}"
        );
        assert_eq!(puts.attempts(), 3, "the SDK sent the put again");
        let stored = acme.get("cart").await.expect("get").expect("cart");
        assert_eq!(stored["version"].as_n().expect("n"), "3");

        // A plain conflict, answered at once, is still one.
        let stale = acme
            .replace_versioned("cart", item("4"), "version", Some(v1))
            .await
            .expect_err("moved on");
        assert_eq!(stale.code(), "version_conflict");
    }
}
