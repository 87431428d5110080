//! JSON-Schema (draft 4) validation of request bodies, with the error
//! messages of the original Flocker control service.
//!
//! The original parsed every POST body with Python 2.7's `json.loads` and
//! validated it with jsonschema 2.5.1 against `types.yml`/`endpoints.yml`
//! (loaded with PyYAML); the 400 response lists `error.message` of every
//! error `iter_errors` yields. This module owns that behaviour:
//!
//! * [`parse_body`] — decoding (what counts as "could not be decoded");
//! * [`validate`] — the five input schemas ([`BodySchema`]) encoded as Rust
//!   data (`defs`), and a small validator implementing the draft-4 keywords
//!   they use with jsonschema 2.5.1's semantics (errors inside `oneOf`
//!   alternatives are swallowed, `allOf` errors are reported unwrapped,
//!   `$ref` ignores its siblings, booleans are not numbers, `1.0` is not an
//!   integer, Python `re.search` semantics for patterns...);
//! * [`py_repr`] — Python 2 `repr`, which leaks into the messages.
//!
//! Python-compatibility choices:
//!
//! * Messages are reproduced byte for byte, including Python 2 artefacts:
//!   strings from the request are `unicode` (`u'junk'`), strings from the
//!   schema are byte strings (`'primary'`), integers outside the C `long`
//!   range get an `L`, floats use Python's shortest `repr` (`1e+16`,
//!   `67108864.0`, `inf` for `1e400`).
//! * `json.loads` accepts `NaN`, `Infinity` and `-Infinity`; this
//!   implementation rejects them as undecodable (policy decision). Lone
//!   UTF-16 surrogate escapes (`"\ud800"`), which Python accepts, are also
//!   undecodable here, as are bodies nested more than 128 levels deep.
//! * The **order** of several errors follows the order in which jsonschema
//!   visits keywords and properties, i.e. the iteration order of the Python
//!   2.7 dicts PyYAML built from the schema files. Those orders were taken
//!   from CPython 2.7 itself (see `defs`). Note that they differ in places
//!   from the orders listed in FLOCKER-SPEC §2.6, which assume dicts filled
//!   directly in YAML order; PyYAML 3.12 copies each mapping with
//!   `dict.update()`, which reorders some of them (e.g. `maximum_size` is
//!   checked minimum, type, multipleOf).
//! * Iteration over the request's own objects (extra keys in one
//!   "Additional properties" message, `patternProperties` matches, dict
//!   `repr`) simulates CPython 2.7's dict/set hash tables. The Python dict
//!   was filled in document order; serde_json keeps keys sorted, so sorted
//!   order is used as the insertion order. This can only differ from the
//!   original when keys collide in the hash table: multi-error ordering is
//!   best effort, single-error messages are exact.

mod defs;
mod pyrepr;

use std::sync::LazyLock;

use serde_json::{Map, Value};

use defs::{Kw, Schema};
use pyrepr::{bytes_list_repr, bytes_repr, dict_items, py_eq, py_order, value_repr, PyNum};

/// The request bodies that are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySchema {
    /// `POST /v1/configuration/datasets` (`configuration_datasets_create`).
    DatasetCreate,
    /// `POST /v1/configuration/datasets/<id>` (`configuration_datasets_update`).
    DatasetUpdate,
    /// `POST /v1/configuration/containers` (`configuration_container`).
    ContainerCreate,
    /// `POST /v1/configuration/containers/<name>` (`configuration_container_update`).
    ContainerUpdate,
    /// `POST /v1/configuration/leases` (`lease`).
    Lease,
}

struct Schemas {
    dataset_create: Schema,
    dataset_update: Schema,
    container_create: Schema,
    container_update: Schema,
    lease: Schema,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| Schemas {
    dataset_create: defs::configuration_datasets_create(),
    dataset_update: defs::configuration_datasets_update(),
    container_create: defs::configuration_container(),
    container_update: defs::configuration_container_update(),
    lease: defs::lease(),
});

impl BodySchema {
    fn schema(self) -> &'static Schema {
        let schemas = &*SCHEMAS;
        match self {
            BodySchema::DatasetCreate => &schemas.dataset_create,
            BodySchema::DatasetUpdate => &schemas.dataset_update,
            BodySchema::ContainerCreate => &schemas.container_create,
            BodySchema::ContainerUpdate => &schemas.container_update,
            BodySchema::Lease => &schemas.lease,
        }
    }
}

/// Parse a request body the way the original did (Python json.loads on the raw bytes, UTF-8):
/// Err(()) for an empty body, invalid UTF-8, or invalid JSON. Policy decisions: the non-standard
/// tokens NaN/Infinity/-Infinity are rejected as undecodable (Err). Duplicate keys: last wins.
// The unit error is the interface the HTTP layer expects: there is exactly
// one "could not be decoded" response, whatever the cause.
#[allow(clippy::result_unit_err)]
pub fn parse_body(bytes: &[u8]) -> Result<Value, ()> {
    let text = std::str::from_utf8(bytes).map_err(|_| ())?;
    // serde_json rejects empty input, NaN/Infinity and trailing garbage,
    // accepts the same insignificant whitespace as Python (space, \t, \n,
    // \r), and keeps the last of duplicate keys like a Python dict does.
    serde_json::from_str(text).map_err(|_| ())
}

