//! The deploy files, checked with real parsers since no Docker engine runs here:
//! `docker-compose.yml` (YAML: services, health checks, start-up order, scaling, and its
//! environment accepted by the real config parser), the `Procfile` (each command is a real
//! subcommand of our binaries) and the `Dockerfile` (slim, non-root, both binaries, an api and a
//! worker target, each with a health check of its own binary; that `orderly-worker healthcheck`
//! works is tested in the worker crate, `tests/worker/binary.rs`), compose's opt-in `cluster`
//! profile (three persistent primaries, the one-shot that creates the cluster, an api and
//! workers in cluster mode). `.env.example` documents every variable the config reads.

use std::collections::{BTreeSet, HashMap};

use serde_yaml_ng::Value;

const API: &str = env!("CARGO_BIN_EXE_orderly-api");

fn repo_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The compose file with its `<<:` merge keys applied, as Docker Compose reads it. One pass of
/// `apply_merge` leaves the merge keys of a merged mapping in place (an anchor that itself
/// merges another), so it runs until none is left.
fn compose() -> Value {
    let mut compose: Value = serde_yaml_ng::from_str(&repo_file("docker-compose.yml"))
        .expect("docker-compose.yml is valid YAML");
    for _ in 0..10 {
        if !has_merge_key(&compose) {
            return compose;
        }
        compose.apply_merge().expect("merge keys resolve");
    }
    panic!("merge keys nested more than ten deep");
}

fn has_merge_key(value: &Value) -> bool {
    match value {
        Value::Mapping(mapping) => {
            mapping.contains_key("<<") || mapping.values().any(has_merge_key)
        }
        Value::Sequence(sequence) => sequence.iter().any(has_merge_key),
        _ => false,
    }
}

/// The services a plain `docker compose up` starts (those in no profile).
const DEFAULT_SERVICES: [&str; 6] = ["postgres", "redis", "mailpit", "migrate", "api", "worker"];

/// The services of the opt-in `cluster` profile.
const CLUSTER_SERVICES: [&str; 6] = [
    "redis-node-1",
    "redis-node-2",
    "redis-node-3",
    "redis-cluster",
    "api-cluster",
    "worker-cluster",
];

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("service {name} missing"))
}

