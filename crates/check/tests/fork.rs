//! The `fork` operation in scenario files: the child is a process a later
//! [[cpu]] may run, it inherits its parent's VMA names, and bad uses name
//! their line and column.

use mmsim_check::scenario::{OpKind, parse};

const FORK: &str = r#"
name = "t"
section_size = "64K"

[[memory]]
name = "boot"
kind = "boot"
size = "256K"

[[process]]
name = "app"

[[process.vma]]
name = "buf"
pages = 2
populate = true

[[cpu]]
ops = [
  { op = "mmap", name = "late", pages = 1 },
  { op = "fork", as = "kid" },
]

[[cpu]]
process = "kid"
ops = [
  { op = "mmap", name = "own", pages = 1 },
  { op = "write", vma = "buf", page = 1, value = 3 },
  { op = "read", vma = "late" },
  { op = "read", vma = "own" },
]
"#;

fn err(text: &str) -> String {
    match parse(text, "t.toml") {
        Ok(_) => panic!("parsed:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn a_fork_defines_a_process_with_its_parents_vma_names() {
    let s = parse(FORK, "t.toml").unwrap();
    assert_eq!(s.processes.len(), 2);
    let kid = &s.processes[1];
    assert_eq!(kid.name, "kid");
    assert_eq!(kid.forked_from, Some(0));
    assert_eq!(kid.initial, 0);
    let names: Vec<&str> = kid.vmas.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["buf", "late", "own"]);
    assert!(matches!(s.cpus[0].ops[1].kind, OpKind::Fork { child: 1 }));
    assert_eq!(s.cpus[1].process, Some(1));
}

#[test]
fn fork_needs_as() {
    let t = FORK.replace(r#"{ op = "fork", as = "kid" }"#, r#"{ op = "fork" }"#);
    let e = err(&t);
    assert!(
        e.starts_with(&format!("t.toml:{}:", line_of(&t, "op = \"fork\""))),
        "{e}"
    );
    assert!(e.contains("needs `as`"), "{e}");
}

#[test]
fn a_child_may_not_take_a_process_name() {
    let t = FORK.replace(r#"as = "kid""#, r#"as = "app""#);
    let e = err(&t);
    assert!(e.contains("a second process named `app`"), "{e}");
}

#[test]
fn a_forked_process_does_not_fork_again() {
    let t = FORK.replace(
        r#"{ op = "read", vma = "own" },"#,
        r#"{ op = "fork", as = "grandkid" },"#,
    );
    let e = err(&t);
    assert!(
        e.starts_with(&format!("t.toml:{}:", line_of(&t, "grandkid"))),
        "{e}"
    );
    assert!(e.contains("only a [[process]] forks"), "{e}");
}

#[test]
fn fork_takes_only_as() {
    let t = FORK.replace(
        r#"{ op = "fork", as = "kid" }"#,
        r#"{ op = "fork", as = "kid", vma = "buf" }"#,
    );
    let e = err(&t);
    assert!(e.contains("vma"), "{e}");
}
