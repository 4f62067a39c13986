//! The deployment artifacts in `deploy/`: every Kubernetes manifest is
//! listed by the kustomize base and validates against the Kubernetes
//! schemas offline (kubernetes-validate from PyPI, strict: unknown fields
//! fail), the `tone` arguments the manifests give are ones its CLI
//! accepts, the README's commands make every file the Secrets read, and
//! the Dockerfile parses (BuildKit's parser, from PyPI's `dockerfile`)
//! and keeps the image rules a linter would check (no Dockerfile linter
//! installs from the registries here).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::venv;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The `resources:` a kustomization.yaml lists.
fn kustomize_resources(kustomization: &str) -> Vec<String> {
    let mut resources = Vec::new();
    let mut inside = false;
    for line in kustomization.lines() {
        if !line.starts_with(' ') && !line.starts_with('-') {
            inside = line.trim_end() == "resources:";
            continue;
        }
        if inside {
            if let Some(item) = line.trim().strip_prefix("- ") {
                resources.push(item.trim().to_string());
            }
        }
    }
    resources
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let base = deploy_dir().join("kubernetes");
    let kustomization =
        std::fs::read_to_string(base.join("kustomization.yaml")).expect("kustomization.yaml");
    let mut listed = kustomize_resources(&kustomization);
    listed.sort();
    let mut present: Vec<String> = std::fs::read_dir(&base)
        .expect("deploy/kubernetes")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    present.sort();
    assert_eq!(listed, present, "the kustomization lists every manifest");

    let validate = venv::tool("kubernetes-validate", "kubernetes-validate");
    let output = Command::new(validate)
        .arg("--strict")
        .args(listed.iter().map(|name| base.join(name)))
        .output()
        .expect("kubernetes-validate runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(!report.contains("ERROR"), "{report}");
    for kind in ["statefulset/", "deployment/", "service/", "configmap/"] {
        assert!(report.contains(kind), "no {kind} validated:\n{report}");
    }
}

/// The `tone` argument lists of a manifest: `args:` blocks of `- ` items.
fn manifest_args(manifest: &str) -> Vec<Vec<String>> {
    let mut lists = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    for line in manifest.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some((list_indent, items)) = current.as_mut() {
            match line.trim().strip_prefix("- ") {
                Some(item) if indent >= *list_indent => {
                    items.push(item.to_string());
                    continue;
                }
                _ => lists.extend(current.take().map(|(_, items)| items)),
            }
        }
        if line.trim() == "args:" {
            current = Some((indent, Vec::new()));
        }
    }
    lists.extend(current.map(|(_, items)| items));
    lists
}

