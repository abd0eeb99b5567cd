//! `ycloud-cni`: the CNI plugin. It does no work itself: it validates the runtime's
//! request and forwards it to `ycloud-cnid` on this node (see docs/cni.md).

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => ycloud_cni::plugin::run(|k| std::env::var(k).ok(), &stdin),
        Err(e) => ycloud_cni::plugin::Outcome {
            stdout: Some(
                ycloud_cni::CniError::new(
                    ycloud_cni::error::code::IO,
                    format!("reading stdin: {e}"),
                )
                .to_json(ycloud_cni::spec::VERSION_1_1),
            ),
            exit_code: 1,
        },
    };
    if let Some(out) = &outcome.stdout {
        let mut stdout = std::io::stdout().lock();
        // Nothing useful can be done if stdout is closed: the exit code still tells.
        let _ = writeln!(stdout, "{out}");
        let _ = stdout.flush();
    }
    std::process::exit(outcome.exit_code);
}