#[test]
fn compose_declares_every_service_with_health_checks_and_start_up_order() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    let expected: BTreeSet<String> = DEFAULT_SERVICES
        .iter()
        .chain(&CLUSTER_SERVICES)
        .map(|name| (*name).to_owned())
        .collect();
    assert_eq!(names, expected);
    for name in DEFAULT_SERVICES {
        assert!(
            service(&compose, name).get("profiles").is_none(),
            "{name} starts with a plain `docker compose up`"
        );
    }
    for (name, definition) in services {
        assert!(
            definition.get("image").is_some() || definition.get("build").is_some(),
            "{name:?} has neither image nor build"
        );
        // Every dependency names a defined service with a valid condition.
        if let Some(depends) = definition.get("depends_on").and_then(Value::as_mapping) {
            for (target, rule) in depends {
                let target = target.as_str().unwrap();
                assert!(
                    names.contains(target),
                    "{name:?} depends on unknown {target}"
                );
                let condition = rule["condition"].as_str().unwrap_or_default();
                assert!(
                    [
                        "service_started",
                        "service_healthy",
                        "service_completed_successfully"
                    ]
                    .contains(&condition),
                    "{name:?} -> {target}: condition {condition:?}"
                );
            }
        }
    }
    for name in ["postgres", "redis", "api"] {
        assert!(
            service(&compose, name)["healthcheck"]["test"].is_sequence(),
            "{name} has a health check"
        );
    }
    let problems = health_check_problems(&compose);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        orderly_binary(service(&compose, "worker")),
        Some("orderly-worker")
    );
    assert_eq!(
        service(&compose, "worker")["build"]["target"],
        "worker",
        "the worker is built from the image's worker target"
    );
    assert_eq!(
        service(&compose, "migrate")["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );
    for name in ["api", "worker"] {
        let depends = &service(&compose, name)["depends_on"];
        assert_eq!(
            depends["migrate"]["condition"], "service_completed_successfully",
            "{name} waits for migrations"
        );
        assert_eq!(
            depends["redis"]["condition"], "service_healthy",
            "{name} waits for redis"
        );
    }
    assert!(
        service(&compose, "worker")["deploy"]["replicas"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    );
    // Named volumes used by services are declared.
    let declared: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for (_, definition) in services {
        for volume in definition["volumes"].as_sequence().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if !source.starts_with('.') && !source.starts_with('/') {
                assert!(declared.contains(source), "volume {source} is not declared");
            }
        }
    }
}

/// The Orderly binary a service runs (`orderly-api` or `orderly-worker`), from its command.
fn orderly_binary(definition: &Value) -> Option<&str> {
    let command = definition["command"].as_sequence()?;
    command
        .first()
        .and_then(Value::as_str)
        .filter(|program| program.starts_with("orderly-"))
}

/// A service's health check command (`test:`), if it has one.
fn health_check_command(definition: &Value) -> Option<Vec<String>> {
    definition["healthcheck"]["test"].as_sequence().map(|test| {
        test.iter()
            .map(|part| part.as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

/// Every long-running Orderly process must check itself with its own binary: a worker that
/// kept the image's api check would probe a port nothing listens on, and show as unhealthy.
/// One line per service that does not.
fn health_check_problems(compose: &Value) -> Vec<String> {
    let services = compose["services"].as_mapping().expect("services");
    let mut problems = Vec::new();
    for (name, definition) in services {
        let name = name.as_str().unwrap_or_default();
        let Some(binary) = orderly_binary(definition) else {
            continue;
        };
        if definition["restart"].as_str() == Some("no") {
            continue; // one-shot (migrate): a health check has nothing to watch.
        }
        let expected = ["CMD", binary, "healthcheck"].map(String::from).to_vec();
        if health_check_command(definition) != Some(expected) {
            problems.push(format!(
                "{name} runs {binary} but its health check is not `{binary} healthcheck`: {:?}",
                health_check_command(definition)
            ));
        }
    }
    problems
}

#[test]
fn a_worker_service_without_its_own_health_check_is_refused() {
    // A worker that inherits the image's (api) check, and one given the api's check outright.
    for healthcheck in [
        "",
        "    healthcheck:\n      test: [\"CMD\", \"orderly-api\", \"healthcheck\"]\n",
    ] {
        let compose: Value = serde_yaml_ng::from_str(&format!(
            "services:\n  worker:\n    build: .\n    command: [\"orderly-worker\"]\n{healthcheck}"
        ))
        .unwrap();
        let problems = health_check_problems(&compose);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("worker runs orderly-worker"),
            "{problems:?}"
        );
    }
}

#[test]
fn the_cluster_profile_runs_the_shop_on_three_persistent_primaries() {
    let compose = compose();
    for name in CLUSTER_SERVICES {
        let profiles = service(&compose, name)["profiles"].as_sequence();
        assert_eq!(
            profiles.map(Vec::as_slice),
            Some(&[Value::from("cluster")][..]),
            "{name} is in the cluster profile only"
        );
    }
    let nodes = ["redis-node-1", "redis-node-2", "redis-node-3"];
    for node in nodes {
        let command: Vec<&str> = service(&compose, node)["command"]
            .as_sequence()
            .expect("a command")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let setting = |name: &str| {
            command
                .iter()
                .position(|part| *part == name)
                .and_then(|i| command.get(i + 1).copied())
        };
        assert_eq!(command.first(), Some(&"redis-server"), "{node}");
        assert_eq!(setting("--cluster-enabled"), Some("yes"), "{node}");
        assert_eq!(
            setting("--appendonly"),
            Some("yes"),
            "{node} keeps its jobs"
        );
        assert_eq!(
            setting("--cluster-announce-hostname"),
            Some(node),
            "{node} announces a name the other containers resolve"
        );
        assert!(
            service(&compose, node)["healthcheck"]["test"].is_sequence(),
            "{node} has a health check"
        );
        assert_eq!(
            service(&compose, "redis-cluster")["depends_on"][node]["condition"],
            "service_healthy"
        );
    }
    let create = service(&compose, "redis-cluster")["command"]
        .as_sequence()
        .and_then(|command| command.last())
        .and_then(Value::as_str)
        .expect("the create command");
    let expected = format!(
        "redis-cli --cluster create {} --cluster-replicas 0 --cluster-yes",
        nodes.map(|node| format!("{node}:6379")).join(" ")
    );
    assert!(create.contains(&expected), "{create}");
    assert_eq!(service(&compose, "redis-cluster")["restart"], "no");

    for name in ["api-cluster", "worker-cluster"] {
        let definition = service(&compose, name);
        assert_eq!(
            definition["depends_on"]["redis-cluster"]["condition"],
            "service_completed_successfully",
            "{name} starts once the slots are assigned"
        );
        let vars = environment_of(definition);
        assert_eq!(vars["REDIS_MODE"], "cluster");
        assert_eq!(
            vars["REDIS_URL"],
            nodes.map(|node| format!("redis://{node}:6379")).join(","),
            "{name} knows every node"
        );
        let config = orderly::Config::from_map(&vars).expect("a valid cluster config");
        assert_eq!(config.redis.mode, orderly::config::RedisMode::Cluster);
        let partitions = &config.worker.queue_partitions;
        assert_eq!(
            (partitions.count("emails"), partitions.count("webhooks")),
            (3, 3),
            "{name} spreads the hot queues over the nodes"
        );
    }
    assert_eq!(
        orderly_binary(service(&compose, "worker-cluster")),
        Some("orderly-worker")
    );
    assert_ne!(
        service(&compose, "api-cluster")["ports"],
        service(&compose, "api")["ports"],
        "both apis can run at once"
    );
}

/// A service's environment as the processes see it, with `${JWT_SECRET:?...}` given a value as
/// an operator would give it.
fn environment_of(definition: &Value) -> HashMap<String, String> {
    let env = definition["environment"]
        .as_mapping()
        .expect("an environment");
    env.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
            };
            // `${JWT_SECRET:?message}`: compose refuses to start unless the operator sets it
            // (no default to publish).
            let value = match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                Some(expr) => {
                    let (variable, rule) = expr.split_once(":?").unwrap_or_else(|| {
                        panic!("{expr}: compose variables must be required (`:?`), not defaulted")
                    });
                    assert_eq!(variable, "JWT_SECRET", "only the secret is substituted");
                    assert!(!rule.is_empty(), "the refusal says what to set");
                    orderly::testing::random_secret()
                }
                None => value,
            };
            (k.as_str().unwrap().to_owned(), value)
        })
        .collect()
}

