//! `mmsim info`.

use clap::Args;
use mmsim_model::mm::mm_types::Page;
use mmsim_model::types::{MAX_PAGE_ORDER, PAGE_SIZE, PMD_SIZE};

/// `mmsim info` arguments.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `mmsim info`.
pub fn run(a: &InfoArgs) -> u8 {
    let section_size: u64 = 128 << 20;
    let spb = std::mem::size_of::<Page>();
    let membarrier = {
        mmsim_facade::membarrier::init();
        mmsim_facade::membarrier::expedited()
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "kernel": "v6.18",
                "page_size": PAGE_SIZE,
                "section_size": section_size,
                "subsection_size": 2u64 << 20,
                "pmd_size": PMD_SIZE,
                "max_page_order": MAX_PAGE_ORDER,
                "struct_page_bytes": spb,
                "memmap_bytes_per_page": spb,
                "facade": "native",
                "explorer": "shuttle",
                "rcu_read_side": if membarrier { "membarrier (light fence)" } else { "fence(SeqCst)" },
                "config": mmsim_model::config::REGISTRY.iter().map(|i| (i.name.to_string(), serde_json::json!({
                    "default": if i.default { "on" } else { "off" },
                    "changes": i.changes,
                }))).collect::<serde_json::Map<_, _>>(),
            })
        );
    } else {
        println!("mmsim: a model of Linux v6.18's lockless memory-management paths");
        println!("  kernel baseline    v6.18");
        println!("  page size          {PAGE_SIZE} bytes");
        println!(
            "  section size       {} MiB (default; 64 KiB to 128 MiB per scenario)",
            section_size >> 20
        );
        println!("  struct page        {spb} bytes");
        println!("  facade             native threads; explorer: shuttle");
        println!(
            "  kernel configuration (v6.18 Kconfig defaults; --config NAME=on|off, [config]):"
        );
        for i in mmsim_model::config::REGISTRY {
            println!(
                "    {:<10} {:<4} {}",
                i.name,
                if i.default { "on" } else { "off" },
                i.changes
            );
        }
        println!(
            "  RCU read side      {}",
            if membarrier {
                "compiler fence, membarrier(2) on the writer side"
            } else {
                "fence(SeqCst) (membarrier unavailable)"
            }
        );
    }
    0
}
