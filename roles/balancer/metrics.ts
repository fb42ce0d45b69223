/**
 * A balancer's metrics (`--metrics-listen`): its queue and workers and what it placed, all read
 * from the scheduler and the service's counters at scrape time (no hooks in the placement path).
 * The names are listed in docs/operations.md, "What to watch".
 */
import type { Registry } from "../../lib/metrics.ts";
import type { BalancerService } from "./service.ts";

/** Declares the balancer's series on `registry`, read from `service` at every scrape. */
export function watchBalancer(registry: Registry, service: BalancerService): void {
  const primary = registry.gauge(
    "dsys_balancer_primary",
    "1 while this balancer is the primary (places chunks), 0 while it is a standby.",
  );
  const queued = registry.gauge(
    "dsys_balancer_queue_depth",
    "Chunks waiting in this balancer's queue for a free worker slot.",
  );
  const running = registry.gauge(
    "dsys_balancer_running_chunks",
    "Chunks placed on workers and not yet finished.",
  );
  const workers = registry.gauge("dsys_balancer_workers", "Workers registered and alive.");
  const slots = registry.gauge("dsys_balancer_slots", "Worker slots, by state.", {
    state: ["free", "busy"],
  });
  const jobs = registry.gauge("dsys_balancer_jobs", "Jobs with chunks this balancer tracks.");
  const placements = registry.counter(
    "dsys_balancer_placements_total",
    "Chunk placements pushed to workers.",
  );
  const pushes = registry.counter(
    "dsys_balancer_push_results_total",
    "Answers to placements pushed to workers, by result.",
    { result: ["accepted", "refused", "unconfirmed"] },
  );
  const finished = registry.counter(
    "dsys_balancer_chunks_finished_total",
    "Chunk attempts workers reported finished (chunk_finished).",
  );
  const dispatches = registry.counter(
    "dsys_balancer_dispatches_total",
    "Job dispatches received from the masters.",
  );
  const dead = registry.counter(
    "dsys_balancer_dead_workers_total",
    "Workers declared dead (silent past --dead-after-ms); their chunks were requeued.",
  );
  registry.onCollect(() => {
    const st = service.scheduler.stats();
    const c = service.counters;
    primary.set(service.isStandby ? 0 : 1);
    queued.set(st.queued);
    running.set(st.running);
    workers.set(st.workers);
    slots.set(st.freeSlots, { state: "free" });
    slots.set(st.slots - st.freeSlots, { state: "busy" });
    jobs.set(st.jobs);
    placements.setTotal(c.pushed);
    pushes.setTotal(c.accepted, { result: "accepted" });
    pushes.setTotal(c.refused, { result: "refused" });
    pushes.setTotal(c.unconfirmed, { result: "unconfirmed" });
    finished.setTotal(c.finished);
    dispatches.setTotal(c.dispatches);
    dead.setTotal(c.deadWorkers);
  });
}
