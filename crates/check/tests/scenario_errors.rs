//! Bad scenario files: every error names the file, the line and the column
//! of what is wrong, and nothing panics.

use mmsim_check::scenario::parse;

const GOOD: &str = r#"
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
  { op = "pin_user_pages_fast", vma = "buf", pages = 1, flags = ["write"], as = "p" },
  { op = "unpin_user_pages", ref = "p" },
]

[expect]
violation = "none"
"#;

/// The error for `text`, as `file:line:column: message`.
fn err(text: &str) -> String {
    match parse(text, "t.toml") {
        Ok(_) => panic!("parsed:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// The 1-based line of the first occurrence of `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn the_good_file_parses() {
    let s = parse(GOOD, "t.toml").unwrap();
    assert_eq!(s.cpus.len(), 1);
    assert_eq!(s.cpus[0].ops.len(), 2);
    assert_eq!(s.processes[0].vmas[0].pages, 2);
    assert_eq!(s.section_shift, 16);
}

#[test]
fn malformed_toml_names_line_and_column() {
    let t = GOOD.replace("kind = \"boot\"", "kind = \"boot");
    let e = err(&t);
    let l = line_of(&t, "kind = \"boot");
    assert!(e.starts_with(&format!("t.toml:{l}:")), "{e}");
}

#[test]
fn an_unknown_vma_is_an_error_at_the_line_that_names_it() {
    let t = GOOD.replace(
        "{ op = \"unpin_user_pages\", ref = \"p\" }",
        "{ op = \"unpin_user_pages\", ref = \"p\" },\n  { op = \"read\", vma = \"nope\" }",
    );
    let e = err(&t);
    let l = line_of(&t, "\"nope\"");
    let col = t.lines().nth(l - 1).unwrap().find("\"nope\"").unwrap() + 1;
    assert_eq!(
        e,
        format!("t.toml:{l}:{col}: unknown vma `nope` in process `app` (defined: buf)")
    );
}

#[test]
fn dangling_names_and_bad_values_point_at_their_line() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace, with, line marker, message fragment)
        (
            "ref = \"p\"",
            "ref = \"q\"",
            "ref = \"q\"",
            "unknown ref `q`",
        ),
        (
            "pages = 2",
            "pages = 2\nmemory = \"dimm\"",
            "memory = \"dimm\"",
            "unknown memory `dimm`",
        ),
        (
            "[expect]",
            "[[cpu]]\nprocess = \"other\"\n\n[expect]",
            "process = \"other\"",
            "unknown process `other`",
        ),
        (
            "op = \"unpin_user_pages\"",
            "op = \"unpin_user_page\"",
            "unpin_user_page\"",
            "unknown operation `unpin_user_page`",
        ),
        (
            "flags = [\"write\"]",
            "flags = [\"wrote\"]",
            "wrote",
            "unknown flag `wrote`",
        ),
        (
            "violation = \"none\"",
            "violation = \"use-after-free\"",
            "use-after-free",
            "unknown violation kind",
        ),
        (
            "size = \"256K\"",
            "size = \"100K\"",
            "100K",
            "not a whole number of 64K sections",
        ),
        (
            "section_size = \"64K\"",
            "section_size = \"48K\"",
            "48K",
            "power of two",
        ),
        (
            "pages = 2",
            "pages = 2\ncolour = \"red\"",
            "colour",
            "unknown field `colour`",
        ),
        (
            "as = \"p\"",
            "as = \"p\", value = 3",
            "value = 3",
            "takes no `value`",
        ),
        (
            "vma = \"buf\", pages = 1",
            "vma = \"buf\", page = 2, pages = 1",
            "page = 2",
            "outside vma `buf`",
        ),
        (
            "{ op = \"unpin_user_pages\", ref = \"p\" }",
            "{ op = \"put_pages\", ref = \"p\" }",
            "put_pages",
            "drop it with unpin_user_pages",
        ),
        (
            "name = \"t\"",
            "name = \"T t\"",
            "T t",
            "must be [a-z0-9-]+",
        ),
        (
            "kind = \"boot\"",
            "kind = \"boot\"\nstate = \"online\"",
            "state = \"online\"",
            "boot memory has no `state`",
        ),
        (
            "[expect]",
            "[safeguards]\n\"no.such\" = false\n\n[expect]",
            "no.such",
            "unknown safeguard `no.such`",
        ),
    ];
    for (from, to, marker, msg) in cases {
        assert!(GOOD.contains(from), "{from}");
        let t = GOOD.replacen(from, to, 1);
        let e = err(&t);
        let l = line_of(&t, marker);
        assert!(
            e.starts_with(&format!("t.toml:{l}:")) && e.contains(msg),
            "{from} -> {to}: got `{e}`, wanted line {l} and `{msg}`"
        );
    }
}

