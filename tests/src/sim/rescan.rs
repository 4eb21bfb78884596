//! Phase (a): the start-up rescan of the whole fleet by one worker, through the real
//! [`registrar_worker::resync::resync`], with the options `registrar worker` gives its rescans
//! (16 AgentCore reads at once per scope, 4 registry writes at once).

use registrar_worker::pace::Rates;
use registrar_worker::resync::scan::{Progress, ScanOptions};
use registrar_worker::resync::{ResyncOptions, resync};

use super::{DERIVE, ENABLE, Peers, PhaseReport, Setup, memory_mib, plan_context};

pub async fn run(setup: &Setup) -> anyhow::Result<PhaseReport> {
    let peers = Peers::new(setup);
    let mut report = PhaseReport {
        phase: "rescan".into(),
        pacing: setup.pacing,
        resources: setup.resources,
        scopes: setup.shape().scopes(),
        rss_seeded_mib: memory_mib(None).0,
        ..PhaseReport::default()
    };
    let rates = if setup.pacing {
        setup.rates.rates(1.0)
    } else {
        Rates::OFF
    };
    let fleet = peers.fleet(rates);
    let opts = ResyncOptions {
        scan: ScanOptions {
            gateways: true,
            runtimes: true,
            mcp_targets: false,
            derive: DERIVE,
            concurrency: 16,
        },
        ctx: plan_context(),
        enable: ENABLE,
        dry_run: false,
        registry_concurrency: 4,
        deep: false,
    };
    let done = resync(
        &fleet,
        &peers.registry,
        &peers.state,
        opts,
        &Progress::default(),
    )
    .await?;
    report.fill_from(&peers);
    report.add_paced(&fleet);
    report.count_entries(&peers).await?;
    for (name, n) in [
        ("registered", done.registered),
        ("updated", done.updated),
        ("unchanged", done.unchanged),
        ("failed", done.failed),
        ("conflicts", done.conflicts),
        ("scan errors", done.errors.len()),
    ] {
        report.outcomes.insert(name.into(), n as u64);
    }
    if let Some(first) = done.errors.first() {
        report.notes.push(format!("first scan error: {first}"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(pacing: bool) -> Setup {
        let mut setup = Setup::standard(pacing);
        setup.resources = 3_000;
        setup.accounts = 1;
        setup.registry.workers = 64;
        setup
    }

    fn throttles(r: &PhaseReport) -> u64 {
        r.agentcore.values().map(|c| c.throttled).sum()
    }

    #[test]
    fn a_paced_rescan_meets_no_throttle_where_an_unpaced_one_is_throttled() {
        let runtime = super::super::paused_runtime().expect("runtime");
        let paced = runtime.block_on(run(&small(true))).expect("rescan");
        assert_eq!(throttles(&paced), 0, "{:?}", paced.agentcore);
        assert_eq!(paced.registry_entries, 3_000);
        assert!(paced.paced_calls > 0);
        // 500 runtimes a region at 4 a second.
        assert!(
            paced.agentcore_done_s >= 125.0,
            "{}",
            paced.agentcore_done_s
        );

        let unpaced = runtime.block_on(run(&small(false))).expect("rescan");
        // Fewer than when every read went out before any write (over 1,000 then): reads now
        // wait for room among the entries being applied. Still throttled, and still losing
        // resources to it.
        assert!(throttles(&unpaced) > 100, "{:?}", unpaced.agentcore);
        assert!(
            unpaced.registry_entries < 3_000,
            "resources whose reads were throttled out wait for the next rescan"
        );
    }
}
