//! The scenario file as TOML says it, before names are resolved.
//!
//! Every table denies unknown fields, and every value that a later check may
//! complain about keeps its span, so that an error points at the line and
//! column that caused it. Operations are one flat table type with every field
//! any operation takes: which fields an operation accepts is checked when it
//! is resolved ([`super::validate`]), with the operation's own position.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A size: `"16M"`, `"64K"`, `"1G"`, or a number of bytes.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// Bytes.
    Bytes(u64),
    /// A number with an optional `K`/`M`/`G` suffix.
    Text(String),
}

/// The top level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: Spanned<String>,
    pub summary: Option<String>,
    pub arch: Option<Spanned<ArchName>>,
    pub section_size: Option<Spanned<Size>>,
    pub safeguards: Option<BTreeMap<Spanned<String>, Spanned<bool>>>,
    pub config: Option<BTreeMap<Spanned<String>, Spanned<bool>>>,
    #[serde(default)]
    pub memory: Vec<Spanned<RawMemory>>,
    #[serde(default)]
    pub file: Vec<Spanned<RawFile>>,
    #[serde(default)]
    pub process: Vec<Spanned<RawProcess>>,
    #[serde(default)]
    pub cpu: Vec<Spanned<RawCpu>>,
    pub expect: Option<Spanned<RawExpect>>,
}

/// `arch`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ArchName {
    Ipi,
    Broadcast,
}

/// `[[memory]] kind`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemKindName {
    Boot,
    Hotplug,
    Device,
}

/// `[[memory]] state`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemStateName {
    Absent,
    Offline,
    Online,
    Mapped,
}

/// `zone`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ZoneName {
    Movable,
    Normal,
}

/// `[[memory]] type` of device memory.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DevTypeName {
    Generic,
    Fsdax,
    Coherent,
    Private,
}

/// `prot`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProtName {
    None,
    R,
    Rw,
}

/// `backing`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackingName {
    Anon,
    Shared,
    Device,
    Pfnmap,
    File,
}

/// `[[memory]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemory {
    pub name: Spanned<String>,
    pub kind: Spanned<MemKindName>,
    pub size: Spanned<Size>,
    pub state: Option<Spanned<MemStateName>>,
    pub zone: Option<Spanned<ZoneName>>,
    #[serde(rename = "type")]
    pub dev_type: Option<Spanned<DevTypeName>>,
    pub node: Option<Spanned<u32>>,
}

/// `[[file]]`: a file whose folios live in the page cache.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub name: Spanned<String>,
    pub pages: Option<Spanned<u64>>,
    pub size: Option<Spanned<Size>>,
    pub memory: Option<Spanned<String>>,
    pub block: Option<Spanned<u64>>,
    pub cached: Option<Spanned<bool>>,
    /// A tmpfs file (no writeback, no dirty tracking) rather than a disk
    /// file system's. An addition to the contract (default false).
    pub shmem: Option<Spanned<bool>>,
}

/// `[[process]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    pub name: Spanned<String>,
    #[serde(default)]
    pub vma: Vec<Spanned<RawVma>>,
}

/// `[[process.vma]]` (and the `mmap` operation's fields).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVma {
    pub name: Spanned<String>,
    pub pages: Option<Spanned<u64>>,
    pub size: Option<Spanned<Size>>,
    pub prot: Option<Spanned<ProtName>>,
    pub backing: Option<Spanned<BackingName>>,
    pub memory: Option<Spanned<String>>,
    pub block: Option<Spanned<u64>>,
    pub populate: Option<bool>,
    pub thp: Option<bool>,
    pub file: Option<Spanned<String>>,
}

/// `[[cpu]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCpu {
    pub process: Option<Spanned<String>>,
    #[serde(default)]
    pub ops: Vec<Spanned<RawOp>>,
}

/// One operation: the union of every operation's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOp {
    pub op: Option<Spanned<String>>,
    pub vma: Option<Spanned<String>>,
    pub page: Option<Spanned<u64>>,
    pub pages: Option<Spanned<u64>>,
    pub flags: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(rename = "as")]
    pub as_: Option<Spanned<String>>,
    #[serde(rename = "ref")]
    pub ref_: Option<Spanned<String>>,
    pub value: Option<Spanned<u64>>,
    pub write: Option<Spanned<bool>>,
    pub name: Option<Spanned<String>>,
    pub size: Option<Spanned<Size>>,
    pub prot: Option<Spanned<ProtName>>,
    pub backing: Option<Spanned<BackingName>>,
    pub memory: Option<Spanned<String>>,
    pub block: Option<Spanned<u64>>,
    pub populate: Option<Spanned<bool>>,
    pub thp: Option<Spanned<bool>>,
    pub advice: Option<Spanned<String>>,
    pub zone: Option<Spanned<ZoneName>>,
    pub file: Option<Spanned<String>>,
}

/// `[expect]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    pub violation: Spanned<String>,
    /// Whether teardown unmaps everything and checks that every page went
    /// back to the allocator (default: yes). An addition to the contract.
    pub check_leaks: Option<bool>,
    /// The expected violation is a finding about the kernel (no safeguard
    /// of the model removes it). An addition to the contract.
    pub finding: Option<bool>,
    /// The bound the claim is made within (default: the command line's).
    /// An addition to the contract.
    pub iterations: Option<Spanned<u64>>,
    /// The PCT bug depth the claims are checked with (default 3): a race
    /// whose writer runs long without a preemption needs 2. An addition
    /// to the contract.
    pub depth: Option<Spanned<u64>>,
    /// What the outcome becomes when settings change. An addition to the
    /// contract.
    #[serde(default)]
    pub variant: Vec<Spanned<RawVariant>>,
}

/// `[[expect.variant]]`: the same scenario with other settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVariant {
    pub arch: Option<Spanned<ArchName>>,
    pub safeguards: Option<BTreeMap<Spanned<String>, Spanned<bool>>>,
    pub config: Option<BTreeMap<Spanned<String>, Spanned<bool>>>,
    pub violation: Spanned<String>,
    pub iterations: Option<Spanned<u64>>,
}