#[test]
fn structural_errors_are_reported_too() {
    let no_boot = GOOD.replace("kind = \"boot\"", "kind = \"hotplug\"\nstate = \"absent\"");
    assert!(err(&no_boot).contains("no boot memory"));
    let no_cpu = GOOD[..GOOD.find("[[cpu]]").unwrap()].to_string();
    assert!(err(&no_cpu).contains("no [[cpu]]"));
    let twice = GOOD.replace(
        "{ op = \"unpin_user_pages\", ref = \"p\" },",
        "{ op = \"unpin_user_pages\", ref = \"p\" },\n  { op = \"unpin_user_pages\", ref = \"p\" },",
    );
    assert!(err(&twice).contains("already dropped"));
    let dup = GOOD.replace(
        "[[cpu]]",
        "[[process.vma]]\nname = \"buf\"\npages = 1\n\n[[cpu]]",
    );
    assert!(err(&dup).contains("a second VMA named `buf`"));
}

/// Arbitrary bytes never panic the parser.
#[test]
fn garbage_never_panics() {
    let mut x: u64 = 0x1234_5678;
    for n in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Cut the good file somewhere and splice in a random byte.
        let cut = (x as usize) % GOOD.len();
        let mut t = GOOD.as_bytes()[..cut].to_vec();
        t.push((x >> 32) as u8 % 128);
        t.extend_from_slice(&GOOD.as_bytes()[cut..]);
        if n % 3 == 0 {
            t.truncate(cut);
        }
        let t = String::from_utf8_lossy(&t);
        if let Err(e) = parse(&t, "t.toml") {
            assert!(e.loc.line >= 1 && e.loc.column >= 1, "{e}");
        }
    }
}

#[test]
fn config_and_nodes_parse_and_bad_ones_name_line_and_column() {
    // [config] and `node` as SCENARIOS.md fixes them.
    let t = GOOD.replace(
        "section_size = \"64K\"\n",
        "section_size = \"64K\"\n\n[config]\ndebug_vm = true\npage_ext = true\n",
    );
    let t = t.replace(
        "size = \"256K\"\n",
        "size = \"256K\"\n\n[[memory]]\nname = \"cxl\"\nkind = \"hotplug\"\nsize = \"64K\"\nstate = \"online\"\nnode = 1\n",
    );
    let s = parse(&t, "t.toml").unwrap();
    assert!(s.config.debug_vm && s.config.page_ext && s.config.numa);
    assert_eq!(s.memory[1].node, 1);
    // page_ext's grace period follows the configuration.
    assert!(
        s.safeguards
            .on(mmsim_model::safeguards::Sg::PAGE_EXT_OFFLINE_SYNCHRONIZE_RCU)
    );
    // An unknown option.
    let bad = t.replace("page_ext = true", "kasan = true");
    let e = err(&bad);
    let l = line_of(&bad, "kasan");
    assert!(e.starts_with(&format!("t.toml:{l}:1:")), "{e}");
    assert!(e.contains("unknown configuration option `kasan`"), "{e}");
    // A node without NUMA.
    let bad = t.replace("page_ext = true", "numa = false");
    let e = err(&bad);
    let l = line_of(&bad, "node = 1");
    assert!(e.starts_with(&format!("t.toml:{l}:8:")), "{e}");
    assert!(e.contains("needs numa"), "{e}");
}

/// A scenario with a `[[file]]`, a file VMA and the page-cache operations.
const FILE: &str = r#"
name = "f"
section_size = "64K"

[[memory]]
name = "boot"
kind = "boot"
size = "256K"

[[memory]]
name = "dimm"
kind = "hotplug"
size = "64K"
state = "online"

[[file]]
name = "data"
pages = 4
memory = "dimm"

[[process]]
name = "app"

[[process.vma]]
name = "map"
pages = 4
backing = "file"
file = "data"
populate = true

[[cpu]]
ops = [
  { op = "find_get_page", file = "data", page = 3 },
  { op = "evict", file = "data", page = 1, pages = 2 },
  { op = "truncate", file = "data" },
]
"#;

