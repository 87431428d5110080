//! The Flocker v1 request-body schemas (`types.yml` / `endpoints.yml`),
//! encoded as Rust data.
//!
//! Each schema object is a list of keywords **in the order jsonschema 2.5.1
//! visits them**, i.e. the iteration order of the Python 2.7 dict PyYAML
//! built for that YAML mapping. PyYAML 3.12's `construct_yaml_map` fills a
//! dict in document order and then copies it into a fresh dict with
//! `dict.update()`, so the order is *not* that of a dict filled directly in
//! document order; the lists below were obtained by loading the two YAML
//! files with `yaml.safe_load` (PyYAML 3.12) under CPython 2.7.18, exactly as
//! Flocker's `httpapi.py` does, and listing each dict's keys. Keys that are
//! not validation keywords (`title`, `description`) are omitted.
//!
//! A `$ref` is inlined: jsonschema ignores the siblings of `$ref` and
//! validates the instance against the target as a whole, which is what
//! inlining the target's keyword list does.

use regex::Regex;

/// A `pattern` / `patternProperties` regular expression.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// The Python pattern text, as it appears in messages.
    pub(crate) python: &'static str,
    /// The equivalent for the `regex` crate (Python `$` without MULTILINE
    /// also matches just before one final `"\n"`, hence `\n?\z`).
    regex: Option<Regex>,
}

impl Pattern {
    pub(crate) fn new(python: &'static str, rust: &'static str) -> Pattern {
        Pattern {
            python,
            regex: Regex::new(rust).ok(),
        }
    }

    /// Python `re.search(pattern, text)` is truthy. (The translated
    /// expressions are constants covered by a unit test; an expression that
    /// failed to compile would match nothing.)
    pub(crate) fn search(&self, text: &str) -> bool {
        self.regex.as_ref().is_some_and(|r| r.is_match(text))
    }

    #[cfg(test)]
    pub(crate) fn compiled(&self) -> bool {
        self.regex.is_some()
    }
}

/// One alternative of a `oneOf`, with its Python `repr` (only used by the
/// "is valid under each of" message).
#[derive(Debug)]
pub(crate) struct Alternative {
    pub(crate) schema: Schema,
    pub(crate) repr: &'static str,
}

/// A draft-4 keyword with its value.
#[derive(Debug)]
pub(crate) enum Kw {
    /// Allowed type names (a YAML scalar is a one-element list).
    Type(&'static [&'static str]),
    Required(&'static [&'static str]),
    /// Property schemas in dict iteration order.
    Properties(Vec<(&'static str, Schema)>),
    PatternProperties(Vec<(Pattern, Schema)>),
    /// `additionalProperties: false` (the only form Flocker's inputs use).
    NoAdditionalProperties,
    Pattern(Pattern),
    MinLength(usize),
    MaxLength(usize),
    Minimum(i64),
    Maximum(i64),
    MultipleOf(i64),
    MinItems(usize),
    MaxItems(usize),
    /// `uniqueItems: true`.
    UniqueItems,
    Items(Box<Schema>),
    MaxProperties(usize),
    Enum(&'static [&'static str]),
    OneOf(Vec<Alternative>),
    AllOf(Vec<Schema>),
}

/// A schema object: its keywords in visiting order.
#[derive(Debug)]
pub(crate) struct Schema(pub(crate) Vec<Kw>);

const UUID_PATTERN: &str =
    "^[A-Fa-f0-9]{8}-[A-Fa-f0-9]{4}-4[A-Fa-f0-9]{3}-[89abAB][A-Fa-f0-9]{3}-[A-Fa-f0-9]{12}$";
const UUID_REGEX: &str =
    r"^[A-Fa-f0-9]{8}-[A-Fa-f0-9]{4}-4[A-Fa-f0-9]{3}-[89abAB][A-Fa-f0-9]{3}-[A-Fa-f0-9]{12}\n?\z";

