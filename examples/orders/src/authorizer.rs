//! The `orders-authorizer` Lambda function (`bootstrap`): the Lambda authorizer in front of
//! the orders HTTP API. `AUTH_SECRET` holds the HS256 secret tokens are signed with; it is
//! read once, at cold start.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let secret = std::env::var("AUTH_SECRET")
        .map_err(|_| "AUTH_SECRET must hold the HS256 secret tokens are signed with")?;
    orders::authorizer_app(secret.as_bytes())?.run().await?;
    Ok(())
}