#[test]
fn files_parse_and_bad_files_and_page_cache_operations_name_line_and_column() {
    use mmsim_check::scenario::OpKind;
    let s = parse(FILE, "t.toml").unwrap();
    assert_eq!(s.files.len(), 1);
    assert_eq!(s.files[0].pages, 4);
    assert!(s.files[0].cached);
    assert_eq!(s.processes[0].vmas[0].file, Some(0));
    match s.cpus[0].ops[2].kind {
        OpKind::Truncate(r) => assert_eq!((r.page, r.pages), (0, 4)),
        ref k => panic!("{k:?}"),
    }
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace, with, the line the error names, a word of the message)
        (
            "file = \"data\"\npopulate",
            "file = \"nope\"\npopulate",
            "file = \"nope\"",
            "unknown file `nope`",
        ),
        (
            "backing = \"file\"\nfile = \"data\"\n",
            "backing = \"file\"\n",
            "[[process.vma]]",
            "needs `file`",
        ),
        (
            "backing = \"file\"\nfile",
            "backing = \"anon\"\nfile",
            "file = \"data\"\npopulate",
            "applies to backing",
        ),
        (
            "{ op = \"find_get_page\", file = \"data\", page = 3 }",
            "{ op = \"find_get_page\", file = \"data\", page = 4 }",
            "page = 4",
            "outside file `data`",
        ),
        (
            "page = 1, pages = 2",
            "page = 1, pages = 4",
            "pages = 4 }",
            "not all inside file",
        ),
        (
            "{ op = \"truncate\", file = \"data\" }",
            "{ op = \"truncate\" }",
            "op = \"truncate\"",
            "needs `file`",
        ),
        (
            "{ op = \"truncate\", file = \"data\" }",
            "{ op = \"truncate\", file = \"x\" }",
            "file = \"x\"",
            "unknown file `x`",
        ),
        (
            "{ op = \"truncate\", file = \"data\" }",
            "{ op = \"truncate\", file = \"data\", vma = \"map\" }",
            "vma = \"map\"",
            "takes no `vma`",
        ),
        (
            "pages = 4\nmemory = \"dimm\"",
            "pages = 0\nmemory = \"dimm\"",
            "pages = 0",
            "at least one page",
        ),
        (
            "pages = 4\nmemory = \"dimm\"",
            "pages = 4\nmemory = \"ram\"",
            "memory = \"ram\"",
            "unknown memory `ram`",
        ),
        (
            "pages = 4\nmemory = \"dimm\"",
            "size = \"6K\"\nmemory = \"dimm\"",
            "size = \"6K\"",
            "whole number of 4K pages",
        ),
        (
            "pages = 4\nmemory = \"dimm\"",
            "pages = 4\nmemory = \"dimm\"\ncached = false",
            "memory = \"dimm\"",
            "cached = true",
        ),
        (
            "pages = 4\nmemory = \"dimm\"",
            "pages = 17\nmemory = \"dimm\"",
            "[[file]]",
            "which has 16",
        ),
        (
            "pages = 4\nmemory = \"dimm\"",
            "pages = 4\nmemory = \"dimm\"\nblock = 1",
            "block = 1",
            "has 1 block",
        ),
        (
            "pages = 4\nbacking",
            "pages = 5\nbacking",
            "[[process.vma]]",
            "which has 4",
        ),
        (
            "file = \"data\"\npopulate",
            "file = \"data\"\nmemory = \"dimm\"\npopulate",
            "memory = \"dimm\"\npopulate",
            "place its pages with the [[file]]",
        ),
        (
            "state = \"online\"",
            "state = \"offline\"",
            "memory = \"dimm\"",
            "online memory",
        ),
        (
            "[[process]]",
            "[[file]]\nname = \"data\"\npages = 1\n\n[[process]]",
            "name = \"data\"\npages = 1",
            "a second file",
        ),
        (
            "pages = 4\nmemory = \"dimm\"",
            "pages = 4\nmemory = \"dimm\"\nsparse = true",
            "sparse",
            "unknown field",
        ),
    ];
    for (from, to, at, word) in cases {
        assert!(FILE.contains(from), "{from}");
        let t = FILE.replacen(from, to, 1);
        let e = err(&t);
        let first = at.lines().next().unwrap();
        let l = t
            .lines()
            .enumerate()
            .filter(|(_, x)| x.contains(first))
            .map(|(i, _)| i + 1)
            .find(|&i| {
                // A multi-line anchor: the following lines match too.
                at.lines()
                    .enumerate()
                    .all(|(k, a)| t.lines().nth(i - 1 + k).is_some_and(|x| x.contains(a)))
            })
            .unwrap_or_else(|| panic!("{at} not in\n{t}"));
        assert!(
            e.starts_with(&format!("t.toml:{l}:")),
            "{from} -> {to}: {e} (want line {l})"
        );
        assert!(e.contains(word), "{from} -> {to}: {e}");
    }
}

