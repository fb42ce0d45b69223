/**
 * Where the cluster is: flags first, then `$DSYS_CLUSTER` / `./.dsys/cluster.json` (written by
 * `dsys dev --keep`), then the defaults of a local cluster.
 */

/** Endpoints a client needs, and the key it connects with. */
export interface ClusterInfo {
  /** Master endpoints (`NAME@tcp://HOST:PORT` when the cluster has several masters' keys). */
  masters: string[];
  /**
   * Storage endpoints, `,`-separated: used only while the masters know no storage node (storage
   * nodes started without `--masters`); registered nodes are found through the masters.
   */
  storage: string;
  /** Balancer endpoints, comma-separated. */
  balancer: string;
  /** This client's key file (absent: an insecure cluster). */
  key?: string;
  /** The cluster's keyring file. */
  keyring?: string;
  /** A master's dashboard, `http://HOST:PORT` (`dsys dashboard`; written by `dsys dev`). */
  dashboard?: string;
  /** That master's dashboard token file. */
  dashboardTokenFile?: string;
}

/** Default endpoints of `dsys run` on one machine. */
export const DEFAULT_CLUSTER: ClusterInfo = {
  masters: ["tcp://127.0.0.1:7100"],
  balancer: "tcp://127.0.0.1:7200",
  storage: "tcp://127.0.0.1:7300",
};

/** The cluster file's path. */
export function clusterFilePath(): string {
  return Deno.env.get("DSYS_CLUSTER") ?? ".dsys/cluster.json";
}

/** Resolves the cluster's endpoints from flags, the cluster file, or the defaults. */
export function resolveCluster(
  flags: { master?: string; storage?: string; key?: string; keyring?: string },
): ClusterInfo {
  let file: Partial<ClusterInfo> = {};
  try {
    file = JSON.parse(Deno.readTextFileSync(clusterFilePath()));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new Error(`cannot read cluster file ${clusterFilePath()}: ${e}`);
    }
  }
  return {
    masters: flags.master
      ? flags.master.split(",").map((s) => s.trim()).filter(Boolean)
      : file.masters ?? DEFAULT_CLUSTER.masters,
    storage: flags.storage ?? file.storage ?? DEFAULT_CLUSTER.storage,
    balancer: file.balancer ?? DEFAULT_CLUSTER.balancer,
    key: flags.key ?? Deno.env.get("DSYS_KEY") ?? file.key,
    keyring: flags.keyring ?? Deno.env.get("DSYS_KEYRING") ?? file.keyring,
  };
}
