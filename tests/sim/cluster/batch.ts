/**
 * Runs many seeds of the cluster simulation in one process, several at once: each seed's world
 * shares nothing with another's (own clock, network, PRNGs, nodes), so interleaving their steps
 * on the one event loop changes nothing within a seed (tests/sim_cluster_test.ts checks that a
 * seed run alone and in a batch leaves the same trace), and every macrotask boundary the drivers
 * wait for serves all of them at once, which is where a lone seed spends much of its time.
 * @module
 */
import { type ClusterSimOptions, type ClusterSimResult, runClusterSeed } from "./run.ts";

/** Runs `seeds` with at most `concurrency` at a time; calls `each` as each one finishes. */
export async function runClusterSeeds(
  seeds: number[],
  o: ClusterSimOptions,
  concurrency: number,
  each: (r: ClusterSimResult) => void,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < seeds.length) {
      const seed = seeds[next++];
      each(await runClusterSeed(seed, o));
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
}
