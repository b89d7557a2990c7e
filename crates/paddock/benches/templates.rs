//! Templates: create-to-first-command of a sandbox of each ready template against `base`,
//! build and warm-cache rebuild times, and pull time and disk use of a multi-layer image from
//! a registry on loopback.
//!
//! Run: `cargo bench -p paddock --bench templates` (as root, with debootstrap, the Debian
//! mirror reachable, and `docker-registry` for the pull rows). Templates are kept in
//! `/var/tmp/paddock-bench-templates` between runs; delete it to time cold builds again.
//! `PADDOCK_BENCH_RUNS` sets the create runs per template (default 50).

#[allow(unreachable_pub, dead_code)]
mod common;

use common::{ms, pct};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_runtime::{CreateSpec, ExecRequest, Runtime};

fn du(p: &std::path::Path) -> u64 {
    std::process::Command::new("du")
        .args(["-sb"])
        .arg(p)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn make(
    rt: &Arc<Runtime>,
    name: &str,
    file: Option<&str>,
) -> anyhow::Result<Option<Duration>> {
    if rt.template(name).is_some() {
        return Ok(None);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let t = Instant::now();
    let def = match file {
        None => {
            let suite = paddock_templates::Suite::default();
            paddock_templates::bootstrap_debian(rt, name, &suite, &tx).await
        }
        Some(text) => {
            let f = paddock_templates::parse(text)?;
            paddock_templates::build(rt, name, &f, None, &tx).await
        }
    }
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    rt.add_template(def)?;
    Ok(Some(t.elapsed()))
}

fn main() -> anyhow::Result<()> {
    let runs = common::runs(50);
    let tokio = common::tokio()?;
    let rt = Runtime::open(common::runtime_config("/var/tmp/paddock-bench-templates"))?;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates");
    tokio.block_on(async {
        println!("| make the template | time |");
        println!("|---|---|");
        let mut files = Vec::new();
        for (name, file) in [
            ("debian", None),
            ("python", Some("python")),
            ("node", Some("node")),
            ("go", Some("go")),
        ] {
            let text = file.map(|f| {
                std::fs::read_to_string(format!("{root}/{f}.Paddockfile")).unwrap_or_default()
            });
            let took = make(&rt, name, text.as_deref()).await?;
            if let Some(t) = text {
                files.push((name, t));
            }
            match took {
                Some(d) => println!("| {name} (cold) | {:.1} s |", d.as_secs_f64()),
                None => println!("| {name} | (kept from an earlier run) |"),
            }
        }
        // Warm cache: every step's layer is in the store.
        for (name, text) in &files {
            let f = paddock_templates::parse(text)?;
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let t = Instant::now();
            paddock_templates::build(&rt, &format!("{name}-again"), &f, None, &tx)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            println!(
                "| {name}, rebuilt with a warm cache | {} |",
                ms(t.elapsed())
            );
        }
        println!();
        println!("| create + first `/bin/true` | p50 | p99 | p50 vs base |");
        println!("|---|---|---|---|");
        let mut base = None;
        for name in ["base", "debian", "python", "node", "go"] {
            let mut v = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                let s = rt
                    .create(CreateSpec {
                        template: name.into(),
                        ..CreateSpec::default()
                    })
                    .await?;
                s.exec(ExecRequest {
                    argv: vec!["/bin/true".into()],
                    ..Default::default()
                })
                .await?;
                v.push(t.elapsed());
                rt.destroy(s.id.as_str()).await?;
            }
            let (p50, p99) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
            let b = *base.get_or_insert(p50);
            println!(
                "| {name} | {} | {} | {:.2}× |",
                ms(p50),
                ms(p99),
                p50.as_secs_f64() / b.as_secs_f64()
            );
        }
        println!();
        println!("| layer store | size |");
        println!("|---|---|");
        for name in ["debian", "python", "node", "go"] {
            if let Some(t) = rt.template(name) {
                let own: u64 = t
                    .layers
                    .iter()
                    .skip(usize::from(name != "debian"))
                    .map(|l| du(l))
                    .sum();
                println!(
                    "| {name}: its own layers | {:.0} MiB |",
                    own as f64 / (1 << 20) as f64
                );
            }
        }
        println!(
            "| the whole store (layers shared between templates counted once) | {:.0} MiB |",
            du(&rt.layers_root()) as f64 / (1 << 20) as f64
        );
        anyhow::Ok(())
    })?;
    Ok(())
}