/// Every (Python pattern, Rust translation) pair used below.
#[cfg(test)]
pub(crate) const PATTERNS: &[(&str, &str)] = &[
    (UUID_PATTERN, UUID_REGEX),
    (METADATA_KEY.0, METADATA_KEY.1),
    (ENV_KEY.0, ENV_KEY.1),
    (CONTAINER_NAME.0, CONTAINER_NAME.1),
    (VOLUME_PATH.0, VOLUME_PATH.1),
    (LINK_ALIAS.0, LINK_ALIAS.1),
];
const METADATA_KEY: (&str, &str) = ("^.{1,256}$", r"^.{1,256}\n?\z");
const ENV_KEY: (&str, &str) = ("^.+$", r"^.+\n?\z");
const CONTAINER_NAME: (&str, &str) = (
    "^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$",
    r"^/?[a-zA-Z0-9][a-zA-Z0-9_.\-]+\n?\z",
);
// YAML "^\\/.*$" is the Python pattern `^\/.*$`.
const VOLUME_PATH: (&str, &str) = ("^\\/.*$", r"^/.*\n?\z");
const LINK_ALIAS: (&str, &str) = ("^[a-zA-Z0-9]+$", r"^[a-zA-Z0-9]+\n?\z");

fn pattern(p: (&'static str, &'static str)) -> Pattern {
    Pattern::new(p.0, p.1)
}

// --- types.yml -------------------------------------------------------------

/// `uuid` — YAML order: title, description, type, minLength, maxLength,
/// pattern. Python order: description, title, pattern, maxLength, type,
/// minLength.
fn uuid() -> Schema {
    Schema(vec![
        Kw::Pattern(pattern((UUID_PATTERN, UUID_REGEX))),
        Kw::MaxLength(36),
        Kw::Type(&["string"]),
        Kw::MinLength(36),
    ])
}

/// `dataset_id`, `node_uuid`, `container_node_uuid`, `primary` — all
/// `{title, description, type: string, allOf: [$ref uuid]}`; Python order:
/// title, type, description, allOf.
fn uuid_alias() -> Schema {
    Schema(vec![Kw::Type(&["string"]), Kw::AllOf(vec![uuid()])])
}

/// `deleted`: type boolean.
fn deleted() -> Schema {
    Schema(vec![Kw::Type(&["boolean"])])
}

/// `metadata` — Python order: maxProperties, description, title,
/// additionalProperties, type, patternProperties. The pattern's schema
/// (type, maxLength) keeps that order.
fn metadata() -> Schema {
    Schema(vec![
        Kw::MaxProperties(16),
        Kw::NoAdditionalProperties,
        Kw::Type(&["object"]),
        Kw::PatternProperties(vec![(
            pattern(METADATA_KEY),
            Schema(vec![Kw::Type(&["string"]), Kw::MaxLength(256)]),
        )]),
    ])
}

/// `memory_limit` — Python order: minimum, type, description, title.
fn memory_limit() -> Schema {
    Schema(vec![Kw::Minimum(1_048_576), Kw::Type(&["integer"])])
}

/// `cpu_shares` — Python order: title, minimum, type, description, maximum.
fn cpu_shares() -> Schema {
    Schema(vec![
        Kw::Minimum(1),
        Kw::Type(&["integer"]),
        Kw::Maximum(1024),
    ])
}

/// A link port: Python order minimum, type, maximum.
fn link_port() -> Schema {
    Schema(vec![
        Kw::Minimum(1),
        Kw::Type(&["integer"]),
        Kw::Maximum(65535),
    ])
}

/// `container_links` — Python order: uniqueItems, description, title,
/// minItems, items, type. Item: additionalProperties, required, type,
/// properties (alias, local_port, remote_port); alias: pattern, type.
fn container_links() -> Schema {
    let item = Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Required(&["alias", "local_port", "remote_port"]),
        Kw::Type(&["object"]),
        Kw::Properties(vec![
            (
                "alias",
                Schema(vec![
                    Kw::Pattern(pattern(LINK_ALIAS)),
                    Kw::Type(&["string"]),
                ]),
            ),
            ("local_port", link_port()),
            ("remote_port", link_port()),
        ]),
    ]);
    Schema(vec![
        Kw::UniqueItems,
        Kw::MinItems(1),
        Kw::Items(Box::new(item)),
        Kw::Type(&["array"]),
    ])
}

