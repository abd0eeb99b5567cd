//! The controller binary's allocator options: jemalloc is built with no dirty-page decay
//! (`.cargo/config.toml`, `JEMALLOC_SYS_WITH_MALLOC_CONF`), so the pages a full pass frees
//! go back to the system at once, not over up to 10 s (docs/controller.md, "Memory";
//! docs/performance.md, "memory and CPU").

use std::process::Command;

/// jemalloc's effective options as the binary prints them at exit (`stats_print`).
fn jemalloc_options() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ycloud-controller"))
        .arg("--help")
        // Asks jemalloc (prefixed `_rjem_` in this build) to print its statistics, the
        // options included, when the process exits.
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run ycloud-controller --help");
    assert!(out.status.success(), "--help failed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_controller_binary_returns_freed_pages_at_once_with_background_threads_on() {
    let stats = jemalloc_options();
    assert!(
        stats.contains("config.malloc_conf: \"background_thread:true,dirty_decay_ms:0\""),
        "jemalloc was built without the options of .cargo/config.toml (a build that does not \
         read it, or an env var overriding it?):\n{}",
        stats.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    for want in [
        "opt.background_thread: true",
        "opt.dirty_decay_ms: 0 ",
        "opt.muzzy_decay_ms: 0",
    ] {
        assert!(
            stats.contains(want),
            "jemalloc's effective options lack `{want}`:\n{}",
            stats.lines().take(60).collect::<Vec<_>>().join("\n")
        );
    }
}
