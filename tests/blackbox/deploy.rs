//! The deployment files, checked offline by the tools that read them: the
//! Kubernetes manifests (`deploy/kubernetes/`) against Kubernetes' own
//! schemas (kubernetes-validate, which bundles them), `docker-compose.yml`
//! against the Compose Specification's schema (check-jsonschema's vendored
//! copy), and what the manifests say against the image and the collector.
//! `scripts/test.sh` installs both validators (PyPI).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubernetes_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// `python3 -m <module> <args>` in the repository, which must succeed.
fn python_tool(module: &str, args: &[&str]) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new("python3")
        .arg("-m")
        .arg(module)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&stdout);
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(
        !stderr.contains("No module named"),
        "{module} is not installed (scripts/test.sh installs it from PyPI): {stderr}"
    );
    assert!(
        status.success(),
        "python3 -m {module} {args:?}: {status}\n{stdout}\n{stderr}"
    );
    format!("{stdout}{stderr}")
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kubernetes_dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifest(name: &str) -> Value {
    yaml(&kubernetes_dir().join(name))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string"))
}

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .fold(value, |v, key| match key.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[*key],
        })
}

/// The collector's container in deployment.yaml.
fn container(deployment: &Value) -> &Value {
    let containers = at(deployment, &["spec", "template", "spec", "containers"]);
    assert_eq!(containers.as_sequence().map(Vec::len), Some(1));
    &containers[0]
}

/// The `env` entry `name` of a container.
fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_sequence()
        .and_then(|env| env.iter().find(|e| e["name"].as_str() == Some(name)))
        .unwrap_or_else(|| panic!("no env {name}"))
}

/// SHUTDOWN_TIMEOUT as the ConfigMap sets it.
fn shutdown_timeout() -> Duration {
    let configmap = manifest("configmap.yaml");
    humantime::parse_duration(str_at(&configmap, &["data", "SHUTDOWN_TIMEOUT"])).unwrap()
}

#[test]
fn kubernetes_manifests_validate_strictly_against_the_kubernetes_schemas() {
    let files = manifest_files();
    let names: BTreeSet<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "configmap.yaml",
        "deployment.yaml",
        "provisioning-api-service.yaml",
        "secret.example.yaml",
    ] {
        assert!(names.contains(expected), "{expected} in {names:?}");
    }
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    // The newest schemas the validator bundles, and an older release still
    // in wide use: the manifests use nothing newer than it.
    for version in ["1.37.0", "1.29.0"] {
        let mut args = vec!["--strict", "--kubernetes-version", version];
        args.extend(paths.iter().map(String::as_str));
        let out = python_tool("kubernetes_validate", &args);
        assert_eq!(
            out.matches(" passed for resource ").count(),
            files.len(),
            "every manifest passed against {version}:\n{out}"
        );
    }
}

#[test]
fn the_validator_refuses_a_misspelt_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(kubernetes_dir().join("deployment.yaml")).unwrap();
    let broken = text.replace("terminationGracePeriodSeconds:", "terminationGracePeriod:");
    assert_ne!(broken, text);
    let path = dir.path().join("deployment.yaml");
    std::fs::write(&path, broken).unwrap();
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&path)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("'terminationGracePeriod' was unexpected"),
        "{stdout}"
    );
}

#[test]
fn the_deployment_outlasts_shutdown_timeout_and_runs_as_the_images_user() {
    let deployment = manifest("deployment.yaml");
    let pod = at(&deployment, &["spec", "template", "spec"]);
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let timeout = shutdown_timeout();
    assert!(
        Duration::from_secs(grace) > timeout,
        "terminationGracePeriodSeconds {grace} must exceed SHUTDOWN_TIMEOUT {timeout:?}"
    );

    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the Dockerfile sets USER");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    let context = &pod["securityContext"];
    assert_eq!(context["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(context["runAsUser"].as_u64().unwrap().to_string(), uid);
    assert_eq!(context["runAsGroup"].as_u64().unwrap().to_string(), gid);
    let c = container(&deployment);
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "README says the root filesystem is read-only"
    );
}

#[test]
fn the_deployment_probes_health_and_ready_on_the_api_port_it_binds_off_loopback() {
    let deployment = manifest("deployment.yaml");
    let c = container(&deployment);
    assert_eq!(str_at(c, &["livenessProbe", "httpGet", "path"]), "/health");
    assert_eq!(str_at(c, &["readinessProbe", "httpGet", "path"]), "/ready");
    let port_name = str_at(c, &["livenessProbe", "httpGet", "port"]);
    assert_eq!(str_at(c, &["readinessProbe", "httpGet", "port"]), port_name);
    let port = c["ports"]
        .as_sequence()
        .and_then(|ports| ports.iter().find(|p| p["name"].as_str() == Some(port_name)))
        .expect("the probes' named port");
    assert_eq!(
        port["containerPort"].as_u64().unwrap().to_string(),
        str_at(env(c, "PROVISION_PORT"), &["value"])
    );
    // The kubelet probes the pod's IP, so the API binds every address, and
    // ticketmeter refuses that without a token: the token must always be set.
    assert_eq!(str_at(env(c, "PROVISION_BIND"), &["value"]), "0.0.0.0");
    let token = &env(c, "PROVISION_TOKEN")["valueFrom"]["secretKeyRef"];
    assert_ne!(token["optional"].as_bool(), Some(true));
}

#[test]
fn the_tokens_come_from_the_secret_and_nothing_secret_from_the_configmap() {
    let deployment = manifest("deployment.yaml");
    let c = container(&deployment);
    let secret = manifest("secret.example.yaml");
    let secret_name = str_at(&secret, &["metadata", "name"]);
    for name in [
        "OPENMETER_API_KEY",
        "PROVISION_TOKEN",
        "KAFKA_SASL_PASSWORD",
    ] {
        let reference = &env(c, name)["valueFrom"]["secretKeyRef"];
        assert_eq!(str_at(reference, &["name"]), secret_name, "{name}");
        let key = str_at(reference, &["key"]);
        assert!(
            secret["stringData"][key].is_string(),
            "{name}: key {key} in {secret_name}"
        );
    }
    assert_eq!(
        env(c, "KAFKA_SASL_PASSWORD")["valueFrom"]["secretKeyRef"]["optional"].as_bool(),
        Some(true),
        "SASL is optional"
    );
    let configmap = manifest("configmap.yaml");
    let keys: Vec<&str> = configmap["data"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(Value::as_str)
        .collect();
    for key in &keys {
        assert!(
            !["_API_KEY", "_TOKEN", "_PASSWORD"]
                .iter()
                .any(|secret| key.ends_with(secret)),
            "{key} belongs in the Secret"
        );
    }
}

/// The sizing table of `docs/operations.md` ("Sizing"): customers, and the
/// collector's largest measured peak RSS at a restart against that many
/// (of the table's backlogs), in MiB.
fn sizing_table() -> Vec<(u64, f64)> {
    let doc = std::fs::read_to_string(repo().join("docs/operations.md")).expect("operations.md");
    let section = doc
        .split("\n### Sizing\n")
        .nth(1)
        .expect("a Sizing section in docs/operations.md");
    let rows: Vec<(u64, f64)> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let customers = cells.get(1)?.replace(',', "").parse().ok()?;
            let peaks = cells[2..].iter().filter_map(|c| c.strip_suffix(" MiB"));
            let mib = peaks
                .map(|m| m.parse::<f64>().expect("a figure in MiB"))
                .reduce(f64::max)?;
            Some((customers, mib))
        })
        .collect();
    assert!(rows.len() >= 3, "the sizing table has its rows: {rows:?}");
    rows
}

