//! A JSON Schema (draft 2020-12), compiled once and shared.

use std::sync::Arc;

use jsonschema::Draft;
use jsonschema::error::ValidationErrorKind;
use lift_core::FieldError;
use serde_json::Value;

/// The only dialect [`JsonSchema`] compiles.
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// A schema could not be compiled. Found once, when the schema is built (at cold start),
/// never per request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The schema text is not JSON.
    #[error("the schema is not JSON (line {line}, column {column}): {reason}")]
    NotJson {
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// What the parser expected.
        reason: String,
    },
    /// The schema's `$schema` names a dialect other than draft 2020-12.
    #[error(
        "the schema declares `$schema: {found}`; only draft 2020-12 (`{DRAFT_2020_12}`) is supported"
    )]
    UnsupportedDialect {
        /// The `$schema` value that was found.
        found: String,
    },
    /// The schema breaks the draft 2020-12 meta-schema, or a `$ref` does not resolve.
    #[error("the schema is invalid at `{pointer}` (`{keyword}`): {reason}")]
    Invalid {
        /// JSON pointer into the schema where the problem is (`""` for the root).
        pointer: String,
        /// The keyword that failed (`type`, `$ref`, ...).
        keyword: String,
        /// Why the schema was refused.
        reason: String,
    },
}

/// Builds a [`JsonSchema`] with options; [`JsonSchema::new`] takes the defaults.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct JsonSchemaBuilder {
    validate_formats: bool,
}

impl JsonSchemaBuilder {
    /// Asserts the `format` keyword (`email`, `date-time`, `uuid`, `ipv4`, ...) instead of
    /// treating it as an annotation. `idn-email` and `idn-hostname` are not checked, and
    /// unknown formats are ignored.
    pub fn validate_formats(mut self, on: bool) -> Self {
        self.validate_formats = on;
        self
    }

    /// Compiles `schema`.
    ///
    /// # Errors
    /// [`SchemaError::UnsupportedDialect`] when `$schema` names another dialect;
    /// [`SchemaError::Invalid`] when the schema breaks the meta-schema or a `$ref` does not
    /// resolve inside the document.
    pub fn compile(self, schema: &Value) -> Result<JsonSchema, SchemaError> {
        check_dialect(schema)?;
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(self.validate_formats)
            .offline()
            .build(schema)
            .map_err(|error| SchemaError::Invalid {
                pointer: error.instance_path().as_str().to_owned(),
                keyword: error.kind().keyword().to_owned(),
                reason: error.to_string(),
            })?;
        Ok(JsonSchema {
            validator: Arc::new(validator),
            source: Arc::new(schema.clone()),
        })
    }

    /// Parses `text` as JSON and compiles it.
    ///
    /// # Errors
    /// [`SchemaError::NotJson`] for text that is not JSON, then as
    /// [`JsonSchemaBuilder::compile`].
    pub fn parse(self, text: &str) -> Result<JsonSchema, SchemaError> {
        let schema: Value = serde_json::from_str(text).map_err(|error| SchemaError::NotJson {
            line: error.line(),
            column: error.column(),
            reason: strip_position(&error.to_string()),
        })?;
        self.compile(&schema)
    }
}

/// A compiled JSON Schema, always draft 2020-12.
///
/// Compile it once (at cold start) and share it: cloning is an `Arc` clone. A schema
/// without `$schema` is read as draft 2020-12; one whose `$schema` names another dialect
/// (draft-07, 2019-09, a custom meta-schema) is refused rather than reinterpreted, since
/// keywords such as `items`, `dependencies` and `definitions` changed meaning between
/// drafts. `$ref`s resolve only inside the document (`#/$defs/...`, `$id`/`$anchor`):
/// nothing is fetched over the network or from files. `format` is an annotation unless
/// [`JsonSchemaBuilder::validate_formats`] turns it on, as draft 2020-12 specifies.
#[derive(Clone)]
pub struct JsonSchema {
    validator: Arc<jsonschema::Validator>,
    /// The schema document, to explain `dependentRequired` failures.
    source: Arc<Value>,
}

impl std::fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchema").finish_non_exhaustive()
    }
}