#[test]
fn the_compose_environment_is_a_valid_config() {
    let compose = compose();
    for name in ["api", "worker"] {
        let vars = environment_of(service(&compose, name));
        orderly::Config::from_map(&vars)
            .unwrap_or_else(|e| panic!("the {name} environment fails the config checks: {e}"));
    }
}

#[test]
fn every_procfile_command_is_a_real_subcommand() {
    let procfile = repo_file("Procfile");
    let entries: HashMap<&str, &str> = procfile
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim(), v.trim()))
                .expect("name: command")
        })
        .collect();
    assert_eq!(entries.get("release"), Some(&"orderly-api migrate"));
    assert_eq!(entries.get("web"), Some(&"orderly-api"));
    assert_eq!(entries.get("worker"), Some(&"orderly-worker"));
    // `--help` of the subcommand proves it exists (clap fails on unknown subcommands).
    let status = std::process::Command::new(API)
        .args(["migrate", "--help"])
        .output()
        .unwrap()
        .status;
    assert!(status.success());
}

/// The stages of a Dockerfile by name (`FROM <base> AS <name>`): (base, text of the stage).
fn dockerfile_stages(dockerfile: &str) -> HashMap<String, (String, String)> {
    dockerfile
        .split("\nFROM ")
        .skip(1)
        .map(|stage| {
            let header = stage.lines().next().unwrap_or_default();
            let (base, name) = header
                .split_once(" AS ")
                .unwrap_or_else(|| panic!("every stage is named: FROM {header}"));
            (
                name.trim().to_owned(),
                (base.trim().to_owned(), stage.to_owned()),
            )
        })
        .collect()
}

/// The exec-form `HEALTHCHECK ... CMD [...]` of a stage's text, as its words.
fn health_check_of(stage: &str) -> Option<Vec<String>> {
    let line = stage.lines().find(|l| l.starts_with("HEALTHCHECK "))?;
    let (_, command) = line.split_once(" CMD ")?;
    serde_json::from_str(command).ok()
}

