//! Micro benchmarks: the state machine's apply per command kind at 1k, 10k and 100k
//! datasets, tag rendering, JSON rendering of the dataset list, a sled log append with
//! flush, and snapshot encode/decode at 100k datasets.
//!
//! `cargo bench --bench micro` (add `-- apply/` etc. to select). Compare runs on the same
//! machine: criterion reports the change against the previous run.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use flocker::api::render;
use flocker::model::{
    apply, Command, Container, Dataset, Precondition, RestartPolicy, State, TagFormat,
};
use uuid::Uuid;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn dataset(primary: Uuid) -> Dataset {
    Dataset {
        dataset_id: Uuid::new_v4().to_string(),
        primary,
        deleted: false,
        maximum_size: Some(1 << 30),
        metadata: BTreeMap::from([("name".to_owned(), "bench".to_owned())]),
    }
}

/// A state with `n` datasets spread over 10 nodes, and the index of the next entry.
fn state_with(n: usize) -> (State, u64, Vec<Uuid>) {
    let nodes: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    let mut state = State::default();
    let mut index = 1;
    for i in 0..n {
        let command = Command::CreateDataset {
            precondition: Precondition::None,
            dataset: dataset(nodes[i % nodes.len()]),
        };
        apply(&mut state, index, &command);
        index += 1;
    }
    (state, index, nodes)
}

fn bench_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    for n in SIZES {
        let (mut state, mut index, nodes) = state_with(n);
        let some_id = state
            .config
            .datasets
            .keys()
            .nth(n / 2)
            .cloned()
            .expect("datasets");
        group.bench_function(BenchmarkId::new("create_dataset", n), |b| {
            b.iter_batched(
                || dataset(nodes[0]),
                |d| {
                    let id = d.dataset_id.clone();
                    let command = Command::CreateDataset {
                        precondition: Precondition::None,
                        dataset: d,
                    };
                    black_box(apply(&mut state, index, &command));
                    index += 1;
                    // Keep the size stable: this benchmark is about one create at size n.
                    state.config.datasets.remove(&id);
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("conditional_create", n), |b| {
            b.iter_batched(
                || dataset(nodes[0]),
                |d| {
                    let id = d.dataset_id.clone();
                    let precondition = Precondition::AnyOf(vec![state.config.version]);
                    let command = Command::CreateDataset {
                        precondition,
                        dataset: d,
                    };
                    black_box(apply(&mut state, index, &command));
                    index += 1;
                    state.config.datasets.remove(&id);
                },
                BatchSize::SmallInput,
            )
        });
        let mut toggle = 0;
        group.bench_function(BenchmarkId::new("move_dataset", n), |b| {
            b.iter(|| {
                toggle += 1;
                let command = Command::MoveDataset {
                    precondition: Precondition::None,
                    dataset_id: some_id.clone(),
                    primary: Some(nodes[toggle % 2]),
                };
                black_box(apply(&mut state, index, &command));
                index += 1;
            })
        });
        let lease_id = Uuid::new_v4();
        group.bench_function(BenchmarkId::new("lease_renew", n), |b| {
            b.iter(|| {
                let command = Command::AcquireLease {
                    dataset_id: lease_id,
                    node_uuid: nodes[0],
                    expiration: Some(index as i64),
                };
                black_box(apply(&mut state, index, &command));
                index += 1;
            })
        });
        group.bench_function(BenchmarkId::new("container_create_delete", n), |b| {
            b.iter(|| {
                let container = Container {
                    name: "bench".into(),
                    node_uuid: nodes[0],
                    image: "busybox:latest".into(),
                    ports: vec![flocker::model::Port {
                        internal: 80,
                        external: 8080,
                    }],
                    links: Vec::new(),
                    environment: BTreeMap::new(),
                    restart_policy: RestartPolicy::Never,
                    command_line: None,
                    cpu_shares: None,
                    memory_limit: None,
                    swappiness: 0,
                    volume: None,
                };
                black_box(apply(
                    &mut state,
                    index,
                    &Command::CreateContainer { container },
                ));
                black_box(apply(
                    &mut state,
                    index + 1,
                    &Command::DeleteContainer {
                        name: "bench".into(),
                    },
                ));
                index += 2;
            })
        });
    }
    group.finish();
}

fn bench_tag_and_render(c: &mut Criterion) {
    let tags = TagFormat::new(Uuid::new_v4());
    c.bench_function("tag/render", |b| {
        b.iter(|| black_box(tags.render(black_box(123_456))))
    });
    c.bench_function("tag/parse", |b| {
        let tag = tags.render(123_456);
        b.iter(|| black_box(tags.parse(black_box(&tag))))
    });
    let mut group = c.benchmark_group("render_datasets");
    group.sample_size(10);
    for n in SIZES {
        let (state, _, _) = state_with(n);
        // What the API serves: direct serialization.
        group.bench_function(BenchmarkId::new("direct", n), |b| {
            b.iter(|| black_box(render::dataset_list(&state.config.datasets)))
        });
        // The baseline it replaced: a `Value` per dataset, then serialization.
        group.bench_function(BenchmarkId::new("via_values", n), |b| {
            b.iter(|| {
                let list: Vec<serde_json::Value> = state
                    .config
                    .datasets
                    .values()
                    .map(render::dataset)
                    .collect();
                black_box(serde_json::to_vec(&list).expect("JSON"))
            })
        });
    }
    group.finish();
}

fn bench_storage(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = flocker::storage::open_db(dir.path()).expect("sled");
    let tree = db.open_tree("bench_log").expect("tree");
    let entry = vec![7u8; 300];
    let mut key = 0u64;
    c.bench_function("sled/append_and_flush", |b| {
        b.iter(|| {
            key += 1;
            tree.insert(key.to_be_bytes(), entry.as_slice())
                .expect("insert");
            db.flush().expect("flush");
        })
    });
    let (state, _, _) = state_with(100_000);
    let bytes = flocker::storage::encode(&state).expect("encode");
    eprintln!("snapshot of 100k datasets: {} bytes", bytes.len());
    let mut group = c.benchmark_group("snapshot_100k");
    group.sample_size(10);
    group.bench_function("build", |b| {
        b.iter(|| black_box(flocker::storage::encode(&state).expect("encode")))
    });
    group.bench_function("install", |b| {
        b.iter(|| black_box(flocker::storage::decode::<State>(&bytes).expect("decode")))
    });
    group.finish();
}

criterion_group!(benches, bench_apply, bench_tag_and_render, bench_storage);
criterion_main!(benches);
