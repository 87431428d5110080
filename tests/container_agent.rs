//! The container agent end to end, against a real Docker engine: a control node in this
//! process, two agent "nodes" (a dataset agent with the directory backend and a
//! container agent each, in this process) sharing one engine, and a test image imported
//! from Debian's `busybox-static` (no registry is reachable: nothing is ever pulled).
//!
//! The engine must be running (CI starts `dockerd` when `docker info` fails): without it
//! every test here fails with a message saying so. Every container a test's agents make
//! carries the test's node labels and is removed by a guard, and every image is removed
//! by another, even when the test fails. Containers publish on 127.0.0.1 only, on ports
//! picked free by binding port 0, and are reached only through them.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flocker::agent::container::{
    docker_available, ContainerAgent, ContainerAgentConfig, ContainerAgentStatus,
    DEFAULT_DOCKER_HOST,
};
use flocker::agent::dataset::{AgentConfig, DatasetAgent};
use flocker::client::Client;
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use common::{wait_for, Pki, Single};

/// Generous: two cores shared with concurrent compilations.
const PATIENCE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// The engine, the image and the guards

/// Panics with a clear message when no engine answers: these tests must not pass
/// silently without one.
fn require_docker() {
    assert!(
        docker_available(DEFAULT_DOCKER_HOST),
        "no Docker engine answers on {DEFAULT_DOCKER_HOST}: the container agent tests need \
         one (install docker.io and start dockerd; .ci/run does both)"
    );
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker").args(args).output();
}

/// A busybox image imported from a root filesystem made here; removed on drop.
struct TestImage {
    name: String,
}

impl TestImage {
    fn build() -> TestImage {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "busybox-static is needed to build the test image (apt-get install busybox-static)",
            );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for sub in ["bin", "tmp", "data"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "httpd", "sleep", "env", "cat", "ls"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = dir.path().join("root.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let name = format!(
            "flocker-test-busybox:{}",
            &Uuid::new_v4().simple().to_string()[..12]
        );
        docker(&["import", tar.to_str().unwrap(), &name]);
        TestImage { name }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        docker_quiet(&["rmi", "-f", &self.name]);
    }
}

/// Removes every container labelled with one of the nodes, on drop.
struct ContainerGuard {
    nodes: Vec<Uuid>,
}

impl ContainerGuard {
    /// Never panics (it runs in `drop`, possibly while a test is failing).
    fn clean(&self) {
        for node in &self.nodes {
            let Ok(out) = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=flocker.node={node}"),
                ])
                .output()
            else {
                continue;
            };
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                if !id.trim().is_empty() {
                    docker_quiet(&["rm", "-f", id.trim()]);
                }
            }
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        self.clean();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something accepts connections on 127.0.0.1:port.
fn port_open(port: u16) -> bool {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
}

/// `GET /path` on 127.0.0.1:port; the body of a 200 answer.
fn http_get(port: u16, path: &str) -> Option<String> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}

// ---------------------------------------------------------------------------
// Agents

/// One agent node: its directory with agent.yml and certificates.
fn agent_dir(pki: &Pki, root: &Path, node: usize, control: &str, docker_host: &str) -> PathBuf {
    let dir = root.join(format!("node-{node}"));
    std::fs::create_dir_all(&dir).unwrap();
    let uuid = pki.nodes[node];
    std::fs::copy(pki.dir.join("cluster.crt"), dir.join("cluster.crt")).unwrap();
    std::fs::copy(pki.dir.join(format!("{uuid}.crt")), dir.join("node.crt")).unwrap();
    std::fs::copy(pki.dir.join(format!("{uuid}.key")), dir.join("node.key")).unwrap();
    let (host, port) = control.rsplit_once(':').unwrap();
    let yml = format!(
        "version: 1\ncontrol-service:\n  - hostname: \"{host}\"\n    port: {port}\ndataset:\n  backend: directory\n  root_path: \"{}\"\n  mount_root: \"{}\"\nera: \"{}\"\ncontainer:\n  docker_host: \"{docker_host}\"\n  publish_address: 127.0.0.1\n",
        root.join("storage").display(),
        root.join(format!("mnt-{node}")).display(),
        Uuid::new_v4(),
    );
    let config = dir.join("agent.yml");
    std::fs::write(&config, yml).unwrap();
    config
}

