//! The demo: real local peers, the FAQ's thirteen resources, `registrar resync`, then a gateway
//! deleted in AWS and deregistered by the next resync. Every process it starts is stopped.

use anyhow::{Context, bail};
use registrar_tests::env::TestEnv;
use registrar_tests::fixtures::{FAQ_GATEWAYS, seed_faq};

async fn step(env: &TestEnv, title: &str, args: &[&str]) -> anyhow::Result<()> {
    println!("\n$ registrar {}    # {title}", args.join(" "));
    let out = env.cli(args).await?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("registrar {} exited with {}", args.join(" "), out.status);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("Starting moto (AWS) and the registry stand-in on 127.0.0.1 ...");
    let env = TestEnv::start().await.context("starting the local peers")?;
    println!(
        "  moto:     {}\n  registry: {}",
        env.moto.url(),
        env.standin.url()
    );

    let gateway_ids = seed_faq(&env.agentcore).await?;
    println!("Created the FAQ's 13 resources in moto: 5 CUSTOM_JWT gateways, 8 agent runtimes.");

    step(&env, "preview", &["resync", "--dry-run"]).await?;
    step(&env, "register everything", &["resync"]).await?;
    step(&env, "nothing changed: no registry writes", &["resync"]).await?;

    let (name, path) = FAQ_GATEWAYS[1];
    env.agentcore
        .delete_gateway()
        .gateway_identifier(&gateway_ids[1])
        .send()
        .await?;
    println!("\nDeleted gateway {name} in AWS (moto).");
    step(&env, "the deleted gateway is deregistered", &["resync"]).await?;

    let servers = env.standin.db().servers.len();
    let agents = env.standin.db().agents.len();
    println!(
        "\nRegistry now holds {servers} servers and {agents} agents; {path} is gone: {}.",
        env.standin.server(path).is_none()
    );
    println!(
        "Registry writes over the whole demo: {}.",
        env.standin.writes().len()
    );
    Ok(())
}
