//! The files that run `mmsim hunt` across machines: the Dockerfile, the
//! Kubernetes Jobs and the Slurm array script parse, and the commands they
//! run are the ones the README documents (with `$INDEX`/`$COUNT` for the
//! shard), whose every flag `mmsim` accepts.

mod common;

use common::{mmsim, stdout};
use yaml_rust2::{Yaml, YamlLoader};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The command lines of the README's code blocks, one per line.
fn readme_commands() -> Vec<String> {
    let readme = read("README.md");
    let mut out = Vec::new();
    let mut inside = false;
    for l in readme.lines() {
        if l.starts_with("```") {
            inside = !inside;
            continue;
        }
        if inside && l.starts_with("mmsim ") {
            out.push(normalize(l));
        }
    }
    out
}

/// One spelling of a shard's command: the index `$INDEX`, the count
/// `$COUNT`, no quotes, single spaces.
fn normalize(s: &str) -> String {
    s.replace("$(JOB_COMPLETION_INDEX)", "$INDEX")
        .replace("$(COUNT)", "$COUNT")
        .replace('"', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn documented(cmd: &str) {
    let cmds = readme_commands();
    assert!(
        cmds.iter().any(|c| c == cmd),
        "`{cmd}` is not a command the README documents: {cmds:#?}"
    );
    // Every flag is one `mmsim <subcommand> --help` lists.
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let help = stdout(&mmsim(&[words[1], "--help"]));
    for w in &words[2..] {
        if w.starts_with("--") {
            assert!(help.contains(w), "`mmsim {}` has no {w}", words[1]);
        }
    }
}

fn docs(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn container(job: &Yaml) -> &Yaml {
    &job["spec"]["template"]["spec"]["containers"][0]
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_mmsim_in_another() {
    let d = read("Dockerfile");
    let froms: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "a multi-stage build: {froms:?}");
    assert!(froms[0].contains(" AS build"));
    assert!(d.contains("RUN cargo build --release"));
    assert!(d.contains("COPY --from=build /src/target/release/mmsim /usr/local/bin/mmsim"));
    assert!(d.contains(r#"ENTRYPOINT ["mmsim"]"#));
}

#[test]
fn the_kubernetes_indexed_job_runs_the_documented_hunt_and_merge() {
    let hunt = docs("examples/k8s/hunt-job.yaml");
    let job = hunt
        .iter()
        .find(|d| d["kind"].as_str() == Some("Job"))
        .expect("a Job");
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let completions = spec["completions"].as_i64().expect("completions");
    let c = container(job);
    // COUNT is the number of completions.
    let env = c["env"].as_vec().expect("env");
    let count = env
        .iter()
        .find(|e| e["name"].as_str() == Some("COUNT"))
        .and_then(|e| e["value"].as_str())
        .expect("COUNT");
    assert_eq!(count.parse::<i64>().ok(), Some(completions));
    // The image's entry point is mmsim: the args follow it.
    assert!(c["command"].is_badvalue(), "the image's ENTRYPOINT runs");
    let cmd = normalize(&format!("mmsim {}", strings(&c["args"]).join(" ")));
    assert!(cmd.contains("--shard $INDEX/$COUNT"), "{cmd}");
    documented(&cmd);
    // The output folder is the shared volume.
    let mount = &c["volumeMounts"][0];
    let wd = c["workingDir"].as_str().unwrap();
    assert_eq!(
        mount["mountPath"].as_str(),
        Some(format!("{wd}/hunt-out").as_str())
    );
    let claim = hunt
        .iter()
        .find(|d| d["kind"].as_str() == Some("PersistentVolumeClaim"))
        .expect("the volume");
    assert_eq!(
        claim["metadata"]["name"].as_str(),
        job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
            .as_str()
    );

    let merge = docs("examples/k8s/merge-job.yaml");
    let c = container(&merge[0]);
    assert_eq!(strings(&c["command"]), vec!["sh", "-c"]);
    let cmd = normalize(&strings(&c["args"])[0]);
    documented(&cmd);
}

#[test]
fn the_slurm_array_runs_the_documented_hunt_and_merge() {
    let s = read("examples/slurm/hunt.sh");
    assert!(s.starts_with("#!/usr/bin/env bash"));
    let array = s
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH --array="))
        .expect("an array job");
    assert!(array.starts_with("0-"), "{array}");
    // The shard variables come from Slurm.
    assert!(s.contains("INDEX=$SLURM_ARRAY_TASK_ID"));
    assert!(s.contains("COUNT=$SLURM_ARRAY_TASK_COUNT"));
    let hunt = s
        .lines()
        .find(|l| l.starts_with("mmsim hunt"))
        .expect("the hunt");
    documented(&normalize(hunt));
    let wrap = s
        .lines()
        .find_map(|l| l.trim().strip_prefix("--wrap "))
        .expect("the merge, after the array");
    documented(&normalize(wrap));
    assert!(s.contains("--dependency=afterok:"));
    // bash can parse it.
    let ok = std::process::Command::new("bash")
        .args(["-n", "examples/slurm/hunt.sh"])
        .status()
        .map(|st| st.success())
        .unwrap_or(true);
    assert!(ok, "bash -n examples/slurm/hunt.sh");
}
