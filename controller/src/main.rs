//! The `ycloud-controller` binary.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("ycloud-controller: the controller is not built yet (see issue 6)")
}
