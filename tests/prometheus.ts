/**
 * A real Prometheus server (Debian's `prometheus`, installed by scripts/bootstrap.sh) for tests:
 * a generated config with static targets, a temp storage directory, a short scrape interval,
 * and its HTTP API's instant queries (`/api/v1/query`).
 * @module
 */
import { freePorts } from "../client/local_cluster.ts";
import { waitFor } from "./wait.ts";

/** One scrape target: `HOST:PORT` and the labels Prometheus puts on its series. */
export interface ScrapeTarget {
  address: string;
  labels: Record<string, string>;
}

/** One series of an instant query's vector result. */
export interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** A running Prometheus. */
export interface Prometheus {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** An instant query (PromQL): its vector result. */
  query(promql: string): Promise<Sample[]>;
  /** Stops it and removes its directory. */
  close(): Promise<void>;
}

/** The config file for `targets`, scraped every `intervalS` seconds (YAML is a JSON superset). */
export function prometheusConfig(targets: ScrapeTarget[], intervalS = 1): string {
  return JSON.stringify(
    {
      global: { scrape_interval: `${intervalS}s`, evaluation_interval: `${intervalS}s` },
      scrape_configs: [{
        job_name: "dsys",
        scrape_timeout: `${intervalS}s`,
        static_configs: targets.map((t) => ({ targets: [t.address], labels: t.labels })),
      }],
    },
    null,
    2,
  );
}

/** Starts Prometheus scraping `targets`; resolves once it answers `/-/ready`. */
export async function startPrometheus(targets: ScrapeTarget[]): Promise<Prometheus> {
  const dir = await Deno.makeTempDir({ prefix: "dsys-prometheus-" });
  await Deno.writeTextFile(`${dir}/prometheus.yml`, prometheusConfig(targets));
  const [port] = freePorts(1);
  const url = `http://127.0.0.1:${port}`;
  const log = await Deno.open(`${dir}/prometheus.log`, { write: true, create: true });
  const child = new Deno.Command("prometheus", {
    args: [
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--storage.tsdb.retention.time=1h",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const logged = child.stderr.pipeTo(log.writable).catch(() => {});
  const exited = child.status;
  let gone = false;
  exited.then(() => gone = true);
  const close = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    const t = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await exited;
    clearTimeout(t);
    await logged;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await waitFor("prometheus to be ready", async () => {
      if (gone) {
        throw new Error(`prometheus exited:\n${await Deno.readTextFile(`${dir}/prometheus.log`)}`);
      }
      return await fetch(`${url}/-/ready`).then(async (r) => {
        await r.body?.cancel();
        return r.ok;
      }, () => false);
    }, { timeoutMs: 60_000, intervalMs: 100 });
  } catch (e) {
    await close();
    throw e;
  }
  return {
    url,
    async query(promql: string): Promise<Sample[]> {
      const r = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`);
      const body = await r.json();
      if (body.status !== "success") throw new Error(`query ${promql}: ${JSON.stringify(body)}`);
      if (body.data.resultType !== "vector") throw new Error(`query ${promql}: not a vector`);
      return (body.data.result as { metric: Record<string, string>; value: [number, string] }[])
        .map((s) => ({ labels: s.metric, value: Number(s.value[1]) }));
    },
    close,
  };
}