#[test]
fn the_dockerfile_builds_both_binaries_into_a_slim_non_root_image() {
    let dockerfile = repo_file("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked -p orderly-api -p orderly-worker"));
    let stages = dockerfile_stages(&dockerfile);
    // The last stage is the image that ships by default: the api.
    let last = dockerfile
        .rsplit("\nFROM ")
        .next()
        .expect("a runtime stage");
    assert!(last.starts_with("runtime-base AS runtime"), "{last}");
    // Both targets (the api's `runtime`, the `worker`) are the one slim, non-root base.
    let (base_image, base) = &stages["runtime-base"];
    assert_eq!(base_image, "debian:bookworm-slim", "slim base");
    assert!(base.contains("USER orderly"), "runs as a non-root user");
    assert!(
        base.contains("/out/orderly-api /out/orderly-worker"),
        "copies only the two binaries"
    );
    for target in ["runtime-base", "runtime", "worker"] {
        let (from, text) = &stages[target];
        assert!(!text.contains("cargo"), "no toolchain in {target}");
        if target != "runtime-base" {
            assert_eq!(from, "runtime-base", "{target} is the runtime base");
        }
    }
    // Each target checks the binary it runs.
    let (_, api) = &stages["runtime"];
    assert!(api.contains(r#"CMD ["orderly-api"]"#));
    assert_eq!(
        health_check_of(api),
        Some(
            ["/usr/local/bin/orderly-api", "healthcheck"]
                .map(String::from)
                .to_vec()
        )
    );
    let (_, worker) = &stages["worker"];
    assert!(worker.contains(r#"CMD ["orderly-worker"]"#));
    assert_eq!(
        health_check_of(worker),
        Some(
            ["/usr/local/bin/orderly-worker", "healthcheck"]
                .map(String::from)
                .to_vec()
        ),
        "the worker target has its own health check, not the api's"
    );
    assert_eq!(health_check_of(&stages["runtime-base"].1), None);
    let status = std::process::Command::new(API)
        .args(["healthcheck", "--help"])
        .output()
        .unwrap()
        .status;
    assert!(status.success(), "the health-check subcommand exists");
}

#[test]
fn env_example_documents_every_variable_and_is_a_valid_config() {
    let example = repo_file(".env.example");
    let documented: BTreeSet<String> = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| !k.is_empty())
        .collect();
    // Every variable name the config module reads, found in the source of its files.
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/src/config");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("reading {}: {e}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|path| path.ends_with("mod.rs")),
        "{} holds the config module",
        folder.display()
    );
    let source: String = files
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    let mut read = BTreeSet::new();
    for call in [
        "raw(\"",
        "required(\"",
        "parse_or(\"",
        "bool_or(\"",
        "list(\"",
    ] {
        for piece in source.split(call).skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                read.insert(name);
            }
        }
    }
    let missing: Vec<_> = read.difference(&documented).collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
    // Read the way the binaries read `.env` (dotenvy: quotes removed).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.env.example");
    let mut vars: HashMap<String, String> = dotenvy::from_path_iter(&path)
        .expect(".env.example")
        .collect::<Result<_, _>>()
        .expect(".env.example parses as a dotenv file");
    // The one value it must not ship: as is, the config refuses it, naming the variable.
    assert_eq!(
        vars["JWT_SECRET"], "",
        ".env.example ships a signing secret"
    );
    let refusal = orderly::Config::from_map(&vars).expect_err("no secret, no start");
    assert!(refusal.to_string().starts_with("JWT_SECRET"), "{refusal}");
    // With the random secret scripts/run.sh writes into .env, everything else is valid.
    vars.insert("JWT_SECRET".into(), orderly::testing::random_secret());
    orderly::Config::from_map(&vars).expect(".env.example is a valid configuration");
    assert_eq!(vars["MAIL_FROM"], "Orderly <orders@orderly.invalid>");
}

/// `scripts/run.sh` turns `.env.example` into `.env` and sources it in bash (`set -a`), so every
/// line must also be valid shell: an unquoted `<` once broke the run command on a fresh clone.
#[test]
fn env_example_is_valid_shell() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.env.example");
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg("set -euo pipefail; set -a; source \"$1\"; printf '%s' \"$MAIL_FROM\"")
        .arg("bash")
        .arg(&path)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "bash cannot source .env.example: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Orderly <orders@orderly.invalid>"
    );
}

/// No module of any crate imports a module that imports it back, directly or around a loop
/// (`scripts/module-cycles.py`, which anyone can run): the layering holds in code.
#[test]
fn no_crate_has_an_import_cycle() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/module-cycles.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .output()
        .expect("python3 runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "import cycles:\n{report}");
    assert!(report.contains("shared: no cycle"), "{report}");
}
