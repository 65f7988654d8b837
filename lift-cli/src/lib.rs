//! # lift-cli
//!
//! `lift`, Lift from the command line:
//!
//! ```text
//! lift services [--table T]                 services, with live and healthy instances
//! lift instances SERVICE [--table T]        a service's instances, with health and leases
//! lift map [--table T] [--svg FILE]         the dependency map as Mermaid (and an SVG file)
//! lift register SERVICE --arn ARN [--hours H] [--tenant T] [--table T]
//!                                           registers a deployed function's alias ahead of
//!                                           its first invocation, for H hours (default 168);
//!                                           an instance already registered keeps its own
//!                                           settings, a new one gets tenant T if given
//! lift sagas [--state S] [--limit N] [--table T]
//!                                           sagas by state (needs-attention, running,
//!                                           compensating, completed, compensated; all
//!                                           states when none is given), least recently
//!                                           moved first
//! lift saga ID [--table T]                  one saga: its steps and its timeline (attempts,
//!                                           replies, compensations, timings, reason), and for
//!                                           one that needs attention, what a redrive sends
//! lift cancel ID [--reason R] [--queue URL] [--table T]
//!                                           sends a cancel of saga ID to its orchestrator's
//!                                           queue, once the saga is read and found running;
//!                                           `lift saga ID` then shows what it did
//! lift redrive ID [--reason R] [--queue URL] [--table T]
//!                                           sends a redrive of saga ID to its orchestrator's
//!                                           queue, once the saga is read and found needing
//!                                           attention with a command to send again: that
//!                                           command goes out again, from its first attempt
//! ```
//!
//! The registry table defaults to `LIFT_REGISTRY_TABLE`, the saga table to
//! `LIFT_SAGA_TABLE`, the orchestrator's queue to `LIFT_ORCHESTRATOR_QUEUE`; AWS settings
//! come from the environment (`AWS_ENDPOINT_URL` for the local emulator).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod sagas;
mod services;

/// How to call `lift`.
pub const USAGE: &str = "usage:
  lift services [--table T]
  lift instances SERVICE [--table T]
  lift map [--table T] [--svg FILE]
  lift register SERVICE --arn ARN [--hours H] [--tenant T] [--table T]
  lift sagas [--state needs-attention|running|compensating|completed|compensated] [--limit N] [--table T]
  lift saga ID [--table T]
  lift cancel ID [--reason R] [--queue URL] [--table T]
  lift redrive ID [--reason R] [--queue URL] [--table T]";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The arguments are wrong.
    #[error("{0}")]
    Usage(String),
    /// The command ran and failed (a missing table, AWS refused, no such saga).
    #[error("{0}")]
    Failed(String),
}

/// The parsed arguments.
#[derive(Debug, Clone, Default)]
pub(crate) struct Args {
    pub(crate) command: String,
    /// The one positional argument: a service or a saga id.
    pub(crate) target: Option<String>,
    pub(crate) table: Option<String>,
    pub(crate) svg: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) limit: Option<usize>,
    pub(crate) arn: Option<String>,
    pub(crate) hours: Option<u64>,
    pub(crate) tenant: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) queue: Option<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, CliError> {
    let usage = |m: &str| CliError::Usage(m.to_owned());
    let command = args.next().ok_or_else(|| usage("no command"))?;
    let mut parsed = Args {
        command,
        ..Args::default()
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| CliError::Usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--table" => parsed.table = Some(value("--table")?),
            "--svg" => parsed.svg = Some(value("--svg")?),
            "--state" => parsed.state = Some(value("--state")?),
            "--arn" => parsed.arn = Some(value("--arn")?),
            "--tenant" => parsed.tenant = Some(value("--tenant")?),
            "--reason" => parsed.reason = Some(value("--reason")?),
            "--queue" => parsed.queue = Some(value("--queue")?),
            "--hours" => {
                let n = value("--hours")?;
                parsed.hours = Some(
                    n.parse()
                        .map_err(|_| CliError::Usage(format!("--hours {n} is not a number")))?,
                );
            }
            "--limit" => {
                let n = value("--limit")?;
                parsed.limit = Some(
                    n.parse()
                        .map_err(|_| CliError::Usage(format!("--limit {n} is not a number")))?,
                );
            }
            other if other.starts_with("--") => {
                return Err(CliError::Usage(format!("unknown option {other}")));
            }
            other if parsed.target.is_none() => parsed.target = Some(other.to_owned()),
            other => return Err(CliError::Usage(format!("unexpected argument {other}"))),
        }
    }
    Ok(parsed)
}

/// Runs `lift` with `args` (without the program name) and returns what it prints.
///
/// # Errors
/// [`CliError::Usage`] for wrong arguments; [`CliError::Failed`] when the command failed.
pub async fn run(args: impl IntoIterator<Item = String>) -> Result<String, CliError> {
    let args = parse(args.into_iter())?;
    match args.command.as_str() {
        "services" | "instances" | "map" | "register" => services::run(&args).await,
        "sagas" | "saga" => sagas::run(&args).await,
        "cancel" => sagas::cancel(&args).await,
        "redrive" => sagas::redrive(&args).await,
        other => Err(CliError::Usage(format!("unknown command {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args, CliError> {
        parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_commands_options_and_refuses_the_rest() {
        let a = args("sagas --state needs-attention --limit 5 --table t").unwrap();
        assert_eq!(a.command, "sagas");
        assert_eq!(a.state.as_deref(), Some("needs-attention"));
        assert_eq!(a.limit, Some(5));
        assert_eq!(a.table.as_deref(), Some("t"));
        let a = args("saga trip-42").unwrap();
        assert_eq!(a.target.as_deref(), Some("trip-42"));
        assert!(matches!(args(""), Err(CliError::Usage(_))));
        assert!(matches!(args("sagas --limit x"), Err(CliError::Usage(_))));
        assert!(matches!(args("sagas --state"), Err(CliError::Usage(_))));
        assert!(matches!(args("sagas --what"), Err(CliError::Usage(_))));
        assert!(matches!(args("saga a b"), Err(CliError::Usage(_))));
        let a = args("cancel trip-42 --reason late --queue https://q").unwrap();
        assert_eq!(
            (a.command.as_str(), a.target.as_deref()),
            ("cancel", Some("trip-42"))
        );
        assert_eq!(a.reason.as_deref(), Some("late"));
        assert_eq!(a.queue.as_deref(), Some("https://q"));
    }
}