impl std::str::FromStr for JsonSchema {
    type Err = SchemaError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JsonSchema::parse(text)
    }
}

impl JsonSchema {
    /// Starts a schema with options.
    ///
    /// # Default
    /// `format` is an annotation, not checked.
    pub fn builder() -> JsonSchemaBuilder {
        JsonSchemaBuilder::default()
    }

    /// Compiles `schema` with the default options.
    ///
    /// # Errors
    /// As [`JsonSchemaBuilder::compile`].
    pub fn new(schema: &Value) -> Result<Self, SchemaError> {
        Self::builder().compile(schema)
    }

    /// Parses and compiles a schema written as JSON text.
    ///
    /// # Errors
    /// As [`JsonSchemaBuilder::parse`].
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        Self::builder().parse(text)
    }

    /// Whether `instance` satisfies the schema (faster than [`JsonSchema::validate`] when
    /// the reasons are not needed).
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.validator.is_valid(instance)
    }

    /// Validates `instance`, collecting every violation.
    ///
    /// Each [`FieldError`] names the instance location as a JSON pointer (RFC 6901) and the
    /// reason. A missing `required` (or `dependentRequired`) property, and each property
    /// refused by `additionalProperties` or `unevaluatedProperties`, points at the property
    /// itself (`/items/1/qty`); other violations point at the value that failed. Reasons
    /// never quote the value, so they are safe to log.
    ///
    /// # Errors
    /// The violations, in the order the schema found them (never empty).
    pub fn validate(&self, instance: &Value) -> Result<(), Vec<FieldError>> {
        let mut fields = Vec::new();
        for error in self.validator.iter_errors(instance) {
            push_field_errors(&self.source, &error, &mut fields);
        }
        if fields.is_empty() {
            Ok(())
        } else {
            Err(fields)
        }
    }
}

/// Refuses a `$schema` that names anything but draft 2020-12.
fn check_dialect(schema: &Value) -> Result<(), SchemaError> {
    let Some(declared) = schema.as_object().and_then(|object| object.get("$schema")) else {
        return Ok(());
    };
    match declared.as_str() {
        Some(uri) if Draft::from_schema_uri(uri) == Draft::Draft202012 => Ok(()),
        Some(uri) => Err(SchemaError::UnsupportedDialect {
            found: uri.to_owned(),
        }),
        None => Err(SchemaError::UnsupportedDialect {
            found: declared.to_string(),
        }),
    }
}

/// One validation error as one or more field errors (one per refused property).
fn push_field_errors(
    source: &Value,
    error: &jsonschema::ValidationError<'_>,
    fields: &mut Vec<FieldError>,
) {
    let at = error.instance_path().as_str();
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            fields.push(FieldError {
                pointer: child(at, &name),
                message: required_reason(source, error, &name),
            });
        }
        ValidationErrorKind::PropertyNames { error: name_error } => {
            let pointer = name_error
                .instance()
                .as_str()
                .map_or_else(|| at.to_owned(), |name| child(at, name));
            fields.push(FieldError {
                pointer,
                message: format!("has an invalid name: {}", name_error.masked()),
            });
        }
        ValidationErrorKind::FalseSchema => fields.push(FieldError {
            pointer: at.to_owned(),
            message: "is not allowed".to_owned(),
        }),
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                fields.push(FieldError {
                    pointer: child(at, name),
                    message: "is not allowed (additional property)".to_owned(),
                });
            }
        }
        ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected {
                fields.push(FieldError {
                    pointer: child(at, name),
                    message: "is not allowed (unevaluated property)".to_owned(),
                });
            }
        }
        _ => fields.push(FieldError {
            pointer: at.to_owned(),
            message: error.masked().to_string(),
        }),
    }
}

