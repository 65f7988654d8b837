//! `lift`: Lift from the command line. See the `lift_cli` crate for the commands.

use std::process::ExitCode;

use lift_cli::{CliError, USAGE, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1)).await {
        Ok(out) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(CliError::Usage(error)) => {
            eprintln!("{error}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("lift: {error}");
            ExitCode::FAILURE
        }
    }
}
