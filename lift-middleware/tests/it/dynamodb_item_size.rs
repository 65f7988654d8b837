//! `dynamo::item_size` against the emulator, which enforces DynamoDB's 400 KB item limit:
//! an item counted at the limit is stored, one counted a byte over it is refused.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use lift_middleware::dynamo::{self, DynamoError, Item, MAX_ITEM_BYTES};

use crate::aws;

/// An item with an attribute of every kind a Lift store writes, and some it does not.
fn mixed(pk: &str) -> Item {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: &str| AttributeValue::N(v.to_owned());
    Item::from([
        ("pk".to_owned(), s(pk)),
        ("version".to_owned(), n("1234567")),
        ("price".to_owned(), n("100.5")),
        ("tiny".to_owned(), n("0.001")),
        ("ratio".to_owned(), n("-0.25")),
        (
            "blob".to_owned(),
            AttributeValue::B(Blob::new(vec![7; 300])),
        ),
        ("done".to_owned(), AttributeValue::Bool(false)),
        ("gone".to_owned(), AttributeValue::Null(true)),
        (
            "tags".to_owned(),
            AttributeValue::Ss(vec!["a".into(), "bc".into()]),
        ),
        (
            "counts".to_owned(),
            AttributeValue::Ns(vec!["10".into(), "3".into()]),
        ),
        (
            "envs".to_owned(),
            AttributeValue::M(Item::from([
                (
                    "e-1".to_owned(),
                    AttributeValue::M(Item::from([("exp".to_owned(), n("1700000000123"))])),
                ),
                (
                    "e-2".to_owned(),
                    AttributeValue::L(vec![s("x"), n("5"), AttributeValue::Bool(true)]),
                ),
            ])),
        ),
    ])
}

/// `item` with a string attribute `pad` that brings its counted size to `size`.
fn padded(mut item: Item, size: usize) -> Item {
    let without = dynamo::item_size(&item) + "pad".len();
    item.insert(
        "pad".to_owned(),
        AttributeValue::S("p".repeat(size - without)),
    );
    assert_eq!(dynamo::item_size(&item), size);
    item
}

#[tokio::test]
async fn an_item_counted_at_the_limit_is_stored_and_one_byte_more_is_refused() {
    let client = aws::client().await;
    let table = aws::table(&client, "lift-item-size").await;
    let put = |item: Item| {
        let request = client
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send();
        dynamo::send("PutItem", request)
    };

    put(padded(mixed("at-limit"), MAX_ITEM_BYTES))
        .await
        .expect("an item of exactly the limit is stored");
    let refused = put(padded(mixed("over"), MAX_ITEM_BYTES + 1))
        .await
        .expect_err("an item a byte over the limit is refused");
    assert!(
        matches!(refused, DynamoError::Validation { .. }),
        "{refused:?}"
    );
}
