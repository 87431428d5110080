# Developer entry points. `make verify` is what CI runs (after installing packages).
CARGO_BUILD_JOBS ?= 2
export CARGO_BUILD_JOBS

.PHONY: run build test verify fmt-check clippy doc fix load

# A local cluster: 3 control nodes and 2 dataset agents (see README).
run: build
	./target/release/flocker-cluster up --config cluster-config/local-3.toml --dir flocker-local

build:
	cargo build --release --bins

test:
	cargo nextest run --workspace --no-fail-fast

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

verify: fmt-check clippy doc test

fix:
	cargo fmt --all
	cargo clippy --workspace --all-targets --fix --allow-dirty -- -D warnings

# Throughput and latency against a running `make run` cluster.
load:
	./target/release/flocker-load --cluster-json flocker-local/cluster.json --clients 16 --seconds 10
