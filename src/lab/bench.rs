//! `hapair lab bench`: hapair and keepalived/haproxy side by side.

pub fn run(what: &str, _trials: usize) -> anyhow::Result<()> {
    anyhow::bail!("bench {what}: not built yet")
}