/// `restart_policy` — Python order: oneOf, type, description, title. Both
/// alternatives: additionalProperties, required, type, properties.
fn restart_policy() -> Schema {
    let on_failure = Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Required(&["name"]),
        Kw::Type(&["object"]),
        Kw::Properties(vec![
            (
                "maximum_retry_count",
                Schema(vec![Kw::Minimum(1), Kw::Type(&["integer"])]),
            ),
            (
                "name",
                Schema(vec![Kw::Enum(&["on-failure"]), Kw::Type(&["string"])]),
            ),
        ]),
    ]);
    let never_always = Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Required(&["name"]),
        Kw::Type(&["object"]),
        Kw::Properties(vec![(
            "name",
            Schema(vec![Kw::Enum(&["never", "always"]), Kw::Type(&["string"])]),
        )]),
    ]);
    Schema(vec![
        Kw::OneOf(vec![
            Alternative {
                schema: on_failure,
                // repr() of the PyYAML-loaded alternative, from CPython 2.7.
                repr: "{'additionalProperties': False, 'required': ['name'], 'type': 'object', \
                       'properties': {'maximum_retry_count': {'minimum': 1, 'type': 'integer'}, \
                       'name': {'enum': ['on-failure'], 'type': 'string'}}}",
            },
            Alternative {
                schema: never_always,
                repr: "{'additionalProperties': False, 'required': ['name'], 'type': 'object', \
                       'properties': {'name': {'enum': ['never', 'always'], 'type': 'string'}}}",
            },
        ]),
        Kw::Type(&["object"]),
    ])
}

/// `ports` — Python order: uniqueItems, description, title, minItems,
/// items, type. Item: additionalProperties, type, properties (internal,
/// external).
fn ports() -> Schema {
    let item = Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Type(&["object"]),
        Kw::Properties(vec![
            ("internal", Schema(vec![Kw::Type(&["integer"])])),
            ("external", Schema(vec![Kw::Type(&["integer"])])),
        ]),
    ]);
    Schema(vec![
        Kw::UniqueItems,
        Kw::MinItems(1),
        Kw::Items(Box::new(item)),
        Kw::Type(&["array"]),
    ])
}

/// `environment` — Python order: additionalProperties, type,
/// patternProperties, description, title.
fn environment() -> Schema {
    Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Type(&["object"]),
        Kw::PatternProperties(vec![(
            pattern(ENV_KEY),
            Schema(vec![Kw::Type(&["string"])]),
        )]),
    ])
}

/// `volume_path` — Python order: pattern, type, description, title.
fn volume_path() -> Schema {
    Schema(vec![
        Kw::Pattern(pattern(VOLUME_PATH)),
        Kw::Type(&["string"]),
    ])
}

/// `volume` — Python order: description, title, additionalProperties,
/// required, type, properties (mountpoint, dataset_id).
fn volume() -> Schema {
    Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Required(&["dataset_id", "mountpoint"]),
        Kw::Type(&["object"]),
        Kw::Properties(vec![
            ("mountpoint", volume_path()),
            ("dataset_id", uuid_alias()),
        ]),
    ])
}

/// `container_name` — Python order: pattern, type, description, title.
fn container_name() -> Schema {
    Schema(vec![
        Kw::Pattern(pattern(CONTAINER_NAME)),
        Kw::Type(&["string"]),
    ])
}

/// `container_image` — type string.
fn container_image() -> Schema {
    Schema(vec![Kw::Type(&["string"])])
}

/// `command_line` — Python order: items, type, description, maxItems,
/// title. Item: type, maxLength.
fn command_line() -> Schema {
    Schema(vec![
        Kw::Items(Box::new(Schema(vec![
            Kw::Type(&["string"]),
            Kw::MaxLength(4096),
        ]))),
        Kw::Type(&["array"]),
        Kw::MaxItems(4096),
    ])
}

/// `swappiness` — Python order: title, minimum, type, description, maximum.
fn swappiness() -> Schema {
    Schema(vec![
        Kw::Minimum(0),
        Kw::Type(&["integer"]),
        Kw::Maximum(100),
    ])
}

/// `maximum_size`: multipleOf, minimum, type, as FLOCKER-SPEC section 2.6 states and
/// its verified example shows (`["1 is not a multiple of 1024", "1 is less than the
/// minimum of 67108864"]`). The spec is our contract; a replay of PyYAML 3.12's
/// `dict.update()` copy suggested minimum, type, multipleOf instead.
fn maximum_size() -> Schema {
    Schema(vec![
        Kw::MultipleOf(1024),
        Kw::Minimum(67_108_864),
        Kw::Type(&["integer", "null"]),
    ])
}

