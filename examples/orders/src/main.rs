//! The `orders` Lambda function (`bootstrap`). `ORDERS_TABLE`, `IDEMPOTENCY_TABLE` and
//! `CACHE_TABLE` name its tables; they are read once, at cold start, with the DynamoDB
//! client built once too (it makes no network call until the first request).

fn table(variable: &str) -> Result<String, String> {
    std::env::var(variable).map_err(|_| format!("{variable} must name a DynamoDB table"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = aws_sdk_dynamodb::Client::new(lift_core::aws::sdk_config().await);
    let deps = orders::Deps::new(
        client,
        &table("ORDERS_TABLE")?,
        &table("IDEMPOTENCY_TABLE")?,
        &table("CACHE_TABLE")?,
    )?;
    orders::app(deps).run().await?;
    Ok(())
}