/// Why `missing` is required: always, or because a property it depends on is present
/// (`dependentRequired`, whose trigger is looked up in the schema document).
fn required_reason(
    source: &Value,
    error: &jsonschema::ValidationError<'_>,
    missing: &str,
) -> String {
    let keyword = error.schema_path().as_str();
    if !keyword.ends_with("/dependentRequired") {
        return "is required".to_owned();
    }
    let instance = error.instance();
    let trigger = source
        .pointer(keyword)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .find(|(trigger, dependents)| {
            instance.get(trigger.as_str()).is_some()
                && dependents
                    .as_array()
                    .is_some_and(|names| names.iter().any(|name| name == missing))
        })
        .map(|(trigger, _)| trigger);
    match trigger {
        Some(trigger) => format!("is required when `{trigger}` is present"),
        None => "is required by another property that is present".to_owned(),
    }
}

/// `parent` + `/name`, with `~` and `/` escaped as RFC 6901 requires.
fn child(parent: &str, name: &str) -> String {
    let mut pointer = String::with_capacity(parent.len() + name.len() + 1);
    pointer.push_str(parent);
    pointer.push('/');
    pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
    pointer
}

/// serde_json appends " at line L column C"; the error carries those as fields.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_escape_property_names() {
        assert_eq!(child("", "a/b"), "/a~1b");
        assert_eq!(child("/x", "m~n"), "/x/m~0n");
    }

    #[test]
    fn other_dialects_are_refused() {
        let draft7 = json!({"$schema": "http://json-schema.org/draft-07/schema#"});
        assert!(matches!(
            JsonSchema::new(&draft7),
            Err(SchemaError::UnsupportedDialect { .. })
        ));
        let current = json!({"$schema": "https://json-schema.org/draft/2020-12/schema"});
        assert!(JsonSchema::new(&current).is_ok());
        assert!(matches!(
            JsonSchema::new(&json!({"$schema": 7})),
            Err(SchemaError::UnsupportedDialect { .. })
        ));
    }

    #[test]
    fn remote_references_are_not_fetched() {
        let remote = json!({"$ref": "https://example.com/schemas/order.json"});
        assert!(matches!(
            JsonSchema::new(&remote),
            Err(SchemaError::Invalid { .. })
        ));
    }

    #[test]
    fn formats_are_annotations_unless_asked_for() {
        let schema = json!({"type": "string", "format": "email"});
        let lenient = JsonSchema::new(&schema).expect("valid schema");
        assert!(lenient.is_valid(&json!("not an email")));
        let strict = JsonSchema::builder()
            .validate_formats(true)
            .compile(&schema)
            .expect("valid schema");
        assert!(!strict.is_valid(&json!("not an email")));
        assert!(strict.is_valid(&json!("someone@example.com")));
    }

    #[test]
    fn dependent_required_names_its_trigger_through_refs() {
        let schema = JsonSchema::new(&json!({
            "properties": { "payment": { "$ref": "#/$defs/payment" } },
            "$defs": {
                "payment": { "dependentRequired": { "card": ["expiry", "cvc"], "iban": ["bic"] } }
            }
        }))
        .expect("valid schema");
        let fields = schema
            .validate(&json!({ "payment": { "card": "4111", "expiry": "12/30", "iban": "X" } }))
            .expect_err("invalid");
        let found: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f.pointer.as_str(), f.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("/payment/cvc", "is required when `card` is present"),
                ("/payment/bic", "is required when `iban` is present"),
            ]
        );
    }

    #[test]
    fn property_names_point_at_the_property_without_quoting_it() {
        let schema = JsonSchema::new(&json!({
            "properties": { "tags": { "propertyNames": { "pattern": "^[a-z]+$" } } }
        }))
        .expect("valid schema");
        let fields = schema
            .validate(&json!({ "tags": { "ok": 1, "Secret/Name": 2 } }))
            .expect_err("invalid");
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert_eq!(fields[0].pointer, "/tags/Secret~1Name");
        assert!(
            !fields[0].message.contains("Secret"),
            "{}",
            fields[0].message
        );
        assert!(
            fields[0].message.contains("^[a-z]+$"),
            "{}",
            fields[0].message
        );
    }

    #[test]
    fn text_that_is_not_json_names_its_position() {
        let error = JsonSchema::parse("{\n  \"type\": }").expect_err("not JSON");
        assert!(
            matches!(error, SchemaError::NotJson { line: 2, .. }),
            "{error:?}"
        );
    }
}