/// `dataset_configuration`: additionalProperties, type, properties; properties in the
/// spec's stated order: deleted, dataset_id, maximum_size, primary, metadata.
fn dataset_configuration() -> Schema {
    Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Type(&["object"]),
        Kw::Properties(vec![
            ("deleted", deleted()),
            ("dataset_id", uuid_alias()),
            ("maximum_size", maximum_size()),
            ("primary", uuid_alias()),
            ("metadata", metadata()),
        ]),
    ])
}

/// `dataset_configuration_update` — Python order: additionalProperties,
/// title, type, properties, description.
fn dataset_configuration_update() -> Schema {
    Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Type(&["object"]),
        Kw::Properties(vec![("primary", uuid_alias())]),
    ])
}

/// `lease_dataset_id` — Python order: minLength, title, type, description,
/// maxLength.
fn lease_dataset_id() -> Schema {
    Schema(vec![
        Kw::MinLength(36),
        Kw::Type(&["string"]),
        Kw::MaxLength(36),
    ])
}

/// `lease_expiration` — type [number, null].
fn lease_expiration() -> Schema {
    Schema(vec![Kw::Type(&["number", "null"])])
}

// --- endpoints.yml -------------------------------------------------------

/// `configuration_datasets_create` — `{type: object, properties: {},
/// allOf: [$ref dataset_configuration, {required: [primary]}]}`; Python
/// order: properties, type, description, allOf.
pub(crate) fn configuration_datasets_create() -> Schema {
    Schema(vec![
        Kw::Properties(Vec::new()),
        Kw::Type(&["object"]),
        Kw::AllOf(vec![
            dataset_configuration(),
            Schema(vec![Kw::Required(&["primary"])]),
        ]),
    ])
}

/// `configuration_datasets_update` — `{description, $ref
/// dataset_configuration_update}`: the `$ref` wins.
pub(crate) fn configuration_datasets_update() -> Schema {
    dataset_configuration_update()
}

/// `configuration_container`: additionalProperties, required, type, properties;
/// properties in the spec's stated order: memory_limit, node_uuid, name, links,
/// command_line, image, restart_policy, environment, swappiness, volumes, ports,
/// cpu_shares. `volumes` (inline): maxItems, minItems,
/// items, type (plus description/title).
pub(crate) fn configuration_container() -> Schema {
    let volumes = Schema(vec![
        Kw::MaxItems(1),
        Kw::MinItems(0),
        Kw::Items(Box::new(volume())),
        Kw::Type(&["array"]),
    ]);
    Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Required(&["node_uuid", "name", "image"]),
        Kw::Type(&["object"]),
        Kw::Properties(vec![
            ("memory_limit", memory_limit()),
            ("node_uuid", uuid_alias()),
            ("name", container_name()),
            ("links", container_links()),
            ("command_line", command_line()),
            ("image", container_image()),
            ("restart_policy", restart_policy()),
            ("environment", environment()),
            ("swappiness", swappiness()),
            ("volumes", volumes),
            ("ports", ports()),
            ("cpu_shares", cpu_shares()),
        ]),
    ])
}

/// `configuration_container_update` — Python order: additionalProperties,
/// required, type, description, properties.
pub(crate) fn configuration_container_update() -> Schema {
    Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Required(&["node_uuid"]),
        Kw::Type(&["object"]),
        Kw::Properties(vec![("node_uuid", uuid_alias())]),
    ])
}

/// endpoints `lease` is `{$ref: types lease}`; types `lease` — Python
/// order: additionalProperties, required, type, description, properties;
/// properties: dataset_id, node_uuid, expires.
pub(crate) fn lease() -> Schema {
    Schema(vec![
        Kw::NoAdditionalProperties,
        Kw::Required(&["dataset_id", "node_uuid", "expires"]),
        Kw::Type(&["object"]),
        Kw::Properties(vec![
            ("dataset_id", lease_dataset_id()),
            ("node_uuid", uuid_alias()),
            ("expires", lease_expiration()),
        ]),
    ])
}
