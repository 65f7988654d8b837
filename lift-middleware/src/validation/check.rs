//! Custom checks, and a [`Validator`] that combines them with a schema.

use std::sync::Arc;

use lift_core::FieldError;
use serde_json::Value;

use super::schema::JsonSchema;

/// A custom validation rule over a JSON document, for what a schema cannot say (a date
/// range whose end follows its start, a total that matches its lines, a lookup).
///
/// Implemented for every `Fn(&Value) -> Result<(), Vec<FieldError>> + Send + Sync`. A check
/// runs even when the schema already failed, so that every problem is reported at once:
/// it must not assume the document has the schema's shape (read it with `Value::pointer`
/// and `as_*`, which return `None` rather than panicking).
pub trait Check: Send + Sync + 'static {
    /// Checks `value`.
    ///
    /// # Errors
    /// Each failing field, with its JSON pointer and the reason.
    fn check(&self, value: &Value) -> Result<(), Vec<FieldError>>;
}

impl<F> Check for F
where
    F: Fn(&Value) -> Result<(), Vec<FieldError>> + Send + Sync + 'static,
{
    fn check(&self, value: &Value) -> Result<(), Vec<FieldError>> {
        self(value)
    }
}

/// An optional [`JsonSchema`] and any number of [`Check`]s, run together: every violation
/// of the schema, then every failure of each check in the order they were added.
///
/// Cloning is cheap (the schema and the checks are shared).
#[derive(Clone, Default)]
#[must_use]
pub struct Validator {
    schema: Option<JsonSchema>,
    checks: Vec<Arc<dyn Check>>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("schema", &self.schema.is_some())
            .field("checks", &self.checks.len())
            .finish()
    }
}

impl Validator {
    /// A validator that accepts everything until a schema or a check is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates against `schema` (replacing any schema set before).
    pub fn schema(mut self, schema: JsonSchema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Adds a custom check.
    pub fn check(mut self, check: impl Check) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Whether neither a schema nor a check was added.
    pub fn is_empty(&self) -> bool {
        self.schema.is_none() && self.checks.is_empty()
    }

    /// Runs the schema and every check, collecting every failure.
    ///
    /// # Errors
    /// Every failing field (never empty). A check that fails without naming a field is
    /// reported as one failure of the whole document (pointer `""`).
    pub fn validate(&self, value: &Value) -> Result<(), Vec<FieldError>> {
        let mut fields = Vec::new();
        if let Some(schema) = &self.schema
            && let Err(errors) = schema.validate(value)
        {
            fields.extend(errors);
        }
        for check in &self.checks {
            if let Err(errors) = check.check(value) {
                if errors.is_empty() {
                    fields.push(FieldError {
                        pointer: String::new(),
                        message: "failed a custom check".to_owned(),
                    });
                }
                fields.extend(errors);
            }
        }
        if fields.is_empty() {
            Ok(())
        } else {
            Err(fields)
        }
    }
}

impl From<JsonSchema> for Validator {
    fn from(schema: JsonSchema) -> Self {
        Validator::new().schema(schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_and_checks_report_together() {
        let schema = JsonSchema::new(&json!({
            "type": "object",
            "properties": {"qty": {"type": "integer", "minimum": 1}}
        }))
        .expect("valid schema");
        let validator = Validator::new()
            .schema(schema)
            .check(|value: &Value| {
                if value.get("note").is_some() {
                    Err(vec![FieldError {
                        pointer: "/note".to_owned(),
                        message: "notes are closed".to_owned(),
                    }])
                } else {
                    Ok(())
                }
            })
            .check(|_: &Value| Err(Vec::new()));
        let fields = validator
            .validate(&json!({"qty": 0, "note": "x"}))
            .expect_err("invalid");
        let pointers: Vec<&str> = fields.iter().map(|f| f.pointer.as_str()).collect();
        assert_eq!(pointers, ["/qty", "/note", ""]);
        assert!(Validator::new().validate(&json!(null)).is_ok());
        assert!(Validator::new().is_empty());
    }
}