/// The KSM and HugeTLB operations: what they need, what they refuse, each
/// refusal at the line of the operation or field at fault.
#[test]
fn ksm_and_hugetlb_operations_are_checked_at_their_line() {
    let ops = |o: &str| {
        GOOD.replace(
            "  { op = \"unpin_user_pages\", ref = \"p\" },\n",
            &format!("  {{ op = \"unpin_user_pages\", ref = \"p\" }},\n{o}\n"),
        )
    };
    // Good: ksm_merge of a VMA range, ksm_scan, alloc_hugetlb + put_pages
    // (2 MiB sections).
    let good = ops(concat!(
        "  { op = \"ksm_merge\", vma = \"buf\", pages = 2 },\n",
        "  { op = \"ksm_scan\" },\n",
        "  { op = \"alloc_hugetlb\", memory = \"boot\", as = \"h\" },\n",
        "  { op = \"put_pages\", ref = \"h\" },",
    ))
    .replace("section_size = \"64K\"", "section_size = \"2M\"")
    .replace("size = \"256K\"", "size = \"4M\"");
    let s = parse(&good, "t.toml").unwrap();
    assert_eq!(s.cpus[0].ops.len(), 6);
    // ksm_merge needs a VMA that exists.
    let t = ops("  { op = \"ksm_merge\", vma = \"nope\" },");
    let e = err(&t);
    assert!(
        e.starts_with(&format!("t.toml:{}:", line_of(&t, "\"nope\""))) && e.contains("nope"),
        "{e}"
    );
    // ksm_merge past the VMA's end.
    let t = ops("  { op = \"ksm_merge\", vma = \"buf\", page = 1, pages = 5 },");
    let e = err(&t);
    assert!(
        e.starts_with(&format!("t.toml:{}:", line_of(&t, "pages = 5"))),
        "{e}"
    );
    // ksm_scan takes no fields.
    let t = ops("  { op = \"ksm_scan\", vma = \"buf\" },");
    let e = err(&t);
    assert!(
        e.starts_with(&format!("t.toml:{}:", line_of(&t, "ksm_scan"))),
        "{e}"
    );
    // alloc_hugetlb: a 2 MiB folio needs 2 MiB sections.
    let t = ops("  { op = \"alloc_hugetlb\", memory = \"boot\", as = \"h\" },");
    let e = err(&t);
    assert!(
        e.starts_with(&format!("t.toml:{}:", line_of(&t, "alloc_hugetlb"))) && e.contains("2M"),
        "{e}"
    );
    // alloc_hugetlb: unknown memory, and its reference dropped as a pin.
    let big = |o: &str| {
        ops(o)
            .replace("section_size = \"64K\"", "section_size = \"2M\"")
            .replace("size = \"256K\"", "size = \"4M\"")
    };
    let t = big("  { op = \"alloc_hugetlb\", memory = \"ram\" },");
    let e = err(&t);
    assert!(
        e.starts_with(&format!("t.toml:{}:", line_of(&t, "\"ram\""))),
        "{e}"
    );
    let t = big(concat!(
        "  { op = \"alloc_hugetlb\", memory = \"boot\", as = \"h\" },\n",
        "  { op = \"unpin_user_pages\", ref = \"h\" },",
    ));
    let e = err(&t);
    assert!(
        e.starts_with(&format!("t.toml:{}:", line_of(&t, "ref = \"h\"")))
            && e.contains("put_pages"),
        "{e}"
    );
    // A second reference of the same name.
    let t = big("  { op = \"alloc_hugetlb\", memory = \"boot\", as = \"p\" },");
    let e = err(&t);
    assert!(
        e.starts_with(&format!("t.toml:{}:", line_of(&t, "alloc_hugetlb"))) && e.contains("second"),
        "{e}"
    );
}