/// Something running on its own thread and runtime until dropped.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn spawn<F>(
        run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F + Send + 'static,
    ) -> Running
    where
        F: std::future::Future<Output = ()>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(run(stopped));
        });
        Running {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A node: a dataset agent and a container agent reading one agent.yml.
struct Node {
    uuid: Uuid,
    status: watch::Receiver<ContainerAgentStatus>,
    _container: Running,
    _dataset: Running,
}

impl Node {
    fn start(config: &Path) -> Node {
        let dataset = DatasetAgent::new(&AgentConfig::load(config).unwrap()).unwrap();
        let uuid = dataset.node();
        let dataset = Running::spawn(move |stopped| async move {
            dataset
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let mut container_config = ContainerAgentConfig::load(config).unwrap();
        container_config.agent.timing.idle_recheck = Duration::from_millis(500);
        let agent = ContainerAgent::new(&container_config).unwrap();
        assert_eq!(agent.node(), uuid);
        let status = agent.status();
        let container = Running::spawn(move |stopped| async move {
            agent
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Node {
            uuid,
            status,
            _container: container,
            _dataset: dataset,
        }
    }
}

/// A control node, two nodes, an image and the guards, dropped in a safe order (agents
/// first, then containers, then the image).
struct World {
    nodes: Vec<Node>,
    containers: ContainerGuard,
    image: TestImage,
    single: Single,
    _root: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    async fn start() -> World {
        Self::start_with_engine(|_| DEFAULT_DOCKER_HOST.to_owned()).await
    }

    /// `docker_host(root)` names the engine socket the container agents use.
    async fn start_with_engine(docker_host: impl Fn(&Path) -> String) -> World {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        require_docker();
        let image = TestImage::build();
        let single = Single::start().await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let host = docker_host(&root);
        let control = single.control.agent_addr.to_string();
        let containers = ContainerGuard {
            nodes: single.pki.nodes.clone(),
        };
        let nodes = (0..2)
            .map(|i| Node::start(&agent_dir(&single.pki, &root, i, &control, &host)))
            .collect();
        World {
            nodes,
            containers,
            image,
            single,
            _root: dir,
            root,
        }
    }

    fn client(&self) -> &Client {
        &self.single.client
    }

    fn mount_path(&self, node: usize, dataset: &str) -> PathBuf {
        self.root.join(format!("mnt-{node}")).join(dataset)
    }

    async fn create_container(&self, body: Value) -> Value {
        let reply = self
            .client()
            .post("/v1/configuration/containers", &body)
            .await
            .unwrap();
        assert_eq!(reply.status.as_u16(), 201, "{:?}", reply.body);
        reply.body
    }

    /// Wait until `/v1/state/containers` and `docker ps -a` agree, for both nodes, on
    /// which containers exist and which run, and that equals `expected` (name, node,
    /// running).
    async fn wait_consistent(&self, expected: &[(&str, usize, bool)]) {
        let expected: BTreeSet<(String, Uuid, bool)> = expected
            .iter()
            .map(|(n, i, r)| ((*n).to_owned(), self.nodes[*i].uuid, *r))
            .collect();
        let what = format!("state and docker ps to show {expected:?}");
        wait_for(&what, PATIENCE, || async {
            let state = self.state_containers().await;
            let engine = self.docker_ps();
            (state == expected && engine == expected).then_some(())
        })
        .await;
    }

    async fn state_containers(&self) -> BTreeSet<(String, Uuid, bool)> {
        let reply = self.client().get("/v1/state/containers").await.unwrap();
        reply
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["node_uuid"].as_str().unwrap().parse().unwrap(),
                    c["running"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    /// The test nodes' containers as `docker ps -a` shows them.
    fn docker_ps(&self) -> BTreeSet<(String, Uuid, bool)> {
        let mut out = BTreeSet::new();
        for node in &self.nodes {
            let listed = docker(&[
                "ps",
                "-a",
                "--filter",
                &format!("label=flocker.node={}", node.uuid),
                "--format",
                "{{.Names}} {{.State}}",
            ]);
            for line in listed.lines().filter(|l| !l.is_empty()) {
                let (name, state) = line.split_once(' ').unwrap();
                let name = name.strip_prefix("flocker--").unwrap().to_owned();
                out.insert((name, node.uuid, state == "running"));
            }
        }
        out
    }
}

fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, &format!("flocker--{name}")])
}

async fn wait_serving(port: u16, path: &str, content: &str) -> Duration {
    let start = Instant::now();
    wait_for(
        &format!("{content:?} served on 127.0.0.1:{port}{path}"),
        PATIENCE,
        || async { (http_get(port, path).as_deref() == Some(content)).then_some(()) },
    )
    .await;
    start.elapsed()
}

// ---------------------------------------------------------------------------
// End to end

/// A container using a dataset serves a file written into the dataset through its
/// published port on node A; moved to node B, it serves the same file from B (the
/// dataset followed it); deleted, it is gone. At each step `/v1/state/containers`
/// agrees with `docker ps -a`. Prints the time from API call to serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_move_delete_with_a_dataset() {
    let world = World::start().await;
    let (a, b) = (world.nodes[0].uuid, world.nodes[1].uuid);
    let reply = world
        .client()
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": a.to_string(), "maximum_size": 67108864}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 201, "{:?}", reply.body);
    let dataset = reply.body["dataset_id"].as_str().unwrap().to_owned();
    let on_a = world.mount_path(0, &dataset);
    wait_for("the dataset on A", PATIENCE, || async {
        on_a.join(".").exists().then_some(())
    })
    .await;
    let content = format!("served from dataset {dataset}\n");
    std::fs::write(on_a.join("index.html"), &content).unwrap();

    let port = free_port();
    let started = Instant::now();
    world
        .create_container(json!({
            "name": "web",
            "node_uuid": a.to_string(),
            "image": world.image.name,
            "ports": [{"internal": 8080, "external": port}],
            "volumes": [{"dataset_id": dataset, "mountpoint": "/data"}],
            // A shell as PID 1 that exits on SIGTERM: httpd as PID 1 would ignore it
            // and make every stop wait for Docker's 10 s SIGKILL.
            "command_line": ["/bin/sh", "-c", "trap 'exit 0' TERM; /bin/httpd -f -p 8080 -h /data & wait"],
        }))
        .await;
    wait_serving(port, "/index.html", &content).await;
    let create_latency = started.elapsed();
    assert_eq!(
        inspect("web", "{{index .Config.Labels \"flocker.node\"}}"),
        a.to_string()
    );
    world.wait_consistent(&[("web", 0, true)]).await;
    let reply = world.client().get("/v1/state/containers").await.unwrap();
    let state = &reply.body[0];
    assert_eq!(
        state["volumes"],
        json!([{"dataset_id": dataset, "mountpoint": "/data"}]),
        "{state}"
    );
    assert_eq!(
        state["ports"],
        json!([{"internal": 8080, "external": port}])
    );
    assert_eq!(
        inspect("web", "{{json .HostConfig.Binds}}"),
        format!("[\"{}:/data:Z\"]", on_a.display())
    );

    let started = Instant::now();
    let reply = world
        .client()
        .post(
            "/v1/configuration/containers/web",
            &json!({"node_uuid": b.to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 200, "{:?}", reply.body);
    wait_for("the container to run on B", PATIENCE, || async {
        let label = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{index .Config.Labels \"flocker.node\"}} {{.State.Running}}",
                "flocker--web",
            ])
            .output()
            .ok()?;
        let label = String::from_utf8_lossy(&label.stdout).trim().to_owned();
        (label == format!("{b} true") && http_get(port, "/index.html").as_deref() == Some(&content))
            .then_some(())
    })
    .await;
    let move_latency = started.elapsed();
    assert!(world.mount_path(1, &dataset).join("index.html").exists());
    world.wait_consistent(&[("web", 1, true)]).await;

    let reply = world
        .client()
        .delete("/v1/configuration/containers/web")
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 200, "{:?}", reply.body);
    world.wait_consistent(&[]).await;
    assert!(http_get(port, "/index.html").is_none());
    eprintln!(
        "LATENCY create->serving: {} ms; move->serving: {} ms",
        create_latency.as_millis(),
        move_latency.as_millis()
    );
}

/// Environment, links, ports, command line, CPU shares, memory limit and restart policy
/// reach the engine as configured (the link variables are visible inside the container),
/// and the reported state equals the configuration. A second container asking for the
/// same external port is refused by the API and never reaches the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_reaches_the_engine() {
    let world = World::start().await;
    let a = world.nodes[0].uuid;
    let port = free_port();
    let created = world
        .create_container(json!({
            "name": "app",
            "node_uuid": a.to_string(),
            "image": world.image.name,
            "ports": [{"internal": 8080, "external": port}],
            "environment": {"GREETING": "hello world", "EMPTY": ""},
            "links": [{"alias": "db", "local_port": 5432, "remote_port": 15432}],
            "command_line": ["/bin/httpd", "-f", "-p", "8080", "-h", "/"],
            "cpu_shares": 512,
            "memory_limit": 134217728,
            "restart_policy": {"name": "on-failure", "maximum_retry_count": 3},
        }))
        .await;
    world.wait_consistent(&[("app", 0, true)]).await;
    wait_for("the published port to answer", PATIENCE, || async {
        port_open(port).then_some(())
    })
    .await;

    let env = docker(&["exec", "flocker--app", "/bin/env"]);
    let env: BTreeSet<&str> = env.lines().collect();
    for expected in [
        "GREETING=hello world",
        "EMPTY=",
        "DB_PORT_5432_TCP=tcp://127.0.0.1:15432",
        "DB_PORT_5432_TCP_ADDR=127.0.0.1",
        "DB_PORT_5432_TCP_PORT=15432",
        "DB_PORT_5432_TCP_PROTO=tcp",
    ] {
        assert!(env.contains(expected), "{expected} missing from {env:?}");
    }
    assert_eq!(
        inspect("app", "{{json .HostConfig.PortBindings}}"),
        format!("{{\"8080/tcp\":[{{\"HostIp\":\"127.0.0.1\",\"HostPort\":\"{port}\"}}]}}")
    );
    assert_eq!(
        inspect("app", "{{.HostConfig.CpuShares}} {{.HostConfig.Memory}}"),
        "512 134217728"
    );
    assert_eq!(
        inspect(
            "app",
            "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}"
        ),
        "on-failure 3"
    );
    assert_eq!(
        inspect("app", "{{json .Config.Cmd}}"),
        "[\"/bin/httpd\",\"-f\",\"-p\",\"8080\",\"-h\",\"/\"]"
    );

    // The reported state is the configuration (what really runs, discovered back).
    let state = wait_for("the full state", PATIENCE, || async {
        let reply = world.client().get("/v1/state/containers").await.unwrap();
        reply.body.as_array()?.first().cloned()
    })
    .await;
    for key in [
        "image",
        "ports",
        "environment",
        "links",
        "command_line",
        "cpu_shares",
        "memory_limit",
        "restart_policy",
    ] {
        assert_eq!(
            state[key], created[key],
            "{key}: state {state} vs configuration {created}"
        );
    }

    // Port collision: refused at the API, nothing reaches the engine.
    let reply = world
        .client()
        .post(
            "/v1/configuration/containers",
            &json!({"name": "other", "node_uuid": a.to_string(), "image": world.image.name,
                    "ports": [{"internal": 80, "external": port}]}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 409, "{:?}", reply.body);
    // Deleting removes the container from the engine.
    let id_before = inspect("app", "{{.Id}}");
    world
        .client()
        .delete("/v1/configuration/containers/app")
        .await
        .unwrap();
    world.wait_consistent(&[]).await;
    assert!(Command::new("docker")
        .args(["inspect", &id_before])
        .output()
        .unwrap()
        .stdout
        .starts_with(b"[]"));
    world.containers.clean();
}

/// A container killed by hand is started again under `always` (and `on-failure`, the
/// kill being a failure), and left stopped, reported with `running: false`, under
/// `never`. A container whose process dies is restarted by the engine itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_containers_follow_their_restart_policy() {
    let world = World::start().await;
    let a = world.nodes[0].uuid;
    for (name, policy) in [
        ("always", json!({"name": "always"})),
        ("never", json!({"name": "never"})),
        (
            "failure",
            json!({"name": "on-failure", "maximum_retry_count": 5}),
        ),
    ] {
        world
            .create_container(json!({
                "name": name,
                "node_uuid": a.to_string(),
                "image": world.image.name,
                "command_line": ["/bin/sleep", "100000"],
                "restart_policy": policy,
            }))
            .await;
    }
    world
        .wait_consistent(&[
            ("always", 0, true),
            ("never", 0, true),
            ("failure", 0, true),
        ])
        .await;
    let started = |name: &str| inspect(name, "{{.State.StartedAt}}");
    let before = (started("always"), started("failure"));
    for name in ["always", "never", "failure"] {
        docker(&["kill", &format!("flocker--{name}")]);
    }
    world
        .wait_consistent(&[
            ("always", 0, true),
            ("never", 0, false),
            ("failure", 0, true),
        ])
        .await;
    assert_ne!(
        started("always"),
        before.0,
        "restarted, not merely still running"
    );
    assert_ne!(started("failure"), before.1);
    assert_eq!(inspect("never", "{{.State.Running}}"), "false");

    // The engine restarts a process that dies (its own copy of the policy).
    let pid = inspect("always", "{{.State.Pid}}");
    let id = inspect("always", "{{.Id}}");
    Command::new("kill").args(["-9", &pid]).status().unwrap();
    wait_for("the engine to restart the process", PATIENCE, || async {
        let now = inspect("always", "{{.State.Pid}} {{.State.Running}}");
        (now != format!("{pid} true") && now.ends_with("true")).then_some(())
    })
    .await;
    assert_eq!(
        inspect("always", "{{.Id}}"),
        id,
        "the same container, not a new one"
    );
}

// ---------------------------------------------------------------------------
// The engine going away

/// A unix socket forwarding to the real engine, that the test can take down and bring
/// back: the container agent cannot tell it from the engine restarting.
struct EngineProxy {
    path: PathBuf,
    task: Option<Running>,
}

impl EngineProxy {
    fn new(path: PathBuf) -> EngineProxy {
        let mut proxy = EngineProxy { path, task: None };
        proxy.up();
        proxy
    }

    fn up(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = std::os::unix::net::UnixListener::bind(&self.path).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.task = Some(Running::spawn(move |stopped| async move {
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            let mut connections = tokio::task::JoinSet::new();
            let serve = async {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    connections.spawn(async move {
                        let engine = DEFAULT_DOCKER_HOST.trim_start_matches("unix://");
                        if let Ok(mut outbound) = tokio::net::UnixStream::connect(engine).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            };
            tokio::select! {
                _ = stopped => {}
                () = serve => {}
            }
        }));
    }

    /// Take the "engine" down: refuse new connections, cut the open ones.
    fn down(&mut self) {
        self.task = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The agent survives its engine going away: it reports nothing while it cannot see
/// the engine, reconnects on its own, and then restores what the configuration asks
/// (here: the container that the "restart" stopped is started again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_survives_the_engine_restarting() {
    let proxy_path = std::sync::Mutex::new(PathBuf::new());
    let world = World::start_with_engine(|root| {
        let path = root.join("engine.sock");
        *proxy_path.lock().unwrap() = path.clone();
        format!("unix://{}", path.display())
    })
    .await;
    let mut proxy = EngineProxy::new(proxy_path.lock().unwrap().clone());
    let a = world.nodes[0].uuid;
    let port = free_port();
    world
        .create_container(json!({
            "name": "survivor",
            "node_uuid": a.to_string(),
            "image": world.image.name,
            "ports": [{"internal": 8080, "external": port}],
            "command_line": ["/bin/httpd", "-f", "-p", "8080", "-h", "/bin"],
            "restart_policy": {"name": "always"},
        }))
        .await;
    world.wait_consistent(&[("survivor", 0, true)]).await;

    proxy.down();
    // What an engine restart does to a container: it stops.
    docker(&["stop", "-t", "1", "flocker--survivor"]);
    let mut status = world.nodes[0].status.clone();
    wait_for("the agent to notice the engine is gone", PATIENCE, || {
        let s = status.borrow_and_update().clone();
        async move { (!s.engine_reachable).then_some(()) }
    })
    .await;

    proxy.up();
    world.wait_consistent(&[("survivor", 0, true)]).await;
    wait_for("the published port to answer again", PATIENCE, || async {
        port_open(port).then_some(())
    })
    .await;
    let s = world.nodes[0].status.borrow().clone();
    assert!(s.engine_reachable && s.errors.is_empty(), "{s:?}");
}

// ---------------------------------------------------------------------------
// The binary

/// A bad `container` section is refused with a reason naming the file (no engine
/// needed).
#[test]
fn the_binary_explains_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yml");
    std::fs::write(
        &config,
        "version: 1\ncontrol-service: {hostname: 127.0.0.1}\ndataset: {backend: directory}\ncontainer: {docker_host: tcp://10.0.0.1:2375}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flocker-container-agent"))
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent.yml") && stderr.contains("unix sockets"),
        "{stderr}"
    );
}
