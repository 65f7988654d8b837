//! The `echo` Lambda function (`bootstrap`). Run it on Lambda, on the local emulator
//! (`scripts/demo.sh`) or with `cargo lambda watch`.

#[tokio::main]
async fn main() -> Result<(), lift_core::Error> {
    echo::app().run().await
}