#[test]
fn deployed_commands_are_ones_tone_accepts() {
    let base = deploy_dir().join("kubernetes");
    let mut checked = 0;
    for name in ["coordinator.yaml", "workers.yaml"] {
        let manifest = std::fs::read_to_string(base.join(name)).expect("manifest");
        for args in manifest_args(&manifest) {
            // Kubernetes fills $(VAR) from the environment; any value of
            // the right shape does here.
            let args: Vec<String> = args
                .iter()
                .map(|arg| {
                    arg.replace("$(TONE_HEARTBEAT_TIMEOUT_MS)", "10000")
                        .replace("$(TONE_WORKER_SLOTS)", "4")
                        .replace("$(TONE_WORKER_MEMORY_LIMIT)", "6G")
                        .replace("$(TONE_WORKER_DISK_LIMIT)", "40G")
                        .replace("$(POD_NAME)", "tone-worker-0")
                })
                .collect();
            assert!(!args.iter().any(|arg| arg.contains("$(")), "{args:?}");
            // `--help` after the arguments: clap parses them all first, so
            // an unknown flag or a bad value fails before help is shown.
            let output = crate::common::tone()
                .args(&args)
                .arg("--help")
                .output()
                .expect("tone runs");
            assert!(
                output.status.success(),
                "{name}: tone {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "one coordinator and one worker command");
}

/// The files the kustomization's secretGenerator reads (`files: [...]`).
fn secret_files(kustomization: &str) -> Vec<String> {
    kustomization
        .lines()
        .filter_map(|line| {
            let list = line.trim().strip_prefix("files: [")?.strip_suffix(']')?;
            Some(
                list.split(',')
                    .map(|item| item.trim().to_string())
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

#[test]
fn the_readme_commands_make_every_file_the_secrets_need() {
    let kustomization = std::fs::read_to_string(deploy_dir().join("kubernetes/kustomization.yaml"))
        .expect("kustomization.yaml");
    let files = secret_files(&kustomization);
    assert_eq!(files.len(), 5, "{files:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let secrets = dir.path().join("secrets");
    let output = crate::common::run_tone(&[
        "cert",
        "generate",
        "--out",
        secrets.to_str().expect("utf-8 path"),
        "--host",
        "tone-coordinator",
        "--host",
        "*.tone-workers",
        "--host",
        "127.0.0.1",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for token in ["worker.token", "client.token"] {
        let output = crate::common::run_tone(&["token", "generate"]);
        assert!(output.status.success());
        std::fs::write(secrets.join(token), &output.stdout).expect("token file");
    }
    for file in files {
        assert!(
            dir.path().join(&file).is_file(),
            "the README's commands make no {file}"
        );
    }
}

/// One Dockerfile instruction as BuildKit's parser reads it (through the
/// `dockerfile` package from PyPI, which wraps it).
#[derive(Debug, serde::Deserialize)]
struct Instruction {
    cmd: String,
    flags: Vec<String>,
    value: Vec<String>,
    json: bool,
}

fn dockerfile_instructions() -> Vec<Instruction> {
    let python = venv::python_with("dockerfile", "dockerfile");
    let script = "import dockerfile, json, sys\n\
        print(json.dumps([{'cmd': c.cmd, 'flags': list(c.flags), 'value': list(c.value), 'json': c.json}\n\
        for c in dockerfile.parse_file(sys.argv[1])]))";
    let output = Command::new(python)
        .args(["-c", script])
        .arg(deploy_dir().join("Dockerfile"))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "the Dockerfile does not parse: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("instructions as JSON")
}

/// The Dockerfile parses, and follows the rules a linter (hadolint) would
/// check, on what BuildKit's parser read: pinned base images, a build
/// stage whose binary alone is copied into the runtime stage, apt without
/// recommends and without its lists left behind, a non-root user, and
/// `tone` as an exec-form entrypoint.
#[test]
fn the_dockerfile_parses_and_follows_the_image_rules() {
    let instructions = dockerfile_instructions();
    let stages: Vec<usize> = (0..instructions.len())
        .filter(|&index| instructions[index].cmd == "FROM")
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {instructions:?}");
    for &index in &stages {
        let image = &instructions[index].value[0];
        let tag = image.rsplit_once(':').map(|(_, tag)| tag);
        assert!(tag.is_some_and(|tag| tag != "latest"), "{image}: pin a tag");
    }
    let build = &instructions[stages[0]].value;
    assert_eq!(
        build.get(1).map(|word| word.to_lowercase()),
        Some("as".into())
    );
    let build_name = &build[2];
    let runtime = &instructions[*stages.last().unwrap_or(&0)..];
    let from_build = format!("--from={build_name}");
    assert!(
        runtime.iter().any(|step| step.cmd == "COPY"
            && step.flags.contains(&from_build)
            && step.value.last().map(String::as_str) == Some("/usr/local/bin/tone")),
        "the runtime stage copies the built binary: {runtime:?}"
    );
    for step in instructions.iter().filter(|step| step.cmd == "RUN") {
        let script = step.value.join(" ");
        if script.contains("apt-get install") {
            assert!(
                script.contains("-y") && script.contains("--no-install-recommends"),
                "{script}"
            );
            assert!(script.contains("rm -rf /var/lib/apt/lists"), "{script}");
        }
        if script.contains("cargo build") {
            assert!(
                script.contains("--locked") && script.contains("--release"),
                "{script}"
            );
        }
    }
    let user = runtime.iter().rev().find(|step| step.cmd == "USER");
    let user = user.map(|step| step.value[0].as_str());
    assert!(
        user.is_some_and(|user| user != "root" && user != "0" && !user.starts_with("0:")),
        "runs as a non-root user: {user:?}"
    );
    let entrypoint = runtime.iter().rev().find(|step| step.cmd == "ENTRYPOINT");
    assert!(
        entrypoint.is_some_and(|step| step.json && step.value == ["tone"]),
        "exec-form ENTRYPOINT [\"tone\"]: {entrypoint:?}"
    );
}