/// Validate against the endpoint's schema; Err holds the list of messages, in the order the
/// original produced them (see ordering rules below). Ok(()) when valid.
///
/// Ordering: keywords and properties are visited in the Python 2.7 dict
/// order of the PyYAML-loaded schema (see the module documentation); all
/// errors, including those found inside properties, items and `allOf`
/// branches, are flattened into one list without paths.
pub fn validate(schema: BodySchema, body: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    iter_errors(schema.schema(), body, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Python 2 `repr` of a JSON value as it appears in messages when the value came from the
/// request (strings are unicode: u'...').
pub fn py_repr(value: &Value) -> String {
    value_repr(value)
}

/// jsonschema's `Draft4Validator.is_type`.
fn is_type(instance: &Value, type_name: &str) -> bool {
    match type_name {
        "object" => instance.is_object(),
        "array" => instance.is_array(),
        "string" => instance.is_string(),
        "null" => instance.is_null(),
        "boolean" => instance.is_boolean(),
        // `bool` is a subclass of `int` in Python, but jsonschema excludes it.
        "number" => instance.is_number(),
        "integer" => match instance {
            Value::Number(n) => matches!(PyNum::from_json(n), PyNum::Int(_)),
            _ => false,
        },
        _ => false,
    }
}

fn number(instance: &Value) -> Option<PyNum> {
    match instance {
        Value::Number(n) => Some(PyNum::from_json(n)),
        _ => None,
    }
}

fn char_len(instance: &Value) -> Option<usize> {
    instance.as_str().map(|s| s.chars().count())
}

/// `Validator.iter_errors`: visit the schema's keywords in order, appending
/// each error's message.
fn iter_errors(schema: &Schema, instance: &Value, out: &mut Vec<String>) {
    for keyword in &schema.0 {
        check_keyword(schema, keyword, instance, out);
    }
}

fn is_valid(schema: &Schema, instance: &Value) -> bool {
    let mut errors = Vec::new();
    iter_errors(schema, instance, &mut errors);
    errors.is_empty()
}

fn check_keyword(schema: &Schema, keyword: &Kw, instance: &Value, out: &mut Vec<String>) {
    let r = || value_repr(instance);
    match keyword {
        Kw::Type(types) => {
            if !types.iter().any(|t| is_type(instance, t)) {
                let names: Vec<String> = types.iter().map(|t| bytes_repr(t)).collect();
                out.push(format!("{} is not of type {}", r(), names.join(", ")));
            }
        }
        Kw::Required(names) => {
            if let Value::Object(map) = instance {
                for name in names.iter().filter(|n| !map.contains_key(**n)) {
                    out.push(format!("{} is a required property", bytes_repr(name)));
                }
            }
        }
        Kw::Properties(properties) => {
            if let Value::Object(map) = instance {
                for (name, subschema) in properties {
                    if let Some(value) = map.get(*name) {
                        iter_errors(subschema, value, out);
                    }
                }
            }
        }
        Kw::PatternProperties(patterns) => {
            if let Value::Object(map) = instance {
                for (pattern, subschema) in patterns {
                    for (key, value) in dict_items(map) {
                        if pattern.search(key) {
                            iter_errors(subschema, value, out);
                        }
                    }
                }
            }
        }
        Kw::NoAdditionalProperties => {
            if let Value::Object(map) = instance {
                let extras = additional_properties(schema, map);
                if !extras.is_empty() {
                    let verb = if extras.len() == 1 { "was" } else { "were" };
                    let names: Vec<String> =
                        extras.iter().map(|k| pyrepr::unicode_repr(k)).collect();
                    out.push(format!(
                        "Additional properties are not allowed ({} {verb} unexpected)",
                        names.join(", ")
                    ));
                }
            }
        }
        Kw::Pattern(pattern) => {
            if let Value::String(s) = instance {
                if !pattern.search(s) {
                    out.push(format!(
                        "{} does not match {}",
                        r(),
                        bytes_repr(pattern.python)
                    ));
                }
            }
        }
        Kw::MinLength(min) => {
            if char_len(instance).is_some_and(|len| len < *min) {
                out.push(format!("{} is too short", r()));
            }
        }
        Kw::MaxLength(max) => {
            if char_len(instance).is_some_and(|len| len > *max) {
                out.push(format!("{} is too long", r()));
            }
        }
        Kw::Minimum(min) => {
            if let Some(n) = number(instance) {
                if n.cmp_i64(*min).is_some_and(|o| o.is_lt()) {
                    out.push(format!("{} is less than the minimum of {min}", n.repr()));
                }
            }
        }
        Kw::Maximum(max) => {
            if let Some(n) = number(instance) {
                if n.cmp_i64(*max).is_some_and(|o| o.is_gt()) {
                    out.push(format!("{} is greater than the maximum of {max}", n.repr()));
                }
            }
        }
        Kw::MultipleOf(divisor) => {
            if let Some(n) = number(instance) {
                if n.not_multiple_of(*divisor) {
                    out.push(format!("{} is not a multiple of {divisor}", n.repr()));
                }
            }
        }
        Kw::MinItems(min) => {
            if instance.as_array().is_some_and(|a| a.len() < *min) {
                out.push(format!("{} is too short", r()));
            }
        }
        Kw::MaxItems(max) => {
            if instance.as_array().is_some_and(|a| a.len() > *max) {
                out.push(format!("{} is too long", r()));
            }
        }
        Kw::UniqueItems => {
            if let Value::Array(items) = instance {
                let duplicate = items
                    .iter()
                    .enumerate()
                    .any(|(i, a)| items[i + 1..].iter().any(|b| py_eq(a, b, true)));
                if duplicate {
                    out.push(format!("{} has non-unique elements", r()));
                }
            }
        }
        Kw::Items(item_schema) => {
            if let Value::Array(items) = instance {
                for item in items {
                    iter_errors(item_schema, item, out);
                }
            }
        }
        Kw::MaxProperties(max) => {
            if instance.as_object().is_some_and(|m| m.len() > *max) {
                out.push(format!("{} has too many properties", r()));
            }
        }
        Kw::Enum(allowed) => {
            let found = instance.as_str().is_some_and(|s| allowed.contains(&s));
            if !found {
                out.push(format!(
                    "{} is not one of {}",
                    r(),
                    bytes_list_repr(allowed)
                ));
            }
        }
        Kw::OneOf(alternatives) => check_one_of(alternatives, instance, out),
        Kw::AllOf(subschemas) => {
            for subschema in subschemas {
                iter_errors(subschema, instance, out);
            }
        }
    }
}

/// jsonschema 2.5.1 `oneOf_draft4`: errors of the alternatives are only
/// kept as the error's `context`, never reported.
fn check_one_of(alternatives: &[defs::Alternative], instance: &Value, out: &mut Vec<String>) {
    let mut rest = alternatives.iter();
    let first_valid = rest.by_ref().find(|alt| is_valid(&alt.schema, instance));
    match first_valid {
        None => out.push(format!(
            "{} is not valid under any of the given schemas",
            value_repr(instance)
        )),
        Some(first) => {
            // The same iterator continues after the first valid one.
            let mut more: Vec<&str> = rest
                .filter(|alt| is_valid(&alt.schema, instance))
                .map(|alt| alt.repr)
                .collect();
            if !more.is_empty() {
                more.push(first.repr);
                out.push(format!(
                    "{} is valid under each of {}",
                    value_repr(instance),
                    more.join(", ")
                ));
            }
        }
    }
}

/// jsonschema's `find_additional_properties`, collected into a Python
/// `set`: the keys (in instance dict order) that are neither listed in the
/// sibling `properties` nor matched by a sibling `patternProperties`
/// pattern, returned in the set's iteration order.
fn additional_properties<'a>(schema: &Schema, map: &'a Map<String, Value>) -> Vec<&'a str> {
    let mut listed: Vec<&str> = Vec::new();
    let mut patterns: Vec<&defs::Pattern> = Vec::new();
    for keyword in &schema.0 {
        match keyword {
            Kw::Properties(properties) => listed.extend(properties.iter().map(|(n, _)| *n)),
            Kw::PatternProperties(pp) => patterns.extend(pp.iter().map(|(p, _)| p)),
            _ => {}
        }
    }
    let extras: Vec<&str> = dict_items(map)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !listed.contains(k) && !patterns.iter().any(|p| p.search(k)))
        .collect();
    py_order(&extras)
}

#[cfg(test)]
mod oracle_diff {
    //! TEMPORARY differential harness (removed before hand-off).
    use super::*;

    #[test]
    #[ignore]
    fn run_cases() {
        let input = std::fs::read_to_string("/tmp/oracle/cases.jsonl").unwrap();
        let mut out = String::new();
        for line in input.lines() {
            let case: Vec<String> = serde_json::from_str(line).unwrap();
            let schema = match case[0].as_str() {
                "DatasetCreate" => BodySchema::DatasetCreate,
                "DatasetUpdate" => BodySchema::DatasetUpdate,
                "ContainerCreate" => BodySchema::ContainerCreate,
                "ContainerUpdate" => BodySchema::ContainerUpdate,
                _ => BodySchema::Lease,
            };
            let result = match parse_body(case[1].as_bytes()) {
                Err(()) => serde_json::Value::Null,
                Ok(v) => match validate(schema, &v) {
                    Ok(()) => serde_json::json!([]),
                    Err(e) => serde_json::json!(e),
                },
            };
            out.push_str(&serde_json::to_string(&result).unwrap());
            out.push('\n');
        }
        std::fs::write("/tmp/oracle/rust_out.jsonl", out).unwrap();
    }
}
