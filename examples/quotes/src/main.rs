//! The `quotes` Lambda function (`bootstrap`). `UPSTREAM_URL` names the price service; it is
//! read once, at cold start, with the client and its protection built once too.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let upstream = std::env::var("UPSTREAM_URL")
        .map_err(|_| "UPSTREAM_URL must name the price service (http://host:port)")?;
    let prices = quotes::protect(
        quotes::PriceClient::new(&upstream),
        &quotes::Protection::default(),
    )?;
    quotes::app(prices).run().await?;
    Ok(())
}