#[test]
fn the_deployment_gives_the_collector_the_memory_measured_for_the_largest_organisation_sized() {
    let (customers, peak_mib) = sizing_table()
        .into_iter()
        .max_by_key(|(customers, _)| *customers)
        .unwrap();
    let deployment = manifest("deployment.yaml");
    let resources = &container(&deployment)["resources"];
    let mebibytes = |q: &str| -> u64 {
        q.strip_suffix("Mi")
            .unwrap_or_else(|| panic!("{q} in Mi"))
            .parse()
            .unwrap()
    };
    // The rule docs/operations.md states: the peak plus a quarter, rounded
    // up to a multiple of 32 MiB; request = limit.
    let sized = ((peak_mib * 1.25 / 32.0).ceil() as u64) * 32;
    let request = mebibytes(str_at(resources, &["requests", "memory"]));
    let limit = mebibytes(str_at(resources, &["limits", "memory"]));
    assert_eq!(
        (request, limit),
        (sized, sized),
        "docs/operations.md sizes {customers} customers at {peak_mib} MiB"
    );
    assert_eq!(
        ticketmeter::EnsureConfig::default().cache_capacity,
        customers,
        "ENSURE_CACHE_CAPACITY's default is the largest organisation sized"
    );
    assert!(resources["requests"]["cpu"].is_string());
}

#[test]
fn the_sizing_table_grows_with_customers() {
    let rows = sizing_table();
    assert!(
        rows.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
        "{rows:?}"
    );
}

#[test]
fn the_provisioning_service_selects_the_collector_pods_on_the_api_port() {
    let deployment = manifest("deployment.yaml");
    let service = manifest("provisioning-api-service.yaml");
    let labels = at(&deployment, &["spec", "template", "metadata", "labels"])
        .as_mapping()
        .unwrap();
    let selector = at(&service, &["spec", "selector"]).as_mapping().unwrap();
    for (key, value) in selector {
        assert_eq!(labels.get(key), Some(value), "selector {key:?}");
    }
    let target = str_at(&service, &["spec", "ports", "0", "targetPort"]);
    let c = container(&deployment);
    assert!(c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|p| p["name"].as_str() == Some(target)));
}

#[test]
fn docker_compose_validates_against_the_compose_specification() {
    let out = python_tool(
        "check_jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
    );
    assert!(out.contains("validation done"), "{out}");

    let compose = yaml(&repo().join("docker-compose.yml"));
    let services = compose["services"].as_mapping().unwrap();
    for (name, service) in services {
        if let Some(deps) = service["depends_on"].as_mapping() {
            for dep in deps.keys() {
                assert!(services.contains_key(dep), "{name:?} depends on {dep:?}");
            }
        }
    }
    let grace = humantime::parse_duration(str_at(
        &compose,
        &["services", "ticketmeter", "stop_grace_period"],
    ))
    .unwrap();
    assert!(grace > shutdown_timeout());
}

#[test]
fn the_compose_validator_refuses_an_unknown_service_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let broken = text.replace("stop_grace_period: 30s", "stop_grace: 30s");
    assert_ne!(broken, text);
    let path = dir.path().join("docker-compose.yml");
    std::fs::write(&path, broken).unwrap();
    let out = Command::new("python3")
        .args([
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
        ])
        .arg(&path)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("'stop_grace' was unexpected"), "{stdout}");
}
