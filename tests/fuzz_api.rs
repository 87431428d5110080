//! Malformed-input fuzzing of every v1 endpoint over real HTTPS against one control node.
//!
//! Bodies and path segments come from a seeded generator (proptest's `TestRng`; set
//! `FLOCKER_FUZZ_SEED` to a number to explore other inputs): invalid JSON, a wrong value
//! in every field, huge integers written as digits, floats where integers are expected,
//! negative numbers, 100 KB strings, deep nesting, unknown fields, unicode, NUL bytes,
//! `NaN` tokens, long path segments with %-escapes. Every generated write is invalid by
//! construction, so it must be refused with a 4xx and a JSON `{"description": ...}` body,
//! and the configuration must be exactly as it was after each batch.

mod common;

use std::time::Instant;

use common::Single;
use futures::stream::{self, StreamExt};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Generators

/// Digits of 10^30: an integer no machine type holds.
const HUGE: &str = "1000000000000000000000000000000";
/// 2^63: one past the largest accepted size, a multiple of 1024.
const TWO_POW_63: &str = "9223372036854775808";
/// 2^64.
const TWO_POW_64: &str = "18446744073709551616";

struct Gen {
    rng: TestRng,
    fresh: u64,
}

impl Gen {
    fn new() -> Gen {
        let seed: u64 = std::env::var("FLOCKER_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_f10c_4e4d);
        println!("fuzz seed {seed} (set FLOCKER_FUZZ_SEED to change)");
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Gen {
            rng: TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
            fresh: 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// A random version-4 UUID.
    fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    /// A name no container has yet.
    fn fresh_name(&mut self) -> String {
        self.fresh += 1;
        format!("fuzz{}", self.fresh)
    }

    fn fresh_port(&mut self) -> u64 {
        self.fresh += 1;
        20_000 + self.fresh
    }

    /// A JSON string literal of `len` random characters (unicode, escapes, NUL).
    fn string_literal(&mut self, len: usize) -> String {
        let pieces = [
            "a",
            "Z",
            "0",
            "-",
            " ",
            "é",
            "日本",
            "🦀",
            "\\u0000",
            "\\n",
            "\\\"",
            "\\\\",
            "\\ud83e\\udd80",
            "\\t",
            "'",
            "%",
            "/",
        ];
        let mut out = String::from("\"");
        for _ in 0..len {
            out.push_str(self.pick(&pieces));
        }
        out.push('"');
        out
    }

    /// `depth` nested arrays or objects.
    fn nested(&mut self, depth: usize) -> String {
        if self.chance(0.5) {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            format!("{}1{}", "{\"a\": ".repeat(depth), "}".repeat(depth))
        }
    }

    /// A key no schema allows.
    fn unknown_key(&mut self) -> String {
        match self.below(6) {
            0 => "\"junk\"".to_owned(),
            1 => "\"\"".to_owned(),
            2 => "\"\\u0000\"".to_owned(),
            3 => "\"PRIMARY\"".to_owned(),
            4 => format!("\"{}\"", "k".repeat(100_000)),
            _ => format!(
                "\"{}\"",
                self.pick(&["é", "日本", "🦀", "node_uuid ", "Primary"])
            ),
        }
    }

    /// Values of no type a field of `kind` accepts.
    fn wrong_type(&mut self, kind: Kind) -> String {
        let numbers = ["1", "-1", "1.5", "0", HUGE, "-1e30", "1e400"];
        let mut choices: Vec<String> = Vec::new();
        let is_string = matches!(kind, Kind::Uuid | Kind::Name | Kind::Image | Kind::LeaseId);
        let is_number = matches!(
            kind,
            Kind::Size | Kind::CpuShares | Kind::MemoryLimit | Kind::Swappiness | Kind::Expires
        );
        if !is_number && kind != Kind::Bool {
            choices.extend(numbers.iter().map(|s| s.to_string()));
        }
        if kind != Kind::Bool {
            choices.extend(["true".to_owned(), "false".to_owned()]);
        }
        if !matches!(kind, Kind::Size | Kind::Expires) {
            choices.push("null".to_owned());
        }
        if !is_string {
            choices.push(self.string_literal(3));
        }
        if !matches!(
            kind,
            Kind::Ports | Kind::Links | Kind::CommandLine | Kind::Volumes
        ) {
            choices.push("[]".to_owned());
            choices.push("[1, \"a\"]".to_owned());
        }
        if !matches!(
            kind,
            Kind::Metadata | Kind::Environment | Kind::RestartPolicy
        ) {
            choices.push("{}".to_owned());
            choices.push("{\"a\": 1}".to_owned());
        }
        // Nested arrays could be an empty (valid) list; nested objects never fit.
        if !matches!(
            kind,
            Kind::Ports | Kind::Links | Kind::CommandLine | Kind::Volumes
        ) {
            let depth = 1 + self.below(60);
            choices.push(self.nested(depth));
        }
        self.pick(&choices)
    }

    /// Values of the right JSON type that break the field's constraints, or that the
    /// schema lets through but the service must still refuse.
    fn wrong_value(&mut self, kind: Kind) -> String {
        let long = |n: usize| format!("\"{}\"", "a".repeat(n));
        let uuid = self.uuid();
        let port = self.fresh_port();
        let choices: Vec<String> = match kind {
            Kind::Uuid => vec![
                "\"\"".into(),
                "\"x\"".into(),
                "\"192.0.2.257\"".into(),
                long(100_000),
                format!("\"{}\"", "é".repeat(36)),
                format!("\"{}\"", "\\u0000".repeat(36)),
                // Version 1, not 4.
                "\"6ba7b810-9dad-11d1-80b4-00c04fd430c8\"".into(),
                format!("\"{{{}}}\"", &uuid[..34]),
                format!("\"{uuid} \""),
                format!("\"{}\"", uuid.replace('-', "")),
            ],
            Kind::Size => vec![
                "1".into(),
                "0".into(),
                "-67108864".into(),
                "67108864.0".into(),
                "67108865".into(),
                "6.7108864e7".into(),
                // Pass the schema (multiples of 1024), too large to store.
                HUGE.into(),
                TWO_POW_63.into(),
                TWO_POW_64.into(),
                format!("-{HUGE}"),
            ],
            Kind::Metadata => vec![
                format!(
                    "{{{}}}",
                    (0..17)
                        .map(|i| format!("\"k{i}\": \"v\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "{\"\": \"x\"}".into(),
                format!("{{\"{}\": \"x\"}}", "k".repeat(257)),
                format!("{{\"k\": {}}}", long(257)),
                "{\"k\": 1}".into(),
                "{\"k\": null}".into(),
                "{\"k\": {}}".into(),
                "{\"a\\nb\": \"x\"}".into(),
            ],
            Kind::Bool => vec![
                // The schema allows it; creating a deleted dataset makes no sense.
                "true".into(),
                "\"true\"".into(),
                "1".into(),
                "0".into(),
                "null".into(),
            ],
            Kind::Name => vec![
                "\"\"".into(),
                "\"a\"".into(),
                "\"-ab\"".into(),
                "\"a b\"".into(),
                "\"a/b\"".into(),
                "\"ñame\"".into(),
                "\"a\\u0000b\"".into(),
                "\"//ab\"".into(),
            ],
            Kind::Image => vec!["\"\"".into(), "\":tag\"".into(), "\"nginx:\"".into()],
            Kind::Ports => vec![
                "[]".into(),
                "[{}]".into(),
                "[1]".into(),
                "[{\"internal\": 80}]".into(),
                format!("[{{\"external\": {port}}}]"),
                format!("[{{\"internal\": 0, \"external\": {port}}}]"),
                "[{\"internal\": 80, \"external\": 70000}]".into(),
                "[{\"internal\": 80, \"external\": -1}]".into(),
                format!("[{{\"internal\": 80, \"external\": {HUGE}}}]"),
                format!("[{{\"internal\": 80.0, \"external\": {port}}}]"),
                format!("[{{\"internal\": 80, \"external\": {port}, \"junk\": 1}}]"),
                format!(
                    "[{{\"internal\": 80, \"external\": {port}}}, {{\"internal\": 80, \"external\": {port}}}]"
                ),
            ],
            Kind::Environment => vec![
                "{\"\": \"x\"}".into(),
                "{\"k\": 1}".into(),
                "{\"k\": null}".into(),
                "{\"k\": [\"v\"]}".into(),
            ],
            Kind::RestartPolicy => vec![
                "{}".into(),
                "{\"name\": \"sometimes\"}".into(),
                "{\"name\": \"always\", \"maximum_retry_count\": 1}".into(),
                "{\"name\": \"never\", \"junk\": 1}".into(),
                "{\"name\": \"on-failure\", \"maximum_retry_count\": 0}".into(),
                "{\"name\": \"on-failure\", \"maximum_retry_count\": -1}".into(),
                "{\"name\": \"on-failure\", \"maximum_retry_count\": 1.5}".into(),
                format!("{{\"name\": \"on-failure\", \"maximum_retry_count\": {HUGE}}}"),
                format!("{{\"name\": \"on-failure\", \"maximum_retry_count\": {TWO_POW_64}}}"),
                "{\"name\": \"ALWAYS\"}".into(),
            ],
            Kind::CommandLine => vec![
                "[1]".into(),
                "[null]".into(),
                "[\"a\", [\"b\"]]".into(),
                format!("[{}]", long(4097)),
                format!("[{}]", vec!["\"a\""; 4097].join(",")),
            ],
            Kind::Swappiness => vec!["-1".into(), "101".into(), "1.5".into(), HUGE.into()],
            Kind::Volumes => vec![
                format!(
                    "[{{\"dataset_id\": \"{uuid}\", \"mountpoint\": \"/a\"}}, {{\"dataset_id\": \"{uuid}\", \"mountpoint\": \"/b\"}}]"
                ),
                "[{\"dataset_id\": \"x\", \"mountpoint\": \"/a\"}]".into(),
                format!("[{{\"dataset_id\": \"{uuid}\", \"mountpoint\": \"relative\"}}]"),
                format!("[{{\"dataset_id\": \"{uuid}\", \"mountpoint\": \"/a\\nb\"}}]"),
                format!("[{{\"dataset_id\": \"{uuid}\"}}]"),
                "[{\"mountpoint\": \"/a\"}]".into(),
                format!(
                    "[{{\"dataset_id\": \"{uuid}\", \"mountpoint\": \"/a\", \"junk\": 1}}]"
                ),
                "[1]".into(),
            ],
            Kind::CpuShares => vec![
                "0".into(),
                "1025".into(),
                "-1".into(),
                "512.5".into(),
                "5e2".into(),
                HUGE.into(),
            ],
            Kind::MemoryLimit => vec![
                "0".into(),
                "1048575".into(),
                "-1".into(),
                "1048576.5".into(),
                HUGE.into(),
                TWO_POW_63.into(),
            ],
            Kind::Links => vec![
                "[]".into(),
                "[{\"alias\": \"a b\", \"local_port\": 1, \"remote_port\": 2}]".into(),
                "[{\"alias\": \"\", \"local_port\": 1, \"remote_port\": 2}]".into(),
                "[{\"alias\": \"db\", \"local_port\": 0, \"remote_port\": 2}]".into(),
                "[{\"alias\": \"db\", \"local_port\": 1, \"remote_port\": 65536}]".into(),
                "[{\"alias\": \"db\", \"local_port\": 1}]".into(),
                "[{\"alias\": \"db\", \"local_port\": 1, \"remote_port\": 2, \"x\": 1}]".into(),
                format!("[{{\"alias\": \"db\", \"local_port\": {HUGE}, \"remote_port\": 2}}]"),
                "[{\"alias\": \"db\", \"local_port\": 1, \"remote_port\": 2}, {\"alias\": \"db\", \"local_port\": 1, \"remote_port\": 2}]".into(),
            ],
            Kind::LeaseId => vec![
                "\"x\"".into(),
                long(35),
                long(37),
                // Exactly 36 characters, not a UUID: the schema lets it through.
                long(36),
                format!("\"{}\"", "-".repeat(36)),
                format!("\"{}\"", "é".repeat(36)),
                format!("\"{}\"", "\\u0000".repeat(36)),
            ],
            Kind::Expires => vec![
                "\"soon\"".into(),
                // Numbers the schema accepts and no lease can last.
                "1e30".into(),
                "-1e30".into(),
                "1e400".into(),
                "-1e400".into(),
                HUGE.into(),
                format!("-{HUGE}"),
                "1e11".into(),
            ],
        };
        self.pick(&choices)
    }

    fn invalid_for(&mut self, kind: Kind) -> String {
        if self.chance(0.5) {
            self.wrong_type(kind)
        } else {
            self.wrong_value(kind)
        }
    }

    /// A body that no endpoint accepts, derived from `template`.
    fn malformed(&mut self, template: &[Field]) -> Vec<u8> {
        let mut fields: Vec<(String, String)> = template
            .iter()
            .filter(|f| f.required || self.chance(0.6))
            .map(|f| (format!("\"{}\"", f.name), f.valid.clone()))
            .collect();
        if fields.is_empty() {
            fields.push((
                format!("\"{}\"", template[0].name),
                template[0].valid.clone(),
            ));
        }
        match self.below(20) {
            0..=9 => self.mutated_fields(template, fields).into_bytes(),
            10..=11 => self.undecodable(&fields).into_bytes(),
            12 => self.random_bytes(),
            13..=14 => self.not_an_object().into_bytes(),
            15 => {
                // One field nested too deep to decode, or just of the wrong type.
                let mut fields = fields;
                let depth = if self.chance(0.5) {
                    129 + self.below(100_000)
                } else {
                    2 + self.below(120)
                };
                let nested = self.nested(depth);
                let at = self.below(fields.len());
                fields[at].1 = nested;
                render(&fields).into_bytes()
            }
            16 => {
                // Duplicate key; the last (invalid) value is the one that counts.
                let mut fields = fields;
                let f = self.pick(template).clone();
                let bad = self.invalid_for(f.kind);
                fields.push((format!("\"{}\"", f.name), bad));
                render(&fields).into_bytes()
            }
            _ => {
                // Unknown fields, possibly many and large.
                let mut fields = fields;
                for _ in 0..1 + self.below(3) {
                    let key = self.unknown_key();
                    let value = if self.chance(0.3) {
                        self.string_literal(20_000)
                    } else {
                        "1".to_owned()
                    };
                    fields.push((key, value));
                }
                render(&fields).into_bytes()
            }
        }
    }

    /// A malformed body of at most 1 KiB, for requests whose body the server ignores
    /// (see `large_ignored_bodies_do_not_break_the_connection`).
    fn small_malformed(&mut self, template: &[Field]) -> Vec<u8> {
        loop {
            let body = self.malformed(template);
            if body.len() <= 1024 {
                return body;
            }
        }
    }

    fn mutated_fields(&mut self, template: &[Field], mut fields: Vec<(String, String)>) -> String {
        for _ in 0..1 + self.below(3) {
            let field = self.pick(template).clone();
            let key = format!("\"{}\"", field.name);
            let required: Vec<&Field> = template.iter().filter(|f| f.required).collect();
            if !required.is_empty() && self.chance(0.15) {
                let gone = format!("\"{}\"", self.pick(&required).name);
                fields.retain(|(k, _)| *k != gone);
                continue;
            }
            let bad = self.invalid_for(field.kind);
            match fields.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = bad,
                None => fields.push((key, bad)),
            }
        }
        render(&fields)
    }

    fn undecodable(&mut self, fields: &[(String, String)]) -> String {
        let text = render(fields);
        match self.below(8) {
            0 => {
                let mut cut = self.below(text.len());
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text[..cut].to_owned()
            }
            1 => format!("{text} x"),
            2 => format!("\u{feff}{text}"),
            3 => text.replacen('"', "'", 2),
            4 => format!("{}, }}", &text[..text.len() - 1]),
            5 => format!("/* c */ {text}"),
            _ => {
                let token = self.pick(&[
                    "NaN",
                    "Infinity",
                    "-Infinity",
                    "nan",
                    "undefined",
                    "01",
                    "+1",
                    ".5",
                    "1.",
                    "0x10",
                ]);
                let mut fields = fields.to_vec();
                if fields.is_empty() {
                    fields.push(("\"x\"".to_owned(), String::new()));
                }
                let at = self.below(fields.len());
                fields[at].1 = token.to_string();
                render(&fields)
            }
        }
    }

    fn random_bytes(&mut self) -> Vec<u8> {
        loop {
            let len = self.below(300);
            let bytes: Vec<u8> = (0..len).map(|_| self.rng.random::<u8>()).collect();
            // Random bytes are never a JSON object; make sure.
            if serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes).is_err() {
                return bytes;
            }
        }
    }

    fn not_an_object(&mut self) -> String {
        let depth = 1 + self.below(200_000);
        match self.below(13) {
            0 => String::new(),
            1 => " ".to_owned(),
            2 => "null".to_owned(),
            3 => "true".to_owned(),
            4 => HUGE.to_owned(),
            5 => "-0".to_owned(),
            6 => "1.5e308".to_owned(),
            7 => "[]".to_owned(),
            8 => "[{}]".to_owned(),
            9 => self.string_literal(100_000),
            10 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            11 => format!("{}1{}", "{\"a\": ".repeat(depth), "}".repeat(depth)),
            _ => "\"\\ud800\"".to_owned(),
        }
    }

    /// A path segment: long, unicode, %-escaped (not always valid UTF-8 once decoded).
    fn segment(&mut self) -> String {
        let mut out = String::new();
        for _ in 0..1 + self.below(6) {
            let piece = match self.below(9) {
                0 => "a".repeat(1 + self.below(10_000)),
                1 => "%41".repeat(1 + self.below(2_000)),
                2 => self
                    .pick(&[
                        "%00", "%20", "%2F", "%25", "%2e", "%3F", "%23", "%0A", "%C3%A9",
                    ])
                    .to_string(),
                3 => self.pick(&["%", "%z", "%zz", "%4"]).to_string(),
                4 => self.pick(&["é", "日本", "🦀", "Ω"]).to_string(),
                5 => self.uuid().to_uppercase(),
                6 => self.uuid()[..35].to_owned(),
                7 => self
                    .pick(&[
                        "-", "_", "~", ".", "!", "$", "&", "'", "(", ")", "*", "+", ",", ";", "=",
                        ":", "@",
                    ])
                    .to_string(),
                _ => format!("{}", self.rng.random::<u64>()),
            };
            out.push_str(&piece);
        }
        out
    }
}

fn render(fields: &[(String, String)]) -> String {
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uuid,
    Size,
    Metadata,
    Bool,
    Name,
    Image,
    Ports,
    Environment,
    RestartPolicy,
    CommandLine,
    Swappiness,
    Volumes,
    CpuShares,
    MemoryLimit,
    Links,
    LeaseId,
    Expires,
}

/// A field of a request body: its schema kind and a valid value.
#[derive(Debug, Clone)]
struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
    valid: String,
}

fn field(name: &'static str, kind: Kind, required: bool, valid: impl Into<String>) -> Field {
    Field {
        name,
        kind,
        required,
        valid: valid.into(),
    }
}

fn dataset_template(g: &mut Gen) -> Vec<Field> {
    let (primary, id) = (g.uuid(), g.uuid());
    vec![
        field("primary", Kind::Uuid, true, format!("\"{primary}\"")),
        field("dataset_id", Kind::Uuid, false, format!("\"{id}\"")),
        field("maximum_size", Kind::Size, false, "67108864"),
        field("metadata", Kind::Metadata, false, "{\"name\": \"fuzz\"}"),
        field("deleted", Kind::Bool, false, "false"),
    ]
}

fn container_template(g: &mut Gen) -> Vec<Field> {
    let (node, name, port) = (g.uuid(), g.fresh_name(), g.fresh_port());
    let mut fields = vec![
        field("node_uuid", Kind::Uuid, true, format!("\"{node}\"")),
        field("name", Kind::Name, true, format!("\"{name}\"")),
        field("image", Kind::Image, true, "\"busybox\""),
        field(
            "ports",
            Kind::Ports,
            false,
            format!("[{{\"internal\": 80, \"external\": {port}}}]"),
        ),
        field("environment", Kind::Environment, false, "{\"A\": \"b\"}"),
        field(
            "restart_policy",
            Kind::RestartPolicy,
            false,
            "{\"name\": \"on-failure\", \"maximum_retry_count\": 2}",
        ),
        field("command_line", Kind::CommandLine, false, "[\"sh\", \"-c\"]"),
        field("swappiness", Kind::Swappiness, false, "10"),
        field("cpu_shares", Kind::CpuShares, false, "512"),
        field("memory_limit", Kind::MemoryLimit, false, "1048576"),
        field(
            "links",
            Kind::Links,
            false,
            "[{\"alias\": \"db\", \"local_port\": 1, \"remote_port\": 2}]",
        ),
    ];
    // Half the time a volume on a dataset that does not exist: a body that turns out
    // valid then still gets a 404. The other half nothing masks an accepted body.
    if g.chance(0.5) {
        let dataset = g.uuid();
        fields.push(field(
            "volumes",
            Kind::Volumes,
            false,
            format!("[{{\"dataset_id\": \"{dataset}\", \"mountpoint\": \"/data\"}}]"),
        ));
    }
    fields
}

fn lease_template(g: &mut Gen) -> Vec<Field> {
    let (dataset, node) = (g.uuid(), g.uuid());
    vec![
        field("dataset_id", Kind::LeaseId, true, format!("\"{dataset}\"")),
        field("node_uuid", Kind::Uuid, true, format!("\"{node}\"")),
        field("expires", Kind::Expires, true, "60"),
    ]
}

// ---------------------------------------------------------------------------
// Requests and checks

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A 4xx with a JSON description.
    Refused,
    /// A 200 with a JSON array.
    List,
}

struct Probe {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    expect: Expect,
}

fn clip(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
    format!("{text:?} ({} bytes)", bytes.len())
}

async fn send(s: &Single, probe: Probe) -> Result<(), String> {
    let headers: Vec<(&str, &str)> = probe
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let what = format!(
        "{} {} headers {:?} body {}",
        probe.method,
        clip(probe.path.as_bytes()),
        probe.headers,
        probe.body.as_deref().map(clip).unwrap_or_default()
    );
    let reply = s
        .client
        .request(
            probe.method.clone(),
            &probe.path,
            &headers,
            probe.body.clone(),
        )
        .await
        .map_err(|e| format!("{what}: no response: {e:?}"))?;
    let fail = |why: &str| {
        Err(format!(
            "{what}: {why}: status {} body {}",
            reply.status,
            clip(&reply.raw)
        ))
    };
    if reply.status.is_server_error() {
        return fail("server error");
    }
    if reply.header("content-type") != Some("application/json") {
        return fail("not JSON");
    }
    match probe.expect {
        Expect::Refused => {
            if !reply.status.is_client_error() {
                return fail("malformed request not refused with a 4xx");
            }
            if !reply.body.is_object() || reply.description().is_none() {
                return fail("error body is not {\"description\": ...}");
            }
        }
        Expect::List => {
            if reply.status != StatusCode::OK || !reply.body.is_array() {
                return fail("expected 200 with a list");
            }
        }
    }
    Ok(())
}

/// Everything a client can see of the configuration.
#[derive(Debug, PartialEq)]
struct Snapshot {
    datasets: Value,
    tag: String,
    containers: Value,
    leases: Value,
}

async fn snapshot(s: &Single) -> Snapshot {
    let datasets = s.client.get("/v1/configuration/datasets").await.unwrap();
    let mut list = datasets.body.as_array().cloned().unwrap();
    list.sort_by_key(|d| d["dataset_id"].as_str().map(str::to_owned));
    Snapshot {
        datasets: Value::Array(list),
        tag: datasets.header("x-configuration-tag").unwrap().to_owned(),
        containers: s
            .client
            .get("/v1/configuration/containers")
            .await
            .unwrap()
            .body,
        leases: s.client.get("/v1/configuration/leases").await.unwrap().body,
    }
}

/// Send every probe (a few at a time), then check the configuration is unchanged.
async fn batch(s: &Single, name: &str, before: &Snapshot, probes: Vec<Probe>) -> usize {
    let count = probes.len();
    let started = Instant::now();
    let failures: Vec<String> = stream::iter(probes)
        .map(|p| send(s, p))
        .buffer_unordered(4)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{name}: {} of {count} probes failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        &snapshot(s).await,
        before,
        "{name}: the configuration changed"
    );
    println!("{name}: {count} probes in {:?}", started.elapsed());
    count
}

/// A node with one dataset, one container using another dataset, and a lease that never
/// expires, so that a lost or partial write would show.
async fn populated() -> (Single, Value, Value) {
    let s = Single::start().await;
    let node = Uuid::new_v4().to_string();
    let r = s
        .client
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": node, "metadata": {"name": "kept"}, "maximum_size": 67108864}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let dataset = r.body;
    let r = s
        .client
        .post("/v1/configuration/datasets", &json!({"primary": node}))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let mounted = r.body["dataset_id"].clone();
    let r = s
        .client
        .post(
            "/v1/configuration/containers",
            &json!({"node_uuid": node, "name": "kept", "image": "busybox",
                    "ports": [{"internal": 80, "external": 8080}],
                    "volumes": [{"dataset_id": mounted, "mountpoint": "/data"}]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let container = r.body;
    let r = s
        .client
        .post(
            "/v1/configuration/leases",
            &json!({"dataset_id": dataset["dataset_id"], "node_uuid": node, "expires": null}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    (s, dataset, container)
}

fn post(path: impl Into<String>, body: Vec<u8>) -> Probe {
    Probe {
        method: Method::POST,
        path: path.into(),
        headers: Vec::new(),
        body: Some(body),
        expect: Expect::Refused,
    }
}

fn bodyless(method: Method, path: impl Into<String>, expect: Expect) -> Probe {
    Probe {
        method,
        path: path.into(),
        headers: Vec::new(),
        body: None,
        expect,
    }
}

/// Sometimes a conditional header: a tag that does not match (412) or the current tag.
fn maybe_conditional(g: &mut Gen, mut probe: Probe, tag: &str) -> Probe {
    match g.below(8) {
        0 => probe
            .headers
            .push(("X-If-Configuration-Matches", "willnotmatch".to_owned())),
        1 => probe
            .headers
            .push(("X-If-Configuration-Matches", tag.to_owned())),
        2 => probe
            .headers
            .push(("X-If-Configuration-Matches", format!("{}0", &tag[..31]))),
        _ => {}
    }
    probe
}

/// Percent-decode a path segment the way servers do (`%` not followed by two hex
/// digits stays as it is).
fn percent_decode(segment: &str) -> Vec<u8> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// A segment that is not (and does not contain) an existing id or name, and that
/// decodes to valid UTF-8 (see `non_utf8_path_segments_get_json_errors` for the rest).
fn unused_segment(g: &mut Gen, taken: &[&str]) -> String {
    loop {
        let segment = g.segment();
        let decoded = percent_decode(&segment);
        if std::str::from_utf8(&decoded).is_ok() && !taken.iter().any(|t| segment.contains(t)) {
            return segment;
        }
    }
}

const PER_ENDPOINT: usize = 300;

// Every malformed request to every endpoint gets a 4xx JSON error, never a 5xx, and
// leaves the configuration (lists and tag) exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_change_nothing() {
    let started = Instant::now();
    let (s, dataset, container) = populated().await;
    let dataset_id = dataset["dataset_id"].as_str().unwrap().to_owned();
    let name = container["name"].as_str().unwrap().to_owned();
    let before = snapshot(&s).await;
    let tag = before.tag.clone();
    let taken = [dataset_id.as_str(), name.as_str()];
    let mut g = Gen::new();
    let mut total = 0;

    let probes = (0..PER_ENDPOINT)
        .map(|_| {
            let t = dataset_template(&mut g);
            let p = post("/v1/configuration/datasets", g.malformed(&t));
            maybe_conditional(&mut g, p, &tag)
        })
        .collect();
    total += batch(&s, "create dataset", &before, probes).await;

    let probes = (0..PER_ENDPOINT)
        .map(|_| {
            let p = if g.chance(0.7) {
                let primary = format!("\"{}\"", g.uuid());
                // `{}` is a valid update: the field is optional here.
                let t = vec![field("primary", Kind::Uuid, false, primary)];
                post(
                    format!("/v1/configuration/datasets/{dataset_id}"),
                    g.malformed(&t),
                )
            } else {
                // A valid body for a dataset that does not exist.
                let body = if g.chance(0.5) {
                    json!({})
                } else {
                    json!({"primary": g.uuid()})
                };
                let seg = unused_segment(&mut g, &taken);
                post(
                    format!("/v1/configuration/datasets/{seg}"),
                    body.to_string().into_bytes(),
                )
            };
            maybe_conditional(&mut g, p, &tag)
        })
        .collect();
    total += batch(&s, "update dataset", &before, probes).await;

    let probes = (0..PER_ENDPOINT / 2)
        .map(|_| {
            let seg = unused_segment(&mut g, &taken);
            let mut p = bodyless(
                Method::DELETE,
                format!("/v1/configuration/datasets/{seg}"),
                Expect::Refused,
            );
            // Bodies on DELETE are ignored.
            if g.chance(0.3) {
                let t = dataset_template(&mut g);
                p.body = Some(g.small_malformed(&t));
            }
            maybe_conditional(&mut g, p, &tag)
        })
        .collect();
    total += batch(&s, "delete dataset", &before, probes).await;

    let probes = (0..PER_ENDPOINT)
        .map(|_| {
            let t = container_template(&mut g);
            post("/v1/configuration/containers", g.malformed(&t))
        })
        .collect();
    total += batch(&s, "create container", &before, probes).await;

    let probes = (0..PER_ENDPOINT)
        .map(|_| {
            if g.chance(0.7) {
                let t = vec![field(
                    "node_uuid",
                    Kind::Uuid,
                    true,
                    format!("\"{}\"", g.uuid()),
                )];
                post(
                    format!("/v1/configuration/containers/{name}"),
                    g.malformed(&t),
                )
            } else {
                let seg = unused_segment(&mut g, &taken);
                let body = json!({"node_uuid": g.uuid()}).to_string().into_bytes();
                post(format!("/v1/configuration/containers/{seg}"), body)
            }
        })
        .collect();
    total += batch(&s, "move container", &before, probes).await;

    let probes = (0..PER_ENDPOINT / 2)
        .map(|_| {
            let seg = unused_segment(&mut g, &taken);
            bodyless(
                Method::DELETE,
                format!("/v1/configuration/containers/{seg}"),
                Expect::Refused,
            )
        })
        .collect();
    total += batch(&s, "delete container", &before, probes).await;

    let probes = (0..PER_ENDPOINT)
        .map(|_| {
            let t = lease_template(&mut g);
            post("/v1/configuration/leases", g.malformed(&t))
        })
        .collect();
    total += batch(&s, "acquire lease", &before, probes).await;

    let probes = (0..PER_ENDPOINT / 2)
        .map(|_| {
            let seg = unused_segment(&mut g, &taken);
            bodyless(
                Method::DELETE,
                format!("/v1/configuration/leases/{seg}"),
                Expect::Refused,
            )
        })
        .collect();
    total += batch(&s, "release lease", &before, probes).await;

    let probes = (0..PER_ENDPOINT)
        .map(|_| {
            if g.chance(0.3) {
                let seg = unused_segment(&mut g, &taken);
                return bodyless(
                    Method::GET,
                    format!("/v1/state/nodes/by_era/{seg}"),
                    Expect::Refused,
                );
            }
            let path = g.pick(&[
                "/v1/state/datasets",
                "/v1/state/containers",
                "/v1/state/nodes",
                "/v1/configuration/datasets",
                "/v1/configuration/containers",
                "/v1/configuration/leases",
            ]);
            let query = match g.below(4) {
                0 => String::new(),
                1 => "?consistency=stale".to_owned(),
                _ => format!("?{}={}", g.segment(), g.segment()),
            };
            let mut p = bodyless(Method::GET, format!("{path}{query}"), Expect::List);
            if g.chance(0.3) {
                let t = dataset_template(&mut g);
                p.body = Some(g.small_malformed(&t));
            }
            p
        })
        .collect();
    total += batch(&s, "reads", &before, probes).await;

    // Methods no route has.
    let probes = (0..PER_ENDPOINT / 4)
        .map(|_| {
            let method = g
                .pick(&[Method::PUT, Method::PATCH, Method::OPTIONS])
                .clone();
            let path = g
                .pick(&[
                    "/v1/configuration/datasets".to_owned(),
                    format!("/v1/configuration/datasets/{dataset_id}"),
                    format!("/v1/configuration/containers/{name}"),
                    format!("/v1/configuration/leases/{dataset_id}"),
                    "/v1/state/nodes".to_owned(),
                ])
                .clone();
            let t = dataset_template(&mut g);
            let body = g.small_malformed(&t);
            Probe {
                method,
                path,
                headers: Vec::new(),
                body: Some(body),
                expect: Expect::Refused,
            }
        })
        .collect();
    total += batch(&s, "other methods", &before, probes).await;

    println!("{total} probes in {:?}", started.elapsed());
    s.control.stop().await;
}

// A path parameter whose %-escapes decode to invalid UTF-8 gets a JSON 4xx like any other
// bad input (the framework's rejection is converted by `api::json_errors`).
#[tokio::test]
async fn non_utf8_path_segments_get_json_errors() {
    let s = Single::start().await;
    let probes = [
        (
            Method::POST,
            "/v1/configuration/datasets/%FF",
            Some(b"{}".to_vec()),
        ),
        (Method::DELETE, "/v1/configuration/datasets/%C3%28", None),
        (
            Method::POST,
            "/v1/configuration/containers/%aa",
            Some(br#"{"node_uuid": "6f2b1a0e-8c1d-4d3e-9f4a-5b6c7d8e9f00"}"#.to_vec()),
        ),
        (Method::DELETE, "/v1/configuration/containers/%FF", None),
        (Method::DELETE, "/v1/configuration/leases/%FF", None),
        (Method::GET, "/v1/state/nodes/by_era/%FF", None),
    ];
    for (method, path, body) in probes {
        let probe = Probe {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body,
            expect: Expect::Refused,
        };
        if let Err(failure) = send(&s, probe).await {
            panic!("{failure}");
        }
    }
    s.control.stop().await;
}

// A body on a request whose body the server ignores (GET, DELETE, a method the route does
// not have) still gets an HTTP response: `api::read_whole_body` reads every body before
// routing, as Flocker did (FLOCKER-SPEC 2.3: "the body is ignored"). Without it, hyper
// closes the connection while the client is still sending and the client sees EPIPE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_ignored_bodies_do_not_break_the_connection() {
    let (s, dataset, _) = populated().await;
    let id = dataset["dataset_id"].as_str().unwrap().to_owned();
    let paths = [
        (Method::GET, "/v1/configuration/datasets".to_owned()),
        (Method::GET, "/v1/configuration/leases".to_owned()),
        (Method::GET, "/v1/state/nodes".to_owned()),
        (
            Method::DELETE,
            format!("/v1/configuration/leases/{}", Uuid::new_v4()),
        ),
        (Method::PATCH, format!("/v1/configuration/datasets/{id}")),
    ];
    let requests = paths.iter().cycle().take(100).cloned();
    let failures: Vec<String> = stream::iter(requests)
        .map(|(method, path)| {
            let s = &s;
            async move {
                let body = Some(vec![b'x'; 200_000]);
                match s.client.request(method.clone(), &path, &[], body).await {
                    Ok(_) => None,
                    Err(e) => Some(format!("{method} {path}: {e:?}")),
                }
            }
        })
        .buffer_unordered(4)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of 100 failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    s.control.stop().await;
}

// A body over the size limit is refused with a JSON 413.
#[tokio::test]
async fn oversized_bodies_get_a_json_413() {
    let s = Single::start().await;
    let body = vec![b' '; flocker::api::MAX_BODY_BYTES + 1];
    let probe = post("/v1/configuration/datasets", body);
    if let Err(failure) = send(&s, probe).await {
        panic!("{failure}");
    }
    s.control.stop().await;
}
